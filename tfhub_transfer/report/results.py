"""The results store: one SQLite file per workdir, safe to share between processes.

Each (model, dataset, regime, seed, protocol) key has at most one row, holding the key fields
as columns and the whole record (checked by `records.check_record`) as JSON. Every write is
one `BEGIN IMMEDIATE` transaction, so a process killed mid-write leaves the previous state,
never a half row. Several processes may write to the same file: the database runs in WAL
mode with a busy timeout, and a write that still finds the file locked is retried with
backoff. WAL needs a local filesystem (not NFS); put the workdir on local disk or write one
store per machine and merge them with `export_json` / `import_json`.
"""

import contextlib
import csv
import datetime
import json
import os
import random
import sqlite3
import time
from typing import Any, Callable, Iterable, Optional

from absl import logging

from tfhub_transfer.report import predictions as predictions_lib
from tfhub_transfer.report.records import KEY_FIELDS, STATUSES, TRIAL_FIELDS
from tfhub_transfer.report.records import TRIAL_KEY_FIELDS, check_record, check_trial
from tfhub_transfer.report.records import SCORE_KEY_FIELDS, check_score_record

RESULTS_FILENAME = "results.sqlite"
# 1: keyed by (model, dataset, regime, seed). 2: the protocol id joins the key.
SCHEMA_VERSION = 2
CSV_FIELDS = KEY_FIELDS + ("status", "metric", "val_metric", "test_metric", "error",
                           "created_at", "record")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  model TEXT NOT NULL, dataset TEXT NOT NULL, regime TEXT NOT NULL, seed INTEGER NOT NULL,
  protocol TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
  metric TEXT, val_metric REAL, test_metric REAL, error TEXT, created_at TEXT,
  stored_at TEXT NOT NULL,
  record TEXT NOT NULL,
  PRIMARY KEY (model, dataset, regime, seed, protocol));
CREATE TABLE IF NOT EXISTS trials (
  model TEXT NOT NULL, dataset TEXT NOT NULL, regime TEXT NOT NULL, seed INTEGER NOT NULL,
  protocol TEXT NOT NULL DEFAULT '',
  trial_id TEXT NOT NULL, hparams TEXT NOT NULL, val_metric REAL,
  status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
  error TEXT, stored_at TEXT NOT NULL,
  PRIMARY KEY (model, dataset, regime, seed, protocol, trial_id));
CREATE TABLE IF NOT EXISTS scores (
  model TEXT NOT NULL, dataset TEXT NOT NULL, seed INTEGER NOT NULL, protocol TEXT NOT NULL,
  scores TEXT NOT NULL, created_at TEXT, stored_at TEXT NOT NULL, record TEXT NOT NULL,
  PRIMARY KEY (model, dataset, seed, protocol));
"""


def _migrate_from_v1(conn: sqlite3.Connection) -> None:
  """Schema 1 -> 2: the protocol column joins the key; old rows get protocol ''.

  Their records stay as they were (a report shows them), but a run never takes them for its
  own: a current run's protocol id is never ''.
  """
  for table in ("results", "trials"):
    conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
  for statement in filter(str.strip, _SCHEMA.split(";")):
    conn.execute(statement)
  for table in ("results", "trials"):
    names = ", ".join(row[1] for row in conn.execute(f"PRAGMA table_info({table}_v1)"))
    conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_v1")
    conn.execute(f"DROP TABLE {table}_v1")


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class ResultsStore:
  """Results and tuner trials of one workdir, in one SQLite file.

  Connections are opened per call, so a store object may be shared with forked processes.

  Args:
    path: the database file (created with its parent dirs if missing); an existing
      directory means `<path>/results.sqlite`.
    timeout: seconds a call waits for another process's write lock before failing.
  """

  def __init__(self, path: str, *, timeout: float = 60.0):
    path = os.fspath(path)
    if path in ("", ":memory:") or path.startswith("file:"):
      raise ValueError(f"ResultsStore needs a file path, got {path!r} (each call opens its "
                       f"own connection, so an in-memory database would be empty).")
    if os.path.isdir(path):
      path = os.path.join(path, RESULTS_FILENAME)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    self.timeout = timeout
    self._jitter = random.Random()
    self._retry(self._init_schema)

  @classmethod
  def for_workdir(cls, workdir: str, **kwargs) -> "ResultsStore":
    """The store at `<workdir>/results.sqlite`."""
    return cls(os.path.join(workdir, RESULTS_FILENAME), **kwargs)

  def __repr__(self):
    return f"ResultsStore({self.path!r})"

  def _connect(self) -> sqlite3.Connection:
    conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
    return conn

  def _retry(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Runs fn on a fresh connection, retrying while another process holds the lock."""
    deadline = time.monotonic() + self.timeout
    delay = 0.005
    while True:
      try:
        with contextlib.closing(self._connect()) as conn:
          return fn(conn)
      except sqlite3.OperationalError as e:
        if "locked" not in str(e) and "busy" not in str(e):
          raise
        if time.monotonic() > deadline:
          raise TimeoutError(
              f"Results store {self.path} stayed locked for {self.timeout}s ({e}). Another "
              f"process holds a write lock; raise `timeout`, or if the workdir is on a "
              f"network filesystem, move it to local disk (SQLite WAL needs one).") from e
        time.sleep(delay * self._jitter.uniform(0.5, 1.5))
        delay = min(2 * delay, 0.25)

  def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Runs fn inside one `BEGIN IMMEDIATE` transaction (all or nothing), with retries."""
    return self._retry(lambda conn: _in_transaction(conn, fn))

  def _init_schema(self, conn):
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
      raise RuntimeError(f"Could not put {self.path} in WAL mode; is it on a local disk?")
    def create(conn):
      version = conn.execute("PRAGMA user_version").fetchone()[0]
      if version > SCHEMA_VERSION:
        raise RuntimeError(f"{self.path} has schema version {version}, newer than this "
                           f"tfhub_transfer's {SCHEMA_VERSION}: upgrade tfhub_transfer.")
      if version == 1:
        _migrate_from_v1(conn)
      for statement in filter(str.strip, _SCHEMA.split(";")):
        conn.execute(statement)
      conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    _in_transaction(conn, create)

  # Results.

  def put(self, record: dict[str, Any]) -> bool:
    """Stores a record, replacing the cell's row unless that row is `ok` and this is not.

    Args:
      record: a `run_experiment` record; extra keys are kept in the JSON.

    Returns:
      True if the record was stored; False if it failed and an `ok` row was kept.

    Raises:
      ValueError: a key field is missing or invalid.
    """
    return self.put_many([record]) == 1

  def put_many(self, records: Iterable[dict[str, Any]]) -> int:
    """Stores several records in one transaction (see `put`); returns how many were stored."""
    rows = [_result_row(check_record(r)) for r in records]
    def insert(conn):
      stored = 0
      for row in rows:
        if _upsert(conn, "results", row, KEY_FIELDS):
          stored += 1
        else:
          logging.warning("Kept the ok result of %s; not replaced by a failed run.",
                          tuple(row[k] for k in KEY_FIELDS))
      return stored
    return self._write(insert)

  def get(self, model: str, dataset: str, regime: str, seed: int,
          protocol: str = "") -> Optional[dict]:
    """The record stored under the key, or None if there is none."""
    rows = self._select(f"SELECT record FROM results{_KEY_WHERE}",
                        (model, dataset, regime, seed, protocol))
    return json.loads(rows[0][0]) if rows else None

  def has_ok(self, model: str, dataset: str, regime: str, seed: int,
             protocol: str = "") -> bool:
    """Whether the key has a successful result (so a rerun may skip it)."""
    return bool(self._select(f"SELECT 1 FROM results{_KEY_WHERE} AND status = 'ok'",
                             (model, dataset, regime, seed, protocol)))

  def records(self, status: Optional[str] = None, *, model: Optional[str] = None,
              dataset: Optional[str] = None, regime: Optional[str] = None) -> list[dict]:
    """Stored records, sorted by key; each filter given must match."""
    where, params = _where(status=status, model=model, dataset=dataset, regime=regime)
    return [json.loads(r[0]) for r in self._select(
        f"SELECT record FROM results{where} ORDER BY {', '.join(KEY_FIELDS)}", params)]

  def delete(self, model: str, dataset: str, regime: str, seed: int,
             protocol: str = "") -> bool:
    """Removes a key's result and its predictions file (to force a rerun); returns whether
    there was one."""
    record = self.get(model, dataset, regime, seed, protocol)
    deleted = self._write(lambda conn: conn.execute(
        f"DELETE FROM results{_KEY_WHERE}", (model, dataset, regime, seed, protocol)
    ).rowcount == 1)
    if deleted:
      predictions_lib.remove_for_record(self.directory, record)
    return deleted

  # Prediction files: `predictions.PREDICTIONS_DIR` beside the database.

  @property
  def directory(self) -> str:
    """The folder record paths (e.g. of prediction files) are relative to."""
    return os.path.dirname(os.path.abspath(self.path))

  def replace(self, record: dict[str, Any]) -> bool:
    """`put`, then removes the predictions file of the record it replaced (if another).

    Returns:
      Whether the record was stored (see `put`).
    """
    old = self.get(*({"protocol": "", **record}.get(k) for k in KEY_FIELDS))
    stored = self.put(record)
    if stored:
      predictions_lib.remove_for_record(self.directory, old, keep=record)
    return stored

  def load_predictions(self, record: dict[str, Any]) -> Optional[predictions_lib.Predictions]:
    """A stored record's test predictions (None: it has none, or the file is gone)."""
    return predictions_lib.load_for_record(self.directory, record)

  def _select(self, sql, params=()):
    return self._retry(lambda conn: [tuple(r) for r in conn.execute(sql, params)])

  # Tuner trials.

  def put_trial(self, model: str, dataset: str, regime: str, seed: int, trial_id: str, *,
                hparams: dict[str, Any], val_metric: Optional[float], status: str,
                error: Optional[str] = None, protocol: str = "") -> bool:
    """Stores one hyperparameter-search trial; idempotent on (key, trial_id).

    A later write of the same trial replaces it, except that a failed trial does not
    replace a successful one. Returns whether the row was written.

    Raises:
      ValueError: a bad key, status or val_metric.
    """
    row = _trial_row(model, dataset, regime, seed, protocol, trial_id, hparams=hparams,
                     val_metric=val_metric, status=status, error=error)
    return self._write(lambda conn: _upsert(conn, "trials", row, TRIAL_KEY_FIELDS))

  def trials(self, model: Optional[str] = None, dataset: Optional[str] = None,
             regime: Optional[str] = None, seed: Optional[int] = None,
             protocol: Optional[str] = None, *,
             status: Optional[str] = None) -> list[dict[str, Any]]:
    """Stored trials (dicts with the `put_trial` fields), sorted by key and trial_id."""
    where, params = _where(model=model, dataset=dataset, regime=regime, seed=seed,
                           protocol=protocol, status=status)
    rows = self._select(f"SELECT {', '.join(TRIAL_FIELDS)} FROM trials{where} "
                        f"ORDER BY {', '.join(KEY_FIELDS)}, trial_id", params)
    return [{**dict(zip(TRIAL_FIELDS, row)),
             "hparams": json.loads(row[TRIAL_FIELDS.index("hparams")])} for row in rows]

  # Transferability scores (`--mode=score`).

  def put_score(self, record: dict[str, Any]) -> None:
    """Stores a `scoring.score_cell` row, replacing the key's previous row.

    Raises:
      ValueError: a key field or the scores are missing or invalid.
    """
    record = check_score_record(record)
    row = {**{k: record[k] for k in SCORE_KEY_FIELDS},
           "scores": json.dumps(record["scores"], sort_keys=True),
           "created_at": record.get("created_at"), "stored_at": _now(),
           "record": json.dumps(record, sort_keys=True)}
    self._write(lambda conn: conn.execute(
        f"INSERT OR REPLACE INTO scores ({', '.join(row)}) "
        f"VALUES ({', '.join('?' * len(row))})", tuple(row.values())))

  def get_score(self, model: str, dataset: str, seed: int,
                protocol: str) -> Optional[dict[str, Any]]:
    """The score row stored under the key, or None."""
    rows = self._select("SELECT record FROM scores WHERE " + " AND ".join(
        f"{k} = ?" for k in SCORE_KEY_FIELDS), (model, dataset, seed, protocol))
    return json.loads(rows[0][0]) if rows else None

  def score_records(self, *, model: Optional[str] = None,
                    dataset: Optional[str] = None) -> list[dict[str, Any]]:
    """Stored score rows, sorted by key; each filter given must match."""
    where, params = _where(model=model, dataset=dataset)
    return [json.loads(r[0]) for r in self._select(
        f"SELECT record FROM scores{where} ORDER BY {', '.join(SCORE_KEY_FIELDS)}", params)]

  # Export and merge.

  def export_csv(self, path: str) -> int:
    """Writes the results, one row per cell: key columns plus the full record as JSON
    (the table's own `CSV_FIELDS` columns, as stored).

    Returns:
      The number of rows written.
    """
    rows = self._select(f"SELECT {', '.join(CSV_FIELDS)} FROM results "
                        f"ORDER BY {', '.join(KEY_FIELDS)}")
    with open(path, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(CSV_FIELDS)
      writer.writerows(rows)
    return len(rows)

  def export_json(self, path: str) -> int:
    """Writes `{"schema_version", "results", "trials", "scores"}`; returns #results."""
    records = self.records()
    with open(path, "w") as f:
      json.dump({"schema_version": SCHEMA_VERSION, "results": records,
                 "trials": self.trials(), "scores": self.score_records()}, f, indent=1,
                sort_keys=True)
    return len(records)

  def import_json(self, path: str) -> int:
    """Merges an `export_json` file (e.g. from another machine) with `put` semantics.

    Returns:
      The number of results stored.
    """
    with open(path) as f:
      data = json.load(f)
    if not isinstance(data, dict) or "results" not in data:
      raise ValueError(f"{path} is not an export_json file: expected an object with "
                       f"'results' (and 'trials').")
    trials = [_trial_row(*({"protocol": "", **t}[k] for k in TRIAL_KEY_FIELDS),
                         hparams=t["hparams"], val_metric=t["val_metric"], status=t["status"],
                         error=t["error"])
              for t in data.get("trials", [])]
    stored = self.put_many(data["results"])
    self._write(lambda conn: [_upsert(conn, "trials", t, TRIAL_KEY_FIELDS) for t in trials])
    for score in data.get("scores", []):
      self.put_score(score)
    return stored


def _upsert(conn: sqlite3.Connection, table: str, row: dict[str, Any],
            keys: tuple[str, ...]) -> bool:
  """Inserts or replaces a row (a failed row never replaces an ok one); True if written."""
  return conn.execute(
      f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) "
      f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
      + ", ".join(f"{c} = excluded.{c}" for c in row if c not in keys)
      + f" WHERE excluded.status = 'ok' OR {table}.status != 'ok'",
      tuple(row.values())).rowcount == 1


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]):
  conn.execute("BEGIN IMMEDIATE")
  try:
    result = fn(conn)
    conn.execute("COMMIT")
    return result
  except BaseException:
    if conn.in_transaction:
      conn.execute("ROLLBACK")
    raise


_KEY_WHERE = " WHERE " + " AND ".join(f"{k} = ?" for k in KEY_FIELDS)


def _where(**filters) -> tuple[str, tuple[Any, ...]]:
  """A ` WHERE a = ? AND ...` clause and its parameters for the filters that are not None."""
  if filters.get("status") not in (None,) + STATUSES:
    raise ValueError(f"status={filters['status']!r}; expected None or one of {STATUSES}.")
  given = {k: v for k, v in filters.items() if v is not None}
  return ((" WHERE " + " AND ".join(f"{k} = ?" for k in given)) if given else "",
          tuple(given.values()))


def _trial_row(model, dataset, regime, seed, protocol, trial_id, *, hparams, val_metric,
               status, error):
  trial = check_trial(model, dataset, regime, seed, protocol, trial_id, hparams=hparams,
                      val_metric=val_metric, status=status, error=error)
  return {**trial, "hparams": json.dumps(trial["hparams"]), "stored_at": _now()}


def _result_row(record: dict[str, Any]) -> dict[str, Any]:
  """The `results` table's columns of a checked record (`CSV_FIELDS`, plus stored_at)."""
  return {**{k: record.get(k) for k in CSV_FIELDS[:-1]}, "stored_at": _now(),
          "record": json.dumps(record, sort_keys=True)}
