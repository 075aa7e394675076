"""Read prunetune experiment directories, aggregate over seeds, write tables and figures.

Imports neither torch nor ray: results copied to a laptop can be analysed with pandas, numpy,
scipy and matplotlib alone. ``analysis.figures`` (matplotlib) is imported only when needed.
"""

from analysis.aggregate import aggregate, dense_rows, matching_sparsity
from analysis.load import (
    AnalysisInputError,
    excluded_trials,
    load_epochs,
    load_layer_sparsity,
    load_results,
)
from analysis.stats import bootstrap_interval, logit_t_interval, mean_std, t_interval

__all__ = [
    "AnalysisInputError",
    "aggregate",
    "bootstrap_interval",
    "dense_rows",
    "excluded_trials",
    "load_epochs",
    "load_layer_sparsity",
    "load_results",
    "logit_t_interval",
    "matching_sparsity",
    "mean_std",
    "t_interval",
]
