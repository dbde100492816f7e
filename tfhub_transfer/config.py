"""The one frozen config an experiment runs from, and the names of the regimes."""

import dataclasses
import json
import os
from typing import Any, Optional

REGIMES = ("logreg", "finetune", "scratch")


def check_regime(regime: str) -> str:
  if regime not in REGIMES:
    raise ValueError(f"Unknown --regime={regime!r}. Valid choices: {', '.join(REGIMES)}.")
  return regime


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that defines one cell (model x dataset x regime x seed) and how to run it.

  Attributes:
    model: backbone registry name, `hub:<handle>` or `keras:<Application>`.
    dataset: dataset registry name, `digits` or `folder:<path>`.
    regime: `logreg`, `finetune` or `scratch`.
    seed: seed of splits, init, shuffling and the tuner.
    workdir: where results, caches, checkpoints, tuner state and logs go.
    weights: `imagenet`, `random`, a path, or None for the regime's default.
    model_kwargs: JSON object of extra keras.applications constructor kwargs.
    image_size: overrides the backbone's native resolution (0: native).
    data_dir: TFDS data dir (None: TFDS default).
    manual_dir: TFDS manual dir for datasets that must be downloaded by hand.
    batch_size: global batch size (split across replicas).
    train_steps: step budget of each finetune/scratch trial (0: the regime's default).
    learning_rates: finetune/scratch grid (empty: the regime's default grid).
    weight_decays: finetune/scratch grid (empty: the regime's default grid).
    tuner: `grid` or `bayesian`.
    max_trials: cap on tuner trials (0: the whole grid).
    l2_grid_size: number of log-spaced L2 strengths in [1e-6, 1e5] for logreg.
    strategy: `auto`, `mirrored`, `default`, `one_device` or `tpu`.
    max_examples: cap on examples per split (0: all), for smoke runs; recorded.
  """
  model: str
  dataset: str
  regime: str
  seed: int = 0
  workdir: str = "workdir"
  weights: Optional[str] = None
  model_kwargs: str = "{}"
  image_size: int = 0
  data_dir: Optional[str] = None
  manual_dir: Optional[str] = None
  batch_size: int = 64
  train_steps: int = 0
  learning_rates: tuple[float, ...] = ()
  weight_decays: tuple[float, ...] = ()
  tuner: str = "grid"
  max_trials: int = 0
  l2_grid_size: int = 45
  strategy: str = "auto"
  max_examples: int = 0

  def __post_init__(self):
    check_regime(self.regime)
    try:
      kwargs = json.loads(self.model_kwargs)
    except json.JSONDecodeError as e:
      raise ValueError(f"--model_kwargs={self.model_kwargs!r} is not JSON ({e}). Expected an "
                       f"object such as '{{\"alpha\": 0.25}}'.") from e
    if not isinstance(kwargs, dict):
      raise ValueError(f"--model_kwargs={self.model_kwargs!r} must be a JSON object.")
    if self.tuner not in ("grid", "bayesian"):
      raise ValueError(f"Unknown --tuner={self.tuner!r}. Valid choices: grid, bayesian.")

  @property
  def kwargs(self) -> dict[str, Any]:
    return json.loads(self.model_kwargs)

  @property
  def model_label(self) -> str:
    """The model as results name it: the `--model` value, plus anything that makes it a
    different network from the registry's (kwargs, weights, resolution)."""
    label = self.model
    if self.kwargs:
      label += json.dumps(self.kwargs, sort_keys=True, separators=(",", ":"))
    if self.weights:
      label += "@" + (self.weights if self.weights in ("imagenet", "random")
                      else os.path.basename(os.path.normpath(self.weights)))
    if self.image_size:
      label += f"@{self.image_size}px"
    return label

  @property
  def cell(self) -> tuple[str, str, str, int]:
    """The results-store key."""
    return (self.model_label, self.dataset, self.regime, self.seed)

  def same_protocol(self, other: dict[str, Any]) -> bool:
    """Whether a stored config ran the same protocol (where and on what hardware aside)."""
    ignored = {"workdir", "data_dir", "manual_dir", "strategy"}
    mine = {k: v for k, v in json.loads(json.dumps(self.to_dict())).items()
            if k not in ignored}
    return mine == {k: v for k, v in other.items() if k not in ignored}

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
