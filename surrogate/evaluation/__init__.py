"""The evaluation suite of every surrogate: leak-free splits, metrics, figures, and one report function.

``splits`` builds train / calibration / test frames (random within tasks, held-out shapes, families or
devices); ``metrics`` holds the metric functions; ``report.evaluate_surrogate`` computes them all for a
fitted surrogate; ``plots`` draws the reliability diagram, the risk-coverage curve and predicted against
measured runtimes.
"""

from kernelcast.surrogate.evaluation.report import Evaluation, evaluate_surrogate, write_plots
from kernelcast.surrogate.evaluation.splits import (
    HOLDOUT_KEYS,
    SPLIT_KINDS,
    Holdout,
    Split,
    default_kind,
    fit_on_split,
    group_labels,
    make_split,
    parse_holdout,
)

__all__ = [
    "HOLDOUT_KEYS",
    "SPLIT_KINDS",
    "Evaluation",
    "Holdout",
    "Split",
    "default_kind",
    "evaluate_surrogate",
    "fit_on_split",
    "group_labels",
    "make_split",
    "parse_holdout",
    "write_plots",
]
