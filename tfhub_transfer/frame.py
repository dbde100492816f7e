"""A workdir's stored results and transferability scores as pandas DataFrames.

`load_results(workdir)`: one row per cell.
Columns: the key (`model`, `dataset`: content identities, `tfhub_transfer.identity`; `regime`,
`seed`, `protocol`), their readable `model_label` and `dataset_label`, `status`, `metric`,
`val_metric`, `test_metric` (fractions), then the chosen hyperparameters as `hparams.<name>`,
the wall time per phase as `timings.<phase>` (seconds), the split sizes as `sizes.<split>`,
and `weights`, `devices`, `host`, `created_at`, `error`. A field a record lacks is NaN/None.
The full records stay in `merged.read_workdir(workdir).records()`.

`load_scores(workdir)`: one row per scored (model, dataset, seed, protocol) of `--mode=score`
(`tfhub_transfer.score`): the key, `model_label`, `dataset_label`, one column per estimator
(`transferability.ESTIMATORS`; NaN where it refused the dataset), `examples` and `dim` (the
trainval features scored), `total_s`, `created_at`. TF-free.
"""

import os
from typing import Any, Iterable, Mapping, Optional

import pandas as pd

from tfhub_transfer import transferability
from tfhub_transfer.results import merged
from tfhub_transfer.results import records as records_lib

LEADING_COLUMNS = records_lib.KEY_FIELDS + ("model_label", "dataset_label", "status", "metric",
                                            "val_metric", "test_metric")
TRAILING_COLUMNS = ("weights", "devices", "host", "created_at", "error")
FLATTENED = ("hparams", "timings", "sizes")  # Dict fields spread as `<field>.<name>`.


def stored_records(workdir: str) -> list[records_lib.ResultRecord]:
  """Every result record stored for `workdir`, by every host (the one place this module reads
  the stores).

  Raises:
    FileNotFoundError: `workdir` does not exist.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"No workdir {workdir!r}: pass the --workdir of a run.")
  return merged.read_workdir(workdir).records()


def results_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
  """Records (as stored) -> one row each; see the module docstring for the columns."""
  rows, flattened = [], {field: set() for field in FLATTENED}
  for record in records:
    row = {column: record.get(column) for column in LEADING_COLUMNS + TRAILING_COLUMNS}
    for field in ("model", "dataset"):  # Records made by hand may carry no labels.
      row[f"{field}_label"] = record.get(f"{field}_label") or record.get(field)
    row["devices"] = ", ".join(record.get("devices") or ()) or None
    for field in FLATTENED:
      for name, value in (record.get(field) or {}).items():
        row[f"{field}.{name}"] = value
        flattened[field].add(name)
    rows.append(row)
  # Phases in the order runners report them would vary by regime; total_s goes last.
  columns = list(LEADING_COLUMNS)
  for field in FLATTENED:
    names = sorted(flattened[field], key=lambda n: (n == "total_s", n))
    columns += [f"{field}.{name}" for name in names]
  frame = pd.DataFrame(rows, columns=columns + list(TRAILING_COLUMNS))
  for column in ("val_metric", "test_metric"):
    frame[column] = frame[column].astype(float)
  return frame


def scores_frame(records: Iterable[records_lib.ScoreRecord]) -> pd.DataFrame:
  """Score records -> one row each; see the module docstring for the columns."""
  records = list(records)
  found = {name for r in records for name in r.scores}
  estimators = [n for n in transferability.ESTIMATORS if n in found] + sorted(
      found - set(transferability.ESTIMATORS))
  rows = []
  for r in records:
    sizes = r.details.get("sizes") or {}
    rows.append({**dict(zip(records_lib.SCORE_KEY_FIELDS, r.key)),
                 "model_label": r.model_label or r.model,
                 "dataset_label": r.dataset_label or r.dataset,
                 **{n: r.scores.get(n) for n in estimators},
                 "examples": sizes.get("examples"), "dim": sizes.get("dim"),
                 "total_s": (r.details.get("timings") or {}).get("total_s"),
                 "created_at": r.created_at})
  columns = (list(records_lib.SCORE_KEY_FIELDS) + ["model_label", "dataset_label"] + estimators
             + ["examples", "dim", "total_s", "created_at"])
  frame = pd.DataFrame(rows, columns=columns)
  for name in estimators:
    frame[name] = frame[name].astype(float)
  return frame


def load_scores(workdir: str) -> pd.DataFrame:
  """A workdir's transferability scores as a DataFrame, one row per scored cell, by key.

  Args:
    workdir: the `--workdir` of the `--mode=score` runs (or `tfhub_transfer.score` calls).

  Returns:
    The frame (see the module docstring for its columns); empty, with the key columns, when
    nothing is scored yet.

  Raises:
    FileNotFoundError: `workdir` does not exist.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"No workdir {workdir!r}: pass the --workdir of a run.")
  return scores_frame(merged.read_workdir(workdir).score_records())


def load_results(workdir: str, *, status: Optional[str] = None) -> pd.DataFrame:
  """A workdir's results as a DataFrame, one row per stored cell, sorted by key.

  Args:
    workdir: the `--workdir` of the runs.
    status: only rows with this status (`ok` or `failed`); None: all.

  Returns:
    The frame (see the module docstring for its columns); empty, with the columns, when
    nothing is stored yet.

  Raises:
    FileNotFoundError: `workdir` does not exist.
    ValueError: `status` is not a record status.
  """
  if status is not None and status not in records_lib.STATUSES:
    raise ValueError(f"status={status!r}; expected one of {records_lib.STATUSES} or None.")
  return results_frame(r for r in stored_records(workdir)
                       if status is None or r["status"] == status)
