"""tfhub_transfer: how well do ImageNet-pretrained networks transfer? (Kornblith et al., 2019).

The Python API (the CLI, `tfhub_transfer --help`, calls the same functions):

  import tfhub_transfer as tt

  config = tt.ExperimentConfig(model="mobilenet_v2", dataset="dtd", regime="logreg",
                               workdir="w")
  result = tt.run_experiment(config)              # one cell -> experiment.Result
  tt.run_grid(config, tt.Grid(models=("mobilenet_v2", "resnet_50"), datasets=("dtd",),
                              regimes=("logreg", "finetune")))   # a resumable sweep
  scores = tt.score(config)                       # transferability scores: a DataFrame
  results = tt.load_results("w")                  # every stored cell: a DataFrame
  report = tt.write_report("w")                   # report.md, tables, figures -> ReportPaths

`ExperimentConfig`, `Grid` and `run_grid` are imported with the package; the others are
imported on first use (`_LAZY`), so `import tfhub_transfer` loads neither TensorFlow nor
pandas (a tested property).
"""

import importlib
from typing import TYPE_CHECKING

from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.sweep import Grid
from tfhub_transfer.sweep import run_grid

__version__ = "0.1.0"

__all__ = ["ExperimentConfig", "Grid", "run_experiment", "run_grid", "score", "load_results",
           "load_scores", "write_report"]

# Exported name -> (module, attribute), imported on first use: these modules import
# TensorFlow (`experiment`, `scoring`) or pandas (`frame`) or matplotlib (`report`).
_LAZY = {
    "run_experiment": ("tfhub_transfer.experiment", "run_experiment"),
    "score": ("tfhub_transfer.scoring", "score"),
    "load_results": ("tfhub_transfer.frame", "load_results"),
    "load_scores": ("tfhub_transfer.frame", "load_scores"),
    "write_report": ("tfhub_transfer.report.document", "write_workdir_report"),
}

if TYPE_CHECKING:
  from tfhub_transfer.experiment import run_experiment
  from tfhub_transfer.frame import load_results
  from tfhub_transfer.frame import load_scores
  from tfhub_transfer.report.document import write_workdir_report as write_report
  from tfhub_transfer.scoring import score


def __getattr__(name):
  if name in _LAZY:
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # Looked up once.
    return value
  raise AttributeError(f"module 'tfhub_transfer' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
