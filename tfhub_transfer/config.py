"""The one frozen config an experiment runs from, and the identity of what it measures.

A cell of the study is (model, dataset, regime, seed). Two runs of a cell measure the same
thing only under the same protocol: the regime's settings that change its outcome (the step
budget, batch size, grids, ... listed per regime in `regimes.RegimeSpec.protocol_fields`).
`ExperimentConfig.key` is the cell plus a short id of those settings: it keys the stored
result, the tuner state and the checkpoints, so a rerun under another protocol never reuses
another protocol's state and stores a row of its own.
"""

import dataclasses
import hashlib
import json
import numbers
import os
from typing import Any, Iterator, Mapping, Optional

from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer.data import crops

STRATEGIES = ("auto", "mirrored", "default", "one_device", "tpu")
TUNERS = ("grid", "bayesian")
# Keras dtype policies a cell may run its backbone under (`--precision`); float32 is the
# protocol as measured so far. Mixed policies keep variables, the head and the loss float32.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Integer fields and their smallest valid value (0 means "default" where documented).
_LOWER_BOUNDS = {"seed": 0, "image_size": 0, "batch_size": 1, "train_steps": 0,
                 "max_trials": 0, "l2_grid_size": 1, "max_examples": 0,
                 "examples_per_class": 0}

# Bump when a convention changes what the same settings measure (e.g. how weight decay is
# applied): results stored under an older version are then never taken for current ones.
# 3: the L2 coefficient is weight_decay / learning_rate (SimCLR B.8); VOC2007 trains on
# labels_no_difficult and ignores difficult-only classes in mAP.
PROTOCOL_VERSION = 3

# Protocol fields added after results were stored: keyed only when not at their default, so
# that every result measured before they existed keeps its protocol id.
_KEYED_WHEN_SET = ("eval_preprocessing", "fast_decode")


class FrozenKwargs(Mapping[str, Any]):
  """An immutable, hashable mapping of JSON values: keras.applications constructor kwargs.

  Parsed once from `--model_kwargs` (`parse`), then passed as is through the config and the
  backbone spec; `json()` is its one canonical text (sorted keys, no spaces).
  """

  def __init__(self, items: Mapping[str, Any] = ()):
    data = dict(items)
    for key in data:
      if not isinstance(key, str):
        raise ValueError(f"model_kwargs keys must be strings, got {key!r}.")
    self._data = {k: _freeze(v) for k, v in sorted(data.items())}

  @classmethod
  def parse(cls, text: str) -> "FrozenKwargs":
    """`--model_kwargs` JSON text -> FrozenKwargs.

    Raises:
      ValueError: not JSON, or not a JSON object.
    """
    try:
      value = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"--model_kwargs={text!r} is not JSON ({e}). Expected an object such "
                       f"as '{{\"alpha\": 0.25}}'.") from e
    if not isinstance(value, dict):
      raise ValueError(f"--model_kwargs={text!r} must be a JSON object, e.g. "
                       f"'{{\"alpha\": 0.25}}'.")
    return cls(value)

  def __getitem__(self, key: str) -> Any:
    return self._data[key]

  def __iter__(self) -> Iterator[str]:
    return iter(self._data)

  def __len__(self) -> int:
    return len(self._data)

  def __hash__(self) -> int:
    return hash(self.json())

  def __repr__(self) -> str:
    return f"FrozenKwargs({self._data!r})"

  def json(self) -> str:
    return json.dumps(self._data, sort_keys=True, separators=(",", ":"))

  def to_dict(self) -> dict[str, Any]:
    return json.loads(self.json())


def _freeze(value):
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  if isinstance(value, dict):
    return FrozenKwargs(value)
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  raise ValueError(f"model_kwargs values must be JSON values, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that defines one cell (model x dataset x regime x seed) and how to run it.

  Attributes:
    model: backbone registry name, `hub:<handle>` or `keras:<Application>`.
    dataset: dataset registry name, `digits` or `folder:<path>`.
    regime: a `regimes.REGIMES` name.
    seed: seed of splits, init, shuffling and the tuner.
    workdir: where results, caches, checkpoints, tuner state and logs go.
    weights: `imagenet`, `random`, a path, or None for the regime's default.
    model_kwargs: extra keras.applications constructor kwargs (a mapping; frozen here).
    image_size: overrides the backbone's native resolution (0: native).
    data_dir: TFDS data dir (None: TFDS default).
    manual_dir: TFDS manual dir for datasets that must be downloaded by hand.
    batch_size: global batch size (split across replicas).
    train_steps: step budget of each finetune/scratch trial (0: `protocol.QUICK_TRAIN_STEPS`).
    learning_rates: finetune/scratch grid (empty: the regime's grid).
    weight_decays: finetune/scratch grid (empty: the regime's grid).
    tuner: one of `TUNERS`.
    max_trials: cap on tuner trials (0: the whole grid).
    l2_grid_size: number of log-spaced L2 strengths in `protocol.L2_RANGE` for logreg.
    strategy: one of `STRATEGIES`.
    max_examples: cap on examples per split (0: all), for smoke runs; recorded.
    examples_per_class: K > 0 trains on a class-balanced random subset of K training images
      per class drawn with `seed` (a low-data cell, `loading.load_splits`); 0: all.
    precision: one of `PRECISIONS`: the Keras dtype policy the backbone computes in, for
      training and feature extraction (the head, the loss and the variables stay float32;
      float16 losses are scaled).
    jit_compile: compile the training step and the feature extractor with XLA.
    eval_preprocessing: the evaluation resize and crop, a `crops.EVAL_PREPROCESSINGS` name.
    fast_decode: JPEGs decoded by the input pipeline's fast path (window only, reduced DCT
      scale, box filter: `data/transforms.py`); other pixels.
  """
  model: str
  dataset: str
  regime: str
  seed: int = 0
  workdir: str = "workdir"
  weights: Optional[str] = None
  model_kwargs: Mapping[str, Any] = FrozenKwargs()
  image_size: int = 0
  data_dir: Optional[str] = None
  manual_dir: Optional[str] = None
  batch_size: int = 64
  train_steps: int = 0
  learning_rates: tuple[float, ...] = ()
  weight_decays: tuple[float, ...] = ()
  tuner: str = "grid"
  max_trials: int = 0
  l2_grid_size: int = protocol.L2_GRID_SIZE
  strategy: str = "auto"
  max_examples: int = 0
  examples_per_class: int = 0
  precision: str = "float32"
  jit_compile: bool = False
  eval_preprocessing: str = crops.DEFAULT_EVAL_PREPROCESSING
  fast_decode: bool = False

  def __post_init__(self):
    regimes.get_regime_spec(self.regime)
    if not isinstance(self.model_kwargs, Mapping):
      raise TypeError(f"model_kwargs={self.model_kwargs!r} must be a mapping (parse JSON "
                      f"text with FrozenKwargs.parse).")
    if not isinstance(self.model_kwargs, FrozenKwargs):
      object.__setattr__(self, "model_kwargs", FrozenKwargs(self.model_kwargs))
    for name in ("learning_rates", "weight_decays"):
      object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
    if self.tuner not in TUNERS:
      raise ValueError(f"Unknown --tuner={self.tuner!r}. Valid choices: {', '.join(TUNERS)}.")
    if self.strategy not in STRATEGIES:
      raise ValueError(f"Unknown --strategy={self.strategy!r}. Valid choices: "
                       f"{', '.join(STRATEGIES)}.")
    # The CLI checks the same bounds when it parses flags; these hold for library callers.
    for name, low in _LOWER_BOUNDS.items():
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low} (--{name}"
                         f"{'s' if name == 'seed' else ''}).")
    if not all(0 < v < float("inf") for v in self.learning_rates):
      raise ValueError(f"learning_rates={list(self.learning_rates)}: each must be a positive "
                       f"number (--learning_rates).")
    if not all(0 <= v < float("inf") for v in self.weight_decays):
      raise ValueError(f"weight_decays={list(self.weight_decays)}: each must be a "
                       f"non-negative number (--weight_decays).")
    if self.precision not in PRECISIONS:
      raise ValueError(f"Unknown --precision={self.precision!r}. Valid choices: "
                       f"{', '.join(PRECISIONS)}.")
    crops.get_eval_preprocessing(self.eval_preprocessing)

  @property
  def regime_spec(self) -> regimes.RegimeSpec:
    return regimes.get_regime_spec(self.regime)

  @property
  def steps(self) -> int:
    """The step budget of each trial and of the refit (finetune/scratch)."""
    return self.train_steps or protocol.QUICK_TRAIN_STEPS

  @property
  def learning_rate_grid(self) -> tuple[float, ...]:
    return self.learning_rates or self.regime_spec.learning_rates

  @property
  def weight_decay_grid(self) -> tuple[float, ...]:
    return self.weight_decays or self.regime_spec.weight_decays

  @property
  def model_label(self) -> str:
    """The model as results name it: the `--model` value, plus anything that makes it a
    different network from the registry's (kwargs, weights, resolution)."""
    label = self.model
    if self.model_kwargs:
      label += self.model_kwargs.json()
    if self.weights:
      label += "@" + (self.weights if self.weights in (regimes.IMAGENET, regimes.RANDOM)
                      else os.path.basename(os.path.normpath(self.weights)))
    if self.image_size:
      label += f"@{self.image_size}px"
    return label

  @property
  def network_label(self) -> str:
    """The network without its weights: the `--model` value, kwargs and resolution. A
    finetune cell and a scratch cell of one architecture share it (their `model_label`s
    differ where `--weights` names a file)."""
    label = self.model
    if self.model_kwargs:
      label += self.model_kwargs.json()
    if self.image_size:
      label += f"@{self.image_size}px"
    return label

  def protocol_settings(self) -> dict[str, Any]:
    """The resolved settings the outcome depends on besides the cell (defaults filled in)."""
    resolved = {"train_steps": self.steps, "learning_rates": list(self.learning_rate_grid),
                "weight_decays": list(self.weight_decay_grid)}
    defaults = {f.name: f.default for f in dataclasses.fields(self)}
    settings = {name: resolved.get(name, getattr(self, name))
                for name in self.regime_spec.protocol_fields
                if name not in _KEYED_WHEN_SET or getattr(self, name) != defaults[name]}
    return {"protocol_version": PROTOCOL_VERSION, **settings}

  @property
  def protocol(self) -> str:
    """A short id of `protocol_settings()`."""
    blob = json.dumps(self.protocol_settings(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]

  @property
  def cell(self) -> tuple[str, str, str, int, str]:
    """The results-store key: (model label, dataset, regime, seed, protocol id)."""
    return (self.model_label, self.dataset, self.regime, self.seed, self.protocol)

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON values, as stored in each record."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out["model_kwargs"] = self.model_kwargs.to_dict()
    out["learning_rates"] = list(self.learning_rates)
    out["weight_decays"] = list(self.weight_decays)
    return out
