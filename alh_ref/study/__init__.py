"""The experiment that answers the proposal's four claims (docs/experiment.md; results: docs/results.md).

One module per job:

    settings   sizes (quick / default / full), data settings, the method table, validation
    data       domains A, B, C: training streams and document-aligned evaluation windows; floors
    protocol   pretraining the base, the shift and mix protocols, training and tuning every method
    measure    test losses by document and position, KL from the base, dictionary geometry
    summary    means over seeds, bootstrap intervals over documents, the retention frontier
    verdict    the rules that turn the measurements into the four claim lines
    report     report.md;   plots: the PNGs;   run: :func:`run_study`, the whole study
"""
from .run import rewrite_report, run_study
from .settings import METHOD_SPECS, PROTOCOLS, SETTINGS, SIZES, STUDY_METHODS, resolve

__all__ = ["METHOD_SPECS", "PROTOCOLS", "SETTINGS", "SIZES", "STUDY_METHODS", "resolve", "rewrite_report", "run_study"]
