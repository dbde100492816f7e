"""The one frozen config an experiment runs from, and the identity of what it measures.

A cell of the study is (model, dataset, regime, seed). Two runs of a cell measure the same
thing only under the same protocol: the regime's settings that change its outcome (the step
budget, batch size, grids, ... listed per regime in `regimes.RegimeSpec.protocol_fields`).
`ExperimentConfig.key` is the cell plus a short id of those settings: it keys the stored
result, the tuner state and the checkpoints, so a rerun under another protocol never reuses
another protocol's state and stores a row of its own.
"""

import dataclasses
import functools
import hashlib
import json
import numbers
import os
from typing import Any, Iterator, Mapping, Optional

from tfhub_transfer import identity as identity_lib
from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer.data import crops

STRATEGIES = ("auto", "mirrored", "default", "one_device", "tpu")
TUNERS = ("grid", "bayesian")
# Trials of a Bayesian search when --max_trials is 0 (at most the grid's size).
BAYESIAN_DEFAULT_TRIALS = 20


def tuner_max_trials(tuner: str, grid_size: int, max_trials: int) -> Optional[int]:
  """The trial cap `--tuner` runs a search of `grid_size` points with (None: the whole grid):
  `--max_trials`, else every grid point, or for `bayesian` at most BAYESIAN_DEFAULT_TRIALS."""
  if max_trials:
    return max_trials
  return min(grid_size, BAYESIAN_DEFAULT_TRIALS) if tuner == "bayesian" else None

# Keras dtype policies a cell may run its backbone under (`--precision`); float32 is the
# protocol as measured so far. Mixed policies keep variables, the head and the loss float32.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

_INT32_MAX = 2**31 - 1


class UsageError(ValueError):
  """A setting, name or input the caller must change; the message says which and how.

  The CLI prints it as one line and exits 2 (a failure of a run exits 1, a bug is a
  traceback). A ValueError, so library callers may catch either.
  """


@dataclasses.dataclass(frozen=True)
class Bound:
  """The valid values of an integer setting: [low, high], and 0 where 0 means a default.

  The one home of the bounds: `ExperimentConfig` checks its fields with them, and the CLI's
  flag validators read them (`cli.py`), so a value the flags accept is one the config takes.

  Attributes:
    flag: the command-line flag that sets the field.
    low, high: the range of a value that is not the default.
    zero: what 0 means (the default), or None where 0 is not special.
  """
  flag: str
  low: int
  high: int
  zero: Optional[str] = None

  def describe(self) -> str:
    text = f"an integer in [{self.low:,}, {self.high:,}]"
    return text + (f", or 0 ({self.zero})" if self.zero else "")

  def contains(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
      return False
    return (value == 0 and self.zero is not None) or self.low <= value <= self.high


# Integer fields and their bounds. Counts stay below 2^31 (TensorFlow and NumPy seeds, step
# counters and sizes are int32 somewhere on their way). A resolution is from 16 px, a floor
# for every source (a Hub module takes any size; each keras application asks for 32 or 75 px
# itself, checked before the first cell by `backbones.check_backbone`), to 2048 px (3.4x
# EfficientNet-B7's 600, the largest native resolution of keras.applications); whether a
# batch of it fits the machine is checked before the first cell too (`cli.py`).
BOUNDS = {
    "seed": Bound("seeds", 0, _INT32_MAX),
    "image_size": Bound("image_size", 16, 2048, zero="the model's own"),
    "batch_size": Bound("batch_size", 1, _INT32_MAX),
    "train_steps": Bound("train_steps", 1, _INT32_MAX, zero="a quick default"),
    "max_trials": Bound("max_trials", 1, _INT32_MAX, zero="the whole grid"),
    "l2_grid_size": Bound("l2_grid_size", 1, 10_000),
    "max_examples": Bound("max_examples", 1, _INT32_MAX, zero="all"),
    "examples_per_class": Bound("examples_per_class", 1, _INT32_MAX, zero="all"),
}

# The float grids' valid items: the config checks its fields with them, the CLI's validators
# read them. name -> (check, what is expected).
GRID_ITEMS = {
    "learning_rates": (lambda v: 0 < v < float("inf"), "a positive number, e.g. 0.1,0.01"),
    "weight_decays": (lambda v: 0 <= v < float("inf"), "a non-negative number, e.g. 0,1e-4"),
}

# Bump when a convention changes what the same settings measure (e.g. how weight decay is
# applied): results stored under an older version are then never taken for current ones.
# 3: the L2 coefficient is weight_decay / learning_rate (SimCLR B.8); VOC2007 trains on
# labels_no_difficult and ignores difficult-only classes in mAP.
PROTOCOL_VERSION = 3

# Protocol fields added after results were stored: keyed only when not at their default, so
# that every result measured before they existed keeps its protocol id.
_KEYED_WHEN_SET = ("eval_preprocessing", "fast_decode", "resize_on_device")


def unkeyed_defaults() -> dict[str, Any]:
  """The settings a protocol id leaves out while they hold their default, with it: a record
  without one was run with the default."""
  defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
  return {name: defaults[name] for name in _KEYED_WHEN_SET}


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
    resize_on_device: with `fast_decode`, feature extraction (logreg) resamples the decoded
      windows on the accelerator, in the compiled forward function
      (`data/device_resample.py`): the host's cores only decode. The fast path's pixels up
      to float rounding for JPEGs; other formats get its box filter too. Only for bilinear
      `eval_preprocessing`s. Finetune/scratch cells do not extract features and ignore it
      (it is not in their protocol).
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
  resize_on_device: bool = False

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
    # The CLI's flag validators read the same `BOUNDS`; these hold for library callers.
    for name, bound in BOUNDS.items():
      if not bound.contains(getattr(self, name)):
        raise ValueError(f"{name}={getattr(self, name)!r} must be {bound.describe()} "
                         f"(--{bound.flag}).")
    for name, (valid, expected) in GRID_ITEMS.items():
      if not all(valid(v) for v in getattr(self, name)):
        raise ValueError(f"{name}={list(getattr(self, name))}: each must be {expected} "
                         f"(--{name}).")
    if self.precision not in PRECISIONS:
      raise ValueError(f"Unknown --precision={self.precision!r}. Valid choices: "
                       f"{', '.join(PRECISIONS)}.")
    eval_spec = crops.get_eval_preprocessing(self.eval_preprocessing)
    if self.resize_on_device and not self.fast_decode:
      raise ValueError("--resize_on_device moves --fast_decode's resize onto the "
                       "accelerator: add --fast_decode, or drop --resize_on_device.")
    if self.resize_on_device and eval_spec.method != "bilinear":
      raise ValueError(f"--resize_on_device resamples bilinearly; --eval_preprocessing="
                       f"{self.eval_preprocessing} is {eval_spec.method}: choose "
                       f"--eval_preprocessing=slim, or drop --resize_on_device.")

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
  def model_id(self) -> str:
    """The model as keys name it: `model_label` with local files named by their content."""
    label = identity_lib.network_id(self.model)
    if self.model_kwargs:
      label += self.model_kwargs.json()
    if self.weights:
      label += "@" + identity_lib.weights_part(self.weights)
    if self.image_size:
      label += f"@{self.image_size}px"
    return label

  @functools.cached_property
  def identity(self) -> identity_lib.Identity:
    """The cell's key, labels and sources (`identity`): computed once per config, since it
    hashes weights files and lists image folders.

    Raises:
      FileNotFoundError, ValueError: weights or a dataset that cannot be resolved.
    """
    key = identity_lib.CellKey(self.model_id, identity_lib.dataset_id(self.dataset),
                               self.regime, self.seed, self.protocol)
    weights = self.weights or self.regime_spec.resolve_weights(None)
    return identity_lib.Identity(
        key=key, model_label=self.model_label,
        dataset_label=identity_lib.dataset_label(self.dataset),
        sources={"model": f"{self.network_label}@{identity_lib.weights_source(weights)}",
                 "dataset": identity_lib.dataset_source(self.dataset)})

  @property
  def names(self) -> tuple[str, str, str, int, str]:
    """The cell as the user named it: (model label, dataset, regime, seed, protocol id).
    A grid lists cells by it; what was run is keyed by `cell`."""
    return (self.model_label, self.dataset, self.regime, self.seed, self.protocol)

  @property
  def cell(self) -> identity_lib.CellKey:
    """The results-store key: content identities of the model and the dataset, regime, seed
    and protocol id (`identity`)."""
    return self.identity.key

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON values, as stored in each record."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out["model_kwargs"] = self.model_kwargs.to_dict()
    out["learning_rates"] = list(self.learning_rates)
    out["weight_decays"] = list(self.weight_decays)
    return out
