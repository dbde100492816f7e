"""How long a grid will take on this machine, before it runs (`--mode=plan`): an estimate.

Each cell's time is its compute at the rates the benchmark measured on this machine (figure 10,
a real mini-study: `python -m bench --part=study`), scaled by the backbone's multiply-adds
per image, plus the fixed costs figure 10 measured around the compute (per training: build,
weights load, tracing, pipeline start; per cell: data, records, store). The rates come from
`bench/results/<mode>.json` when a run stored them there, else from `DEFAULT_RATES` (figure
9 on 2 shared CPU cores), and the output says which. No TensorFlow is imported here.
"""

import dataclasses
import json
import math
import os
from typing import Optional, Sequence

from tfhub_transfer import backbones
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.config import tuner_max_trials
from tfhub_transfer.data import datasets
from tfhub_transfer.data import folder as folder_lib
from tfhub_transfer.results import workdir as workdir_lib

# Multiply-adds (billions) of one image's forward pass at the network's native resolution, as
# its paper reports them (rounded): the relative cost of a backbone. An unlisted backbone
# (hub:, keras:, a keras kwarg) is costed as `UNKNOWN_GMACS`, and the output says so.
GMACS = {
    "inception_v1": 1.5, "bn_inception": 2.0, "inception_v3": 5.7, "inception_v4": 12.3,
    "inception_resnet_v2": 13.2, "resnet_50": 3.9, "resnet_101": 7.6, "resnet_152": 11.3,
    "densenet_121": 2.9, "densenet_169": 3.4, "densenet_201": 4.3, "mobilenet_v1": 0.57,
    "mobilenet_v2": 0.30, "mobilenet_v2_140": 0.59, "nasnet_mobile": 0.56,
    "nasnet_large": 23.8,
    # Keras MobileNet v1 at width 0.25 (the shared weights, figure 10's backbone): 41 M.
    'keras:MobileNet{"alpha":0.25}': 0.041,
}
UNKNOWN_GMACS = 4.0  # About a ResNet-50.


@dataclasses.dataclass(frozen=True)
class Rates:
  """What the benchmark measured, per unit of work.

  Attributes:
    forward_s_per_gmac: seconds per image per billion multiply-adds of a forward pass.
    train_s_per_gmac: seconds per training image per billion multiply-adds of the forward
      pass (a step: forward, backward, update).
    lbfgs_s_per_example: seconds of the logreg L2 path and refit per train+val example.
    training_overhead_s: fixed seconds per trial and per refit (build, weights load,
      tracing, input start, backups, tuner bookkeeping).
    cell_overhead_s: fixed seconds per cell (data, records, store, its share of the report).
    source: where the rates come from.
  """
  forward_s_per_gmac: float
  train_s_per_gmac: float
  lbfgs_s_per_example: float
  training_overhead_s: float
  cell_overhead_s: float
  source: str = "DEFAULT_RATES"

  @classmethod
  def from_mapping(cls, values, source: str) -> "Rates":
    return cls(**{f.name: float(values[f.name]) for f in dataclasses.fields(cls)
                  if f.name != "source"}, source=source)


# Figure 10 as measured on 2 shared CPU cores (load average 2.4-2.0), 2026-12-05, at
# 51ec461: the rates stored in bench/results/cpu.json, rounded, for a checkout without it.
DEFAULT_RATES = Rates(forward_s_per_gmac=0.012, train_s_per_gmac=0.042,
                      lbfgs_s_per_example=0.0020, training_overhead_s=7.2,
                      cell_overhead_s=2.3,
                      source="DEFAULT_RATES (figure 10, 2 shared CPU cores)")

STUDY_FIGURE = "10"


def load_rates(results_path: Optional[str]) -> Rates:
  """Figure 10's rates from a bench results JSON, else `DEFAULT_RATES` (also when the file
  holds no figure 10 or is unreadable: an estimate must never stop a plan)."""
  if not results_path or not os.path.exists(results_path):
    return DEFAULT_RATES
  try:
    with open(results_path) as f:
      figures = json.load(f).get("figures", [])
    rates = next(f["rates"] for f in figures if f.get("key") == STUDY_FIGURE and f.get("rates"))
    return Rates.from_mapping(rates, source=results_path)
  except (OSError, ValueError, KeyError, TypeError, StopIteration):
    return DEFAULT_RATES


def default_results_path(mode: str = "cpu") -> str:
  """bench/results/<mode>.json of the checkout this package runs from."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.join(root, "bench", "results", f"{mode}.json")


def backbone_gmacs(config: ExperimentConfig) -> tuple[float, bool]:
  """(multiply-adds of one image at the cell's resolution, whether `GMACS` lists the
  network): the native count scaled by the pixels."""
  name = config.model + (config.model_kwargs.json() if config.model_kwargs else "")
  native = backbones.get_backbone_spec(config.model, model_kwargs=config.model_kwargs)
  scale = ((config.image_size or native.image_size) / native.image_size) ** 2
  return GMACS.get(name, UNKNOWN_GMACS) * scale, name in GMACS


@dataclasses.dataclass(frozen=True)
class SplitSizes:
  train: int
  val: int
  test: int


def split_sizes(config: ExperimentConfig) -> Optional[SplitSizes]:
  """The cell's split sizes, with its caps: a folder's as its rule draws them (from its
  validated listing, cached in the workdir), a paper dataset's from the paper's sizes (val
  held out of train at its fraction); None where unknown (a smoke dataset)."""
  spec = datasets.get_dataset_spec(config.dataset)
  if spec.folder:
    layout = folder_lib.describe_layout(spec.folder)
    listing = folder_lib.scan_folder(layout,
                                     cache_dir=workdir_lib.Workdir(config.workdir).folders)
    counts = folder_lib.split_sizes(layout, listing, test_fraction=spec.test_fraction or 0.0,
                                    test_seed=datasets.FOLDER_TEST_SEED,
                                    val_fraction=spec.val_fraction, seed=config.seed)
    train, val, test = (int(counts[s].sum()) for s in ("train", "val", "test"))
  elif spec.paper_train_size and spec.paper_test_size:
    val = round(spec.paper_train_size * spec.val_fraction)  # An official val: about as large.
    train, test = spec.paper_train_size - val, spec.paper_test_size
  else:
    return None
  if config.examples_per_class:
    train = min(train, config.examples_per_class * spec.num_classes)
  if config.max_examples:
    train, val, test = (min(n, config.max_examples) for n in (train, val, test))
  return SplitSizes(train, val, test)


def cell_seconds(config: ExperimentConfig, rates: Rates) -> Optional[float]:
  """The estimated seconds of one cell (None: its dataset's size is unknown)."""
  sizes = split_sizes(config)
  if sizes is None:
    return None
  gmacs, _ = backbone_gmacs(config)
  forward = rates.forward_s_per_gmac * gmacs
  if not config.regime_spec.searches_with_tuner:
    return ((sizes.train + sizes.val + sizes.test) * forward
            + (sizes.train + sizes.val) * rates.lbfgs_s_per_example + rates.cell_overhead_s)
  grid = len(config.learning_rate_grid) * len(config.weight_decay_grid)
  trials = min(grid, tuner_max_trials(config.tuner, grid, config.max_trials) or grid)
  trainings = trials + 1  # + the refit on train + val.
  step = config.batch_size * rates.train_s_per_gmac * gmacs
  return (trainings * (config.steps * step + rates.training_overhead_s)
          + (trials * sizes.val + sizes.test) * forward + rates.cell_overhead_s)


@dataclasses.dataclass(frozen=True)
class Estimate:
  seconds: float
  cells: int
  unknown_size: int
  unlisted_models: tuple[str, ...]
  source: str

  def line(self) -> str:
    """One line for `--mode=plan`, labelled as an estimate."""
    if not self.cells:
      return (f"estimate: none ({self.unknown_size} cell(s) to run, each on a dataset of "
              f"unknown size)" if self.unknown_size else "estimate: nothing to run")
    text = (f"estimate: about {format_duration(self.seconds)} on this host for "
            f"{self.cells} cell(s) to run (rates: {self.source}; an estimate, not a "
            f"measurement")
    if self.unknown_size:
      text += f"; {self.unknown_size} cell(s) of unknown size not counted"
    if self.unlisted_models:
      text += (f"; {', '.join(self.unlisted_models)} costed as {UNKNOWN_GMACS:g} GMACs "
               f"(not in estimate.GMACS)")
    return text + ")"


def estimate_cells(cells: Sequence[ExperimentConfig], rates: Rates) -> Estimate:
  """The estimated time of `cells`, run one after another."""
  total, unknown, unlisted = 0.0, 0, []
  for config in cells:
    seconds = cell_seconds(config, rates)
    if seconds is None:
      unknown += 1
      continue
    total += seconds
    _, listed = backbone_gmacs(config)
    if not listed and config.model_label not in unlisted:
      unlisted.append(config.model_label)
  return Estimate(total, len(cells) - unknown, unknown, tuple(unlisted), rates.source)


def format_duration(seconds: float) -> str:
  """'40 s', '12 min', '3.1 h', '2.5 days', '12 years'."""
  if seconds < 90:
    return f"{max(1, math.ceil(seconds))} s"
  if seconds < 5400:
    return f"{seconds / 60:.0f} min"
  if seconds < 172800:
    return f"{seconds / 3600:.1f} h"
  if seconds < 2 * 365 * 86400:
    return f"{seconds / 86400:.1f} days"
  return f"{seconds / (365 * 86400):,.0f} years"


def plan_line(cells: Sequence[ExperimentConfig], results_path: Optional[str] = None) -> str:
  """`--mode=plan`'s estimate of the cells still to run, from `results_path` (default: this
  checkout's bench/results/cpu.json) or `DEFAULT_RATES`."""
  rates = load_rates(results_path or default_results_path("cpu"))
  try:
    return estimate_cells(cells, rates).line()
  except (ValueError, OSError) as e:  # A plan lists its cells whatever the estimate meets.
    return f"estimate: unavailable ({e})"
