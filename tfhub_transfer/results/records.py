"""What the results store holds: result, trial and score records, each a frozen dataclass
with one JSON form.

A `ResultRecord` is one cell's outcome, keyed by `CellKey` (model, dataset, regime, seed,
protocol): the model and the dataset are content identities (`tfhub_transfer.identity`), the
protocol the id of the settings the outcome depends on (`ExperimentConfig.protocol`). Its
readable names are `model_label` and `dataset_label`. `from_json` is the one place a record
is checked (the store calls it on every write and read); `to_json` its one JSON form, which
is what the store keeps and exports. A record is also a read-only mapping of that JSON form
(`record["test_metric"]`), which is how the report's tables read fields beyond the typed ones.

`TrialRecord` is one hyperparameter-search trial, `ScoreRecord` one `--mode=score` row. TF-free.
"""

import dataclasses
import math
import numbers
from typing import Any, Iterator, Mapping, NamedTuple, Optional

from tfhub_transfer import metrics
from tfhub_transfer import regimes
from tfhub_transfer import transferability

STATUSES = ("ok", "failed")
METRICS = tuple(metrics.METRICS)


class CellKey(NamedTuple):
  """The results-store key of a cell: content identities plus regime, seed and protocol id."""
  model: str
  dataset: str
  regime: str
  seed: int
  protocol: str


class ScoreKey(NamedTuple):
  """The key of a `--mode=score` row: content identities, seed and score protocol id."""
  model: str
  dataset: str
  seed: int
  protocol: str


KEY_FIELDS = CellKey._fields
SCORE_KEY_FIELDS = ScoreKey._fields
TRIAL_KEY_FIELDS = KEY_FIELDS + ("trial_id",)


def to_jsonable(value: Any) -> Any:
  """Plain-JSON copy of `value`: numpy scalars/arrays to Python, tuples to lists.

  Non-finite floats become None, since JSON has no NaN or infinity.

  Raises:
    TypeError: `value` holds an object JSON cannot represent.
  """
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
    return to_jsonable(value.tolist())
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if value is None or isinstance(value, (str, bool, int)):
    return value
  raise TypeError(f"Cannot store {value!r} (type {type(value).__name__}) in a results "
                  f"record: use str, int, float, bool, None, lists or dicts of them.")


def _default(field: dataclasses.Field) -> Any:
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return field.default


class _JsonMapping(Mapping[str, Any]):
  """Read-only mapping access to a record's JSON form (computed once, at construction)."""

  def __post_init__(self):
    object.__setattr__(self, "_json", self.to_json())

  def __getitem__(self, name: str) -> Any:
    return self._json[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._json)

  def __len__(self) -> int:
    return len(self._json)

  def to_json(self) -> dict[str, Any]:
    raise NotImplementedError


class _DetailedRecord(_JsonMapping):
  """A record with typed fields plus `details` (every other field of its JSON form): one
  check (`from_json`) and one JSON form (`to_json`) for results and score rows alike."""
  _NOUN = ""  # e.g. "results record", in error messages.
  _REQUIRED: tuple[str, ...] = ()  # Fields its JSON form must have.
  _JSON_DEFAULTS: Mapping[str, Any] = {}  # Filled in where a JSON form leaves them out.
  _OMITTED_WHEN_DEFAULT: tuple[str, ...] = ()  # Left out of `to_json` at their default.

  @classmethod
  def from_json(cls, data: Mapping[str, Any]):
    """Checks a record's JSON form (or a record) and returns the record.

    Raises:
      ValueError: a required field is missing or has a bad value, or a field a bad type.
    """
    if isinstance(data, cls):
      return data
    if not isinstance(data, Mapping):
      raise ValueError(f"A {cls._NOUN} must be a mapping, got {type(data).__name__}.")
    data = {**cls._JSON_DEFAULTS, **data}
    missing = [k for k in cls._REQUIRED if k not in data]
    if missing:
      raise ValueError(f"{cls._NOUN.capitalize()} lacks {missing}; every {cls._NOUN} needs "
                       f"{list(cls._REQUIRED)}. Got keys {sorted(data)}.")
    own, details = _split(cls, to_jsonable(data))
    return cls(**own, details=details)

  def to_json(self) -> dict[str, Any]:
    own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name != "details" and not (f.name in self._OMITTED_WHEN_DEFAULT
                                            and getattr(self, f.name) == _default(f))}
    return to_jsonable({**self.details, **own})


def _split(cls, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """`data` as (the dataclass's own fields, everything else)."""
  names = {f.name for f in dataclasses.fields(cls)} - {"details"}
  own = {k: v for k, v in data.items() if k in names}
  return own, {k: v for k, v in data.items() if k not in names}


@dataclasses.dataclass(frozen=True, eq=False)
class ResultRecord(_DetailedRecord):
  """One cell's stored outcome.

  Attributes:
    model, dataset, regime, seed, protocol: the key (`CellKey`).
    status: `ok` or `failed`.
    metric: the dataset's metric name (`metrics.METRICS`).
    val_metric, test_metric: fractions in [0, 1] (None when failed).
    error: what failed (None when ok).
    model_label, dataset_label: the key's model and dataset, readable.
    sources: where the weights and the dataset were ("model", "dataset"; see
      `identity.Identity`): the report marks an older record of the same sources superseded.
    created_at: ISO time the record was made.
    hparams: the chosen hyperparameters.
    predictions: the test predictions file (`predictions.entry`), relative to the workdir.
    details: every other field, plain JSON (config, sizes, timings, versions, ...).
  """
  _NOUN = "results record"
  _REQUIRED = KEY_FIELDS + ("status",)
  _JSON_DEFAULTS = {"protocol": ""}  # Records made by hand may leave the protocol out.
  # Left out of the JSON form while at their default (records made by hand, e.g. in tests,
  # need not carry them).
  _OMITTED_WHEN_DEFAULT = ("model_label", "dataset_label", "sources", "created_at",
                           "hparams", "predictions")

  model: str
  dataset: str
  regime: str
  seed: int
  protocol: str
  status: str
  metric: Optional[str] = None
  val_metric: Optional[float] = None
  test_metric: Optional[float] = None
  error: Optional[str] = None
  model_label: str = ""
  dataset_label: str = ""
  sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
  created_at: Optional[str] = None
  hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  predictions: Optional[Mapping[str, Any]] = None
  details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    check_key(self.key)
    if self.status not in STATUSES:
      raise ValueError(f"Record status={self.status!r}; expected one of {STATUSES}.")
    _check_error(self.error)
    if self.status == "ok":
      if self.metric not in METRICS:
        raise ValueError(f"Record with status 'ok' has metric={self.metric!r}; "
                         f"expected one of {METRICS}.")
      _check_fraction("test_metric", self.test_metric, required=True)
      _check_fraction("val_metric", self.val_metric, required=False)
    for name in ("hparams", "sources", "details"):
      if not isinstance(getattr(self, name), Mapping):
        raise ValueError(f"Record {name}={getattr(self, name)!r} must be a mapping.")
    if self.predictions is not None and not isinstance(self.predictions, Mapping):
      raise ValueError(f"Record predictions={self.predictions!r} must be a mapping or None.")
    object.__setattr__(self, "seed", int(self.seed))
    super().__post_init__()

  @property
  def key(self) -> CellKey:
    return CellKey(self.model, self.dataset, self.regime, self.seed, self.protocol)

  @property
  def display_model(self) -> str:
    return self.model_label or self.model

  @property
  def display_dataset(self) -> str:
    return self.dataset_label or self.dataset

  def status_line(self) -> str:
    """One line naming the stored cell, its protocol and its status (and error)."""
    return (f"{self.display_model} / {self.display_dataset} / {self.regime} / seed "
            f"{self.seed} [protocol {self.protocol}]: {self.status}"
            + (f": {self.error}" if self.error else ""))

  def summary_line(self) -> str:
    """One line for a terminal: the cell, its test and validation metric, what was chosen."""
    cell = f"{self.display_model} / {self.display_dataset} / {self.regime}"
    if self.status != "ok":
      return f"{cell}: FAILED: {self.error}"
    chosen = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in self.hparams.items())
    val = "n/a" if self.val_metric is None else f"{100 * self.val_metric:.2f}%"
    total_s = (self.details.get("timings") or {}).get("total_s", 0.0)
    return (f"{cell} (seed {self.seed}): test {self.metric} = {100 * self.test_metric:.2f}% "
            f"(validation {val}), chosen {chosen}, {total_s:.1f} s")


@dataclasses.dataclass(frozen=True, eq=False)
class TrialRecord(_JsonMapping):
  """One hyperparameter-search trial of a cell (`key` plus `trial_id`)."""
  model: str
  dataset: str
  regime: str
  seed: int
  protocol: str
  trial_id: str
  hparams: Mapping[str, Any]
  val_metric: Optional[float]
  status: str
  error: Optional[str] = None
  stored_at: Optional[str] = None

  def __post_init__(self):
    check_key(self.key)
    if self.status not in STATUSES:
      raise ValueError(f"Trial status={self.status!r}; expected one of {STATUSES}.")
    if not isinstance(self.hparams, Mapping):
      raise ValueError(f"Trial hparams={self.hparams!r} must be a dict of name -> value.")
    _check_error(self.error)
    object.__setattr__(self, "val_metric", to_jsonable(self.val_metric))
    _check_fraction("val_metric", self.val_metric, required=self.status == "ok")
    object.__setattr__(self, "trial_id", str(self.trial_id))
    object.__setattr__(self, "seed", int(self.seed))
    object.__setattr__(self, "hparams", to_jsonable(self.hparams))
    super().__post_init__()

  @property
  def key(self) -> CellKey:
    return CellKey(self.model, self.dataset, self.regime, self.seed, self.protocol)

  @classmethod
  def for_cell(cls, key: CellKey, trial_id: Any, **fields) -> "TrialRecord":
    return cls(*key, trial_id=trial_id, **fields)

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "TrialRecord":
    if isinstance(data, TrialRecord):
      return data
    own, extra = _split(cls, data)
    if extra or not isinstance(data, Mapping):
      raise ValueError(f"A trial record has fields {sorted(set(own) | set(extra))}; expected "
                       f"{[f.name for f in dataclasses.fields(cls)]}.")
    return cls(**own)

  def to_json(self) -> dict[str, Any]:
    return to_jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclasses.dataclass(frozen=True, eq=False)
class ScoreRecord(_DetailedRecord):
  """One `--mode=score` row: transferability scores of a (model, dataset, seed) cell.

  Attributes:
    model, dataset, seed, protocol: the key (`ScoreKey`).
    scores: estimator name -> score (None where an estimator refuses the dataset).
    model_label, dataset_label: readable names.
    created_at: ISO time.
    details: every other field, plain JSON (sizes, timings, versions, ...).
  """
  _NOUN = "score record"
  _REQUIRED = SCORE_KEY_FIELDS + ("scores",)

  model: str
  dataset: str
  seed: int
  protocol: str
  scores: Mapping[str, Optional[float]]
  model_label: str = ""
  dataset_label: str = ""
  created_at: Optional[str] = None
  details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for name in ("model", "dataset"):
      if not isinstance(getattr(self, name), str) or not getattr(self, name):
        raise ValueError(f"Score record {name}={getattr(self, name)!r} must be a non-empty "
                         f"string.")
    if not isinstance(self.protocol, str):
      raise ValueError(f"Score record protocol={self.protocol!r} must be a string.")
    _check_seed(self.seed)
    if not isinstance(self.scores, Mapping) or not all(
        v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))
        for v in self.scores.values()):
      raise ValueError(f"Score record scores={self.scores!r} must map estimator names to "
                       f"numbers (or None where an estimator refuses the dataset).")
    object.__setattr__(self, "seed", int(self.seed))
    super().__post_init__()

  @property
  def key(self) -> ScoreKey:
    return ScoreKey(self.model, self.dataset, self.seed, self.protocol)

  def summary_line(self) -> str:
    """One line for a terminal: the cell, each score as name=value, sizes and time."""
    names = [n for n in transferability.ESTIMATORS if n in self.scores] + sorted(
        n for n in self.scores if n not in transferability.ESTIMATORS)
    values = " ".join(f"{n}=n/a" if self.scores[n] is None else f"{n}={self.scores[n]:.4g}"
                      for n in names)
    sizes = self.details.get("sizes") or {}
    total_s = (self.details.get("timings") or {}).get("total_s", 0.0)
    return (f"{self.model_label or self.model} / {self.dataset_label or self.dataset} "
            f"(seed {self.seed}): {values} ({sizes.get('examples')} x {sizes.get('dim')} "
            f"trainval features, {total_s:.1f} s)")


def check_key(key: CellKey) -> None:
  """Raises ValueError unless `key` is a valid (model, dataset, regime, seed, protocol)."""
  model, dataset, regime, seed, protocol = key
  for name, value in (("model", model), ("dataset", dataset)):
    if not isinstance(value, str) or not value:
      raise ValueError(f"Record {name}={value!r} must be a non-empty string.")
  if not isinstance(protocol, str):
    raise ValueError(f"Record protocol={protocol!r} must be a string (a protocol id).")
  regimes.get_regime_spec(regime)
  _check_seed(seed)


def _check_seed(seed):
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise ValueError(f"Record seed={seed!r} must be an integer.")


def _check_error(error):
  if error is not None and not isinstance(error, str):
    raise ValueError(f"error={error!r} must be a string (e.g. the traceback) or None.")


def _check_fraction(name, value, *, required):
  if value is None and not required:
    return
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not 0.0 <= float(value) <= 1.0):
    hint = " If it is a percentage, divide it by 100." if (
        isinstance(value, numbers.Real) and 1 < value <= 100) else ""
    raise ValueError(f"Record {name}={value!r} must be a fraction in [0, 1].{hint}")
