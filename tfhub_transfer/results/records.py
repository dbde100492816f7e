"""What a stored result or tuner trial holds: its key, its fields and their valid values.

A result record is the dict `run_experiment` stores for one cell: (model, dataset, regime,
seed) under one protocol (`config.ExperimentConfig.protocol`, the id of the settings the
outcome depends on; "" for records made by hand or before protocols were recorded).
`check_record` and `check_trial` validate one and return its plain-JSON copy, which is what
`results.ResultsStore` stores and the report reads. `summary_line` is its one-line text.
"""

import math
import numbers
import hashlib
import re
from typing import Any, Optional

from tfhub_transfer import metrics
from tfhub_transfer import regimes
from tfhub_transfer import transferability

STATUSES = ("ok", "failed")
METRICS = tuple(metrics.METRICS)
KEY_FIELDS = ("model", "dataset", "regime", "seed", "protocol")
TRIAL_KEY_FIELDS = KEY_FIELDS + ("trial_id",)
TRIAL_FIELDS = TRIAL_KEY_FIELDS + ("hparams", "val_metric", "status", "error", "stored_at")


def to_jsonable(value: Any) -> Any:
  """Plain-JSON copy of `value`: numpy scalars/arrays to Python, tuples to lists.

  Non-finite floats become None, since JSON has no NaN or infinity.

  Raises:
    TypeError: `value` holds an object JSON cannot represent.
  """
  if isinstance(value, dict):
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


# File names are at most 255 bytes on common filesystems; a cell's name leaves room for the
# suffixes added to it (a predictions file's ".<token>.npz", a temporary name's prefix).
CELL_DIRNAME_MAX = 200


def cell_dirname(model: str, dataset: str, regime: str, seed: int, protocol: str = "") -> str:
  """A directory name for a key's cell: its tuner state, checkpoints, logs, predictions.

  A name longer than `CELL_DIRNAME_MAX` (a Hub model or image folder with a long path) keeps
  its start and ends with a hash of the whole key, so distinct cells keep distinct names.
  """
  raw = f"{model}__{dataset}__{regime}__seed{seed}__{protocol}"
  name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", raw)
  if len(name) <= CELL_DIRNAME_MAX:
    return name
  digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
  return f"{name[:CELL_DIRNAME_MAX - 18]}__{digest}"


def check_record(record: dict[str, Any]) -> dict[str, Any]:
  """Validates a `run_experiment` record and returns its plain-JSON copy.

  Raises:
    ValueError: a key field is missing or has a bad value.
  """
  if not isinstance(record, dict):
    raise ValueError(f"A results record must be a dict, got {type(record).__name__}.")
  record = {"protocol": "", **record}
  missing = [k for k in KEY_FIELDS + ("status",) if k not in record]
  if missing:
    raise ValueError(f"Results record lacks {missing}; every record needs "
                     f"{list(KEY_FIELDS + ('status',))}. Got keys {sorted(record)}.")
  check_key(*(record[k] for k in KEY_FIELDS))
  if record["status"] not in STATUSES:
    raise ValueError(f"Record status={record['status']!r}; expected one of {STATUSES}.")
  _check_error(record.get("error"))
  if record["status"] == "ok":
    if record.get("metric") not in METRICS:
      raise ValueError(f"Record with status 'ok' has metric={record.get('metric')!r}; "
                       f"expected one of {METRICS}.")
    _check_fraction("test_metric", record.get("test_metric"), required=True)
    _check_fraction("val_metric", record.get("val_metric"), required=False)
  out = to_jsonable(record)
  out["seed"] = int(record["seed"])
  return out


def check_key(model: str, dataset: str, regime: str, seed: int, protocol: str = "") -> None:
  """Raises ValueError unless (model, dataset, regime, seed, protocol) is a valid key."""
  for name, value in (("model", model), ("dataset", dataset)):
    if not isinstance(value, str) or not value:
      raise ValueError(f"Record {name}={value!r} must be a non-empty string.")
  if not isinstance(protocol, str):
    raise ValueError(f"Record protocol={protocol!r} must be a string (a protocol id).")
  regimes.get_regime_spec(regime)
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise ValueError(f"Record seed={seed!r} must be an integer.")


def check_trial(model: str, dataset: str, regime: str, seed: int, protocol: str,
                trial_id: Any, *, hparams: dict[str, Any], val_metric: Optional[float],
                status: str, error: Optional[str]) -> dict[str, Any]:
  """Validates one hyperparameter-search trial and returns it as a plain-JSON dict.

  Returns:
    The `TRIAL_FIELDS` but `stored_at`; `trial_id` as a string, `hparams` as a plain dict.

  Raises:
    ValueError: a bad key, status, hparams, error or val_metric.
  """
  check_key(model, dataset, regime, seed, protocol)
  if status not in STATUSES:
    raise ValueError(f"Trial status={status!r}; expected one of {STATUSES}.")
  if not isinstance(hparams, dict):
    raise ValueError(f"Trial hparams={hparams!r} must be a dict of name -> value.")
  _check_error(error)
  val_metric = to_jsonable(val_metric)
  _check_fraction("val_metric", val_metric, required=status == "ok")
  return {"model": model, "dataset": dataset, "regime": regime, "seed": int(seed),
          "protocol": protocol, "trial_id": str(trial_id), "hparams": to_jsonable(hparams),
          "val_metric": val_metric, "status": status, "error": error}


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


def summary_line(record: dict[str, Any]) -> str:
  """One line for a terminal: the cell, its test and validation metric, what was chosen."""
  r = record
  if r["status"] != "ok":
    return f"{r['model']} / {r['dataset']} / {r['regime']}: FAILED: {r['error']}"
  chosen = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in r["hparams"].items())
  return (f"{r['model']} / {r['dataset']} / {r['regime']} (seed {r['seed']}): test "
          f"{r['metric']} = {100 * r['test_metric']:.2f}% (validation "
          f"{100 * r['val_metric']:.2f}%), chosen {chosen}, "
          f"{r['timings']['total_s']:.1f} s")


def label_protocol_variants(loaded: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Renames models measured under several protocols, so no table mixes protocols.

  Where one (regime, model) has records under more than one protocol (say a step-budget
  study), each record's model becomes `model [k=v, ...]`, listing the protocol settings that
  differ between them; everything else is returned unchanged.
  """
  groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
  for r in loaded:
    groups.setdefault((r["regime"], r["model"]), []).append(r)
  out = []
  for group in groups.values():
    settings = {r.get("protocol", ""): r.get("protocol_settings") or {} for r in group}
    if len(settings) < 2:
      out += group
      continue
    names = sorted({k for s in settings.values() for k in s})
    differing = [k for k in names if len({repr(s.get(k)) for s in settings.values()}) > 1]
    for r in group:
      s = settings[r.get("protocol", "")]
      suffix = (", ".join(f"{k}={s.get(k)}" for k in differing) if differing
                else f"protocol {r.get('protocol') or 'unrecorded'}")
      out.append({**r, "model": f"{r['model']} [{suffix}]"})
  return out


def unconverged(loaded: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The ok records whose solver did not converge at a fit the result rests on (their
  `convergence` field: fit name -> {"converged", "iterations", "max_abs_grad"})."""
  return [r for r in loaded if r["status"] == "ok" and any(
      isinstance(fit, dict) and not fit.get("converged", True)
      for fit in (r.get("convergence") or {}).values())]


# Transferability scores (`--mode=score`): one row per (model, dataset, seed, score protocol).
SCORE_KEY_FIELDS = ("model", "dataset", "seed", "protocol")


def check_score_record(record: dict[str, Any]) -> dict[str, Any]:
  """Validates a `scoring.score_cell` row and returns its plain-JSON copy.

  Raises:
    ValueError: a key field is missing or bad, or `scores` is not name -> number or None.
  """
  if not isinstance(record, dict):
    raise ValueError(f"A score record must be a dict, got {type(record).__name__}.")
  missing = [k for k in SCORE_KEY_FIELDS + ("scores",) if k not in record]
  if missing:
    raise ValueError(f"Score record lacks {missing}; every score record needs "
                     f"{list(SCORE_KEY_FIELDS + ('scores',))}. Got keys {sorted(record)}.")
  for name in ("model", "dataset"):
    if not isinstance(record[name], str) or not record[name]:
      raise ValueError(f"Score record {name}={record[name]!r} must be a non-empty string.")
  if not isinstance(record["protocol"], str):
    raise ValueError(f"Score record protocol={record['protocol']!r} must be a string.")
  if isinstance(record["seed"], bool) or not isinstance(record["seed"], numbers.Integral):
    raise ValueError(f"Score record seed={record['seed']!r} must be an integer.")
  scores = record["scores"]
  if not isinstance(scores, dict) or not all(
      v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))
      for v in scores.values()):
    raise ValueError(f"Score record scores={scores!r} must map estimator names to numbers "
                     f"(or None where an estimator refuses the dataset).")
  out = to_jsonable(record)
  out["seed"] = int(record["seed"])
  return out


def score_summary_line(record: dict[str, Any]) -> str:
  """One line for a terminal: the cell, each score as name=value, sizes and time."""
  scores = record["scores"]
  names = [n for n in transferability.ESTIMATORS if n in scores] + sorted(
      n for n in scores if n not in transferability.ESTIMATORS)
  values = " ".join(f"{name}=n/a" if scores[name] is None else f"{name}={scores[name]:.4g}"
                    for name in names)
  sizes = record.get("sizes", {})
  return (f"{record['model']} / {record['dataset']} (seed {record['seed']}): {values} "
          f"({sizes.get('examples')} x {sizes.get('dim')} trainval features, "
          f"{record.get('timings', {}).get('total_s', 0.0):.1f} s)")
