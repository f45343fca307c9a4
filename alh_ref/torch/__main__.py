"""``python -m alh_ref.torch`` runs the torch backend's command line (alh_ref.torch.cli)."""
import importlib.util
import sys

if __name__ == "__main__":
    if importlib.util.find_spec("torch") is None:
        print("error: the torch backend needs PyTorch, which is not installed; pip install -e '.[torch]' "
              "(torch==2.13.0)", file=sys.stderr)
        sys.exit(2)
    from .cli import main
    sys.exit(main())
