"""A PyTorch port of alh_ref's models, checked against the golden bundle (docs/scale.md).

The NumPy package is the specification; this subpackage is a port of it with autograd, for GPUs
and data parallel training. It is the only part of alh_ref that imports torch (the ``torch``
extra: ``pip install -e '.[torch]'``).

    model.py     the GPT (parameter names exactly the NumPy names)
    alh.py       the hypernetwork: encoders, head, householder / lowrank / film, sites, side head
    methods.py   ALH and the baselines as one TorchMethod, initialised from the NumPy method
    optim.py     AdamW, clipping and schedule of alh_ref.optim
    golden.py    golden-check: recompute every case of a bundle, compared by alh_ref.golden.check
    train.py     the train step, one process or data parallel (DDP under torchrun)
    runs.py      the torch backend of alh_ref.runs' pretrain / adapt / resume, and eval
    bench.py     train-step tokens/s, NumPy vs torch on CPU
    cli.py       python -m alh_ref.torch golden-check | bench | pretrain | adapt | eval
"""
