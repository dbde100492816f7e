"""The three regimes of the paper, one `RegimeSpec` each: every fact about a regime lives here.

  logreg    frozen ImageNet features + L2 logistic regression over the L2 path;
  finetune  ImageNet init, every weight trained, learning rate x weight decay searched;
  scratch   random init, every weight trained, its own grid and a longer budget.

The registry is plain data (no TensorFlow), so the CLI, the report and the results schema read
it cheaply; the runner of a regime is named as "module:function" and imported on use.
"""

import dataclasses
import importlib
from typing import Callable, Optional, Sequence

from tfhub_transfer import protocol

IMAGENET = "imagenet"
RANDOM = "random"

# Config fields every regime's outcome depends on (besides the cell key and the backbone).
# `precision` and `jit_compile` change the numbers a backbone computes (features, gradients);
# `examples_per_class` the data a cell trains on; `eval_preprocessing` and `fast_decode` the
# pixels every image becomes. logreg adds `resize_on_device` (where its features' pixels are
# resampled: the same up to float rounding), which only feature extraction reads.
_COMMON_FIELDS = ("max_examples", "examples_per_class", "precision", "jit_compile",
                  "eval_preprocessing", "fast_decode")


@dataclasses.dataclass(frozen=True)
class RegimeSpec:
  """One regime of the study.

  Attributes:
    name: registry name (`--regime`).
    title: how figures and reports title it.
    default_weights: `imagenet` or `random`: the init when `--weights` is not given.
    pretrained_allowed: whether `--weights` may name pretrained weights.
    trains_backbone: whether the backbone's weights are trained (else frozen, batch norm on
      its moving statistics).
    learning_rates: the paper's learning-rate grid (empty: no gradient training).
    weight_decays: the paper's weight-decay grid.
    paper_train_steps: the paper's step budget at batch 256 (None: fitted to convergence).
    protocol_fields: the `ExperimentConfig` fields its outcome depends on besides the cell
      key; they key its stored result, tuner state and checkpoints.
    runner: "module:function" running one cell, `(CellContext) -> Outcome | None`.
    paper_column: column of the paper's reference networks table (average log-odds).
    paper_correlation: the paper's Pearson r between ImageNet top-1 and average transfer
      log-odds over its 16 networks (Figure 1).
    colour: its colour in every figure (a matplotlib colour).
    line_style: its matplotlib line style where a figure draws it as a line.
    marker: its matplotlib marker where a figure draws its points.

  The registry's order is the order figures, tables and reports list the regimes in.
  """
  name: str
  title: str
  default_weights: str
  pretrained_allowed: bool
  trains_backbone: bool
  learning_rates: tuple[float, ...]
  weight_decays: tuple[float, ...]
  paper_train_steps: Optional[int]
  protocol_fields: tuple[str, ...]
  runner: str
  paper_column: str
  paper_correlation: float
  colour: str
  line_style: str
  marker: str

  @property
  def searches_with_tuner(self) -> bool:
    return bool(self.learning_rates)

  def get_runner(self) -> Callable:
    module, function = self.runner.split(":")
    return getattr(importlib.import_module(module), function)

  def resolve_weights(self, weights: Optional[str]) -> str:
    """The weights this regime uses; None means its default.

    Raises:
      ValueError: pretrained weights asked for where the regime trains from random init.
        (Random weights under `logreg` or `finetune` are allowed: the usual control.)
    """
    if weights is None:
      return self.default_weights
    if not self.pretrained_allowed and weights != RANDOM:
      raise ValueError(f"--regime={self.name} trains from random init, but --weights="
                       f"{weights!r} asks for pretrained weights. Drop --weights or use "
                       f"--regime=finetune.")
    return weights


_TRAINED_FIELDS = _COMMON_FIELDS + ("batch_size", "train_steps", "learning_rates",
                                    "weight_decays", "tuner", "max_trials")

REGIMES: dict[str, RegimeSpec] = {s.name: s for s in [
    RegimeSpec(
        name="logreg", title="Logistic regression on frozen features",
        default_weights=IMAGENET, pretrained_allowed=True, trains_backbone=False,
        learning_rates=(), weight_decays=(), paper_train_steps=None,
        protocol_fields=_COMMON_FIELDS + ("l2_grid_size", "resize_on_device"),
        runner="tfhub_transfer.runners:run_logreg", paper_column="avg_logodds_logreg",
        paper_correlation=0.99, colour="tab:blue", line_style=":", marker="s"),
    RegimeSpec(
        name="finetune", title="Fine-tuned",
        default_weights=IMAGENET, pretrained_allowed=True, trains_backbone=True,
        learning_rates=protocol.FINETUNE_LEARNING_RATES,
        weight_decays=protocol.FINETUNE_WEIGHT_DECAYS,
        paper_train_steps=protocol.PAPER_FINETUNE_STEPS, protocol_fields=_TRAINED_FIELDS,
        runner="tfhub_transfer.runners:run_trained", paper_column="avg_logodds_finetune",
        paper_correlation=0.96, colour="tab:orange", line_style="-", marker="o"),
    RegimeSpec(
        name="scratch", title="Trained from random initialization",
        default_weights=RANDOM, pretrained_allowed=False, trains_backbone=True,
        learning_rates=protocol.SCRATCH_LEARNING_RATES,
        weight_decays=protocol.SCRATCH_WEIGHT_DECAYS,
        paper_train_steps=protocol.PAPER_SCRATCH_STEPS, protocol_fields=_TRAINED_FIELDS,
        runner="tfhub_transfer.runners:run_trained", paper_column="avg_logodds_scratch",
        paper_correlation=0.55, colour="tab:green", line_style="--", marker="^"),
]}


def score_regimes(given: Sequence[str]) -> tuple[str, ...]:
  """The regimes of a transferability-score grid (`--mode=score`): scores read frozen
  features, the ones of the regime that keeps its backbone frozen (its weights rule and
  feature cache). `given` may be empty or name that regime.

  Raises:
    ValueError: `given` names another regime.
  """
  frozen = tuple(name for name, spec in REGIMES.items() if not spec.trains_backbone)
  if given and tuple(given) != frozen:
    raise ValueError(f"--mode=score scores frozen features (the {', '.join(frozen)} "
                     f"regime's); got --regime={','.join(given)}. Drop --regime.")
  return frozen


def get_regime_spec(name: str) -> RegimeSpec:
  """The spec of `--regime=name`.

  Raises:
    ValueError: unknown name (the message lists the valid ones).
  """
  if name not in REGIMES:
    raise ValueError(f"Unknown --regime={name!r}. Valid choices: {', '.join(REGIMES)}.")
  return REGIMES[name]
