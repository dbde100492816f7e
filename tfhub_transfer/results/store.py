"""The results store: one SQLite file per writing host, read together per workdir.

A workdir's results live in `<workdir>/results/<host>.sqlite` (`ResultsStore.for_workdir`):
each host writes only its own file, which its processes share, so SQLite's locking never has
to work across a network filesystem, where it often does not
(https://www.sqlite.org/useovernet.html). `merged.read_workdir` reads every store file of a
workdir read-only and merges them: the report, a sweep's "already done" check and the launcher
read through it. The host's name is `$TFHUB_TRANSFER_HOST`, else the machine's.

Each (model, dataset, regime, seed, protocol) key has at most one row per file, holding the
key fields as columns and the whole record (`records.ResultRecord`, checked on every write and
read) as JSON; where
several files hold a key, an `ok` row wins over a failed one, then the latest. Every write is
one `BEGIN IMMEDIATE` transaction, so a process killed mid-write leaves the previous state,
never a half row; a write that finds the file locked is retried with backoff. New files use
SQLite's rollback journal, not WAL, whose shared-memory index would make every reader, even a
read-only one, write to the file's side files from its own host.

A damaged, read-only or full store raises `storage.StoreError`: one message naming the file,
what is wrong and what to do.
"""

import contextlib
import csv
import dataclasses
import datetime
import glob
import json
import os
import random
import re
import socket
import sqlite3
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from absl import logging

from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results import storage
from tfhub_transfer.results import workdir as workdir_lib
from tfhub_transfer.results.records import KEY_FIELDS
from tfhub_transfer.results.records import SCORE_KEY_FIELDS
from tfhub_transfer.results.records import STATUSES
from tfhub_transfer.results.records import TRIAL_KEY_FIELDS
from tfhub_transfer.results.records import ResultRecord
from tfhub_transfer.results.records import ScoreRecord
from tfhub_transfer.results.records import TrialRecord

RESULTS_FILENAME = "results.sqlite"  # The file of a store opened on a directory.
HOST_ENV = "TFHUB_TRANSFER_HOST"
# 3: the model and dataset key fields are content identities (`tfhub_transfer.identity`).
# Files of older schemas are refused (nothing was released before it).
SCHEMA_VERSION = 3
TRIAL_FIELDS = tuple(f.name for f in dataclasses.fields(TrialRecord))
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
_TABLES = ("results", "trials", "scores")


def host_name() -> str:
  """The name of this host's store file: `$TFHUB_TRANSFER_HOST`, else the machine's name."""
  name = os.environ.get(HOST_ENV) or socket.gethostname() or "localhost"
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def store_paths(workdir: str) -> list[str]:
  """A workdir's store files, `results/*.sqlite`, by name."""
  return sorted(glob.glob(os.path.join(glob.escape(workdir_lib.Workdir(workdir).results),
                                       "*.sqlite")))


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class ResultsStore:
  """Results and tuner trials in one SQLite file: a host's store in a workdir
  (`for_workdir`), or any file. A whole workdir is read with `merged.read_workdir`.

  Connections are opened per call, so a store object may be shared with forked processes.

  Args:
    path: the database file (created with its parent dirs if missing); an existing
      directory means `<path>/results.sqlite`.
    timeout: seconds a call waits for another process's write lock before failing.
    directory: the folder record paths (prediction files) are relative to (default: the
      file's folder; `for_workdir`: the workdir).

  Raises:
    StoreError: the file cannot be created, opened or read (damaged, read-only, full).
  """

  def __init__(self, path: str, *, timeout: float = 60.0, directory: Optional[str] = None):
    path = os.fspath(path)
    if path in ("", ":memory:") or path.startswith("file:"):
      raise ValueError(f"ResultsStore needs a file path, got {path!r} (each call opens its "
                       f"own connection, so an in-memory database would be empty).")
    if os.path.isdir(path):
      path = os.path.join(path, RESULTS_FILENAME)
    try:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as e:
      raise storage.explain(path, e, writing=True) from e
    self.path = path
    self.timeout = timeout
    self._directory = directory
    self._jitter = random.Random()
    self._retry(self._init_schema)

  @classmethod
  def for_workdir(cls, workdir: str, *, host: Optional[str] = None,
                  **kwargs) -> "ResultsStore":
    """This host's store in a workdir, `<workdir>/results/<host>.sqlite`: the one a run
    writes to (`host`: default `host_name()`). Its records' paths are relative to the
    workdir, as every store file's of the workdir."""
    return cls(workdir_lib.Workdir(workdir).store_path(host or host_name()),
               directory=workdir, **kwargs)

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
          raise storage.explain(self.path, e, writing=True) from e
        if time.monotonic() > deadline:
          raise storage.StoreError(
              self.path, f"stayed locked for {self.timeout}s ({e})",
              "Another process of this host holds a write lock: let it finish, or raise "
              "`timeout`. Processes of other hosts write their own files") from e
        time.sleep(delay * self._jitter.uniform(0.5, 1.5))
        delay = min(2 * delay, 0.25)
      except sqlite3.Error as e:
        raise storage.explain(self.path, e, writing=True) from e

  def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Runs fn inside one `BEGIN IMMEDIATE` transaction (all or nothing), with retries."""
    return self._retry(lambda conn: _in_transaction(conn, fn))

  def _init_schema(self, conn):
    # The journal mode is left as the file has it: a new file gets SQLite's rollback journal
    # (see the module docstring); a store from before per-host files keeps its WAL.
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if (conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        and tables >= set(_TABLES)):
      storage.check_writable(self.path)  # Up to date: nothing to write until a result.
      return
    def create(conn):
      version = conn.execute("PRAGMA user_version").fetchone()[0]
      if version > SCHEMA_VERSION:
        raise storage.StoreError(
            self.path, f"schema version {version}, newer than this tfhub_transfer's "
            f"{SCHEMA_VERSION}", "Upgrade tfhub_transfer")
      if version not in (0, SCHEMA_VERSION):
        raise storage.StoreError(
            self.path, f"schema version {version}, made by an older tfhub_transfer whose keys "
            f"named models and datasets by name, not content", "Move it out of the workdir "
            "and run the cells again: its results cannot be matched to what was run")
      for statement in filter(str.strip, _SCHEMA.split(";")):
        conn.execute(statement)
      conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    _in_transaction(conn, create)

  # Results.

  def put(self, record: Union[ResultRecord, Mapping[str, Any]]) -> bool:
    """Stores a record, replacing the cell's row unless that row is `ok` and this is not.

    Args:
      record: a `ResultRecord`, or its JSON form (checked by `ResultRecord.from_json`).

    Returns:
      True if the record was stored; False if it failed and an `ok` row was kept.

    Raises:
      ValueError: a key field is missing or invalid.
    """
    return self.put_many([record]) == 1

  def put_many(self, records: Iterable[Union[ResultRecord, Mapping[str, Any]]]) -> int:
    """Stores several records in one transaction (see `put`); returns how many were stored."""
    rows = [_result_row(ResultRecord.from_json(r)) for r in records]
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
          protocol: str) -> Optional[ResultRecord]:
    """The record stored under the key, or None if there is none."""
    rows = self._select(f"SELECT record FROM results{KEY_WHERE}",
                        (model, dataset, regime, seed, protocol))
    return load_record(self.path, rows[0][0]) if rows else None

  def has_ok(self, model: str, dataset: str, regime: str, seed: int, protocol: str) -> bool:
    """Whether the key has a successful result (so a rerun may skip it)."""
    return bool(self._select(f"SELECT 1 FROM results{KEY_WHERE} AND status = 'ok'",
                             (model, dataset, regime, seed, protocol)))

  def records(self, status: Optional[str] = None, *, model: Optional[str] = None,
              dataset: Optional[str] = None,
              regime: Optional[str] = None) -> list[ResultRecord]:
    """Stored records, sorted by key; each filter given must match."""
    where, params = where_clause(status=status, model=model, dataset=dataset, regime=regime)
    return [load_record(self.path, r[0]) for r in self._select(
        f"SELECT record FROM results{where} ORDER BY {', '.join(KEY_FIELDS)}", params)]

  def delete(self, model: str, dataset: str, regime: str, seed: int, protocol: str) -> bool:
    """Removes a key's result and its predictions file (to force a rerun); returns whether
    there was one."""
    record = self.get(model, dataset, regime, seed, protocol)
    deleted = self._write(lambda conn: conn.execute(
        f"DELETE FROM results{KEY_WHERE}", (model, dataset, regime, seed, protocol)
    ).rowcount == 1)
    if deleted:
      predictions_lib.remove_for_record(self.directory, record)
    return deleted

  # Prediction files: `predictions.PREDICTIONS_DIR` under `directory`.

  @property
  def directory(self) -> str:
    """The folder record paths (e.g. of prediction files) are relative to."""
    return self._directory or os.path.dirname(os.path.abspath(self.path))

  def replace(self, record: Union[ResultRecord, Mapping[str, Any]]) -> bool:
    """`put`, then removes the predictions file of the record it replaced (if another).

    Returns:
      Whether the record was stored (see `put`).
    """
    record = ResultRecord.from_json(record)
    old = self.get(*record.key)
    stored = self.put(record)
    if stored:
      predictions_lib.remove_for_record(self.directory, old, keep=record)
    return stored

  def load_predictions(self, record: ResultRecord) -> Optional[predictions_lib.Predictions]:
    """A stored record's test predictions (None: it has none, or the file is gone)."""
    return predictions_lib.load_for_record(self.directory, record)

  def delete_cells(self, keys: Iterable[Sequence[Any]]) -> tuple[int, int]:
    """Removes the results and the trials of each (model, dataset, regime, seed, protocol)
    key, in one transaction; returns (#results, #trials) removed."""
    keys = [tuple(k) for k in keys]
    def delete(conn):
      counts = [0, 0]
      for key in keys:
        counts[0] += conn.execute(f"DELETE FROM results{KEY_WHERE}", key).rowcount
        counts[1] += conn.execute(f"DELETE FROM trials{KEY_WHERE}", key).rowcount
      return tuple(counts)
    return self._write(delete)

  def _select(self, sql, params=()):
    return self._retry(lambda conn: [tuple(r) for r in conn.execute(sql, params)])

  # Tuner trials.

  def put_trial(self, model: str, dataset: str, regime: str, seed: int, trial_id: str, *,
                hparams: dict[str, Any], val_metric: Optional[float], status: str,
                protocol: str, error: Optional[str] = None) -> bool:
    """Stores one hyperparameter-search trial; idempotent on (key, trial_id).

    A later write of the same trial replaces it, except that a failed trial does not
    replace a successful one. Returns whether the row was written.

    Raises:
      ValueError: a bad key, status or val_metric.
    """
    row = _trial_row(TrialRecord(model, dataset, regime, seed, protocol, trial_id,
                                 hparams=hparams, val_metric=val_metric, status=status,
                                 error=error))
    return self._write(lambda conn: _upsert(conn, "trials", row, TRIAL_KEY_FIELDS))

  def trials(self, model: Optional[str] = None, dataset: Optional[str] = None,
             regime: Optional[str] = None, seed: Optional[int] = None,
             protocol: Optional[str] = None, *,
             status: Optional[str] = None) -> list[TrialRecord]:
    """Stored trials, sorted by key and trial_id."""
    where, params = where_clause(model=model, dataset=dataset, regime=regime, seed=seed,
                           protocol=protocol, status=status)
    rows = self._select(f"SELECT {', '.join(TRIAL_FIELDS)} FROM trials{where} "
                        f"ORDER BY {', '.join(KEY_FIELDS)}, trial_id", params)
    return [TrialRecord(**{**dict(zip(TRIAL_FIELDS, row)),
                           "hparams": json.loads(row[TRIAL_FIELDS.index("hparams")])})
            for row in rows]

  # Transferability scores (`--mode=score`).

  def put_score(self, record: Union[ScoreRecord, Mapping[str, Any]]) -> None:
    """Stores a `scoring.score_cell` row, replacing the key's previous row.

    Raises:
      ValueError: a key field or the scores are missing or invalid.
    """
    record = ScoreRecord.from_json(record)
    row = {**record.key._asdict(), "scores": json.dumps(dict(record.scores), sort_keys=True),
           "created_at": record.created_at, "stored_at": _now(),
           "record": json.dumps(record.to_json(), sort_keys=True)}
    self._write(lambda conn: conn.execute(
        f"INSERT OR REPLACE INTO scores ({', '.join(row)}) "
        f"VALUES ({', '.join('?' * len(row))})", tuple(row.values())))

  def get_score(self, model: str, dataset: str, seed: int,
                protocol: str) -> Optional[ScoreRecord]:
    """The score row stored under the key, or None."""
    rows = self._select("SELECT record FROM scores WHERE " + " AND ".join(
        f"{k} = ?" for k in SCORE_KEY_FIELDS), (model, dataset, seed, protocol))
    return ScoreRecord.from_json(json.loads(rows[0][0])) if rows else None

  def score_records(self, *, model: Optional[str] = None,
                    dataset: Optional[str] = None) -> list[ScoreRecord]:
    """Stored score rows, sorted by key; each filter given must match."""
    where, params = where_clause(model=model, dataset=dataset)
    return [ScoreRecord.from_json(json.loads(r[0])) for r in self._select(
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
    write_csv_export(path, rows)
    return len(rows)

  def export_json(self, path: str) -> int:
    """Writes `{"schema_version", "results", "trials", "scores"}`; returns #results."""
    return write_json_export(path, self.records(), self.trials(), self.score_records())

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
    trials = [_trial_row(TrialRecord.from_json({**t, "stored_at": None}))
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


KEY_WHERE = " WHERE " + " AND ".join(f"{k} = ?" for k in KEY_FIELDS)


def where_clause(**filters) -> tuple[str, tuple[Any, ...]]:
  """A ` WHERE a = ? AND ...` clause and its parameters for the filters that are not None."""
  if filters.get("status") not in (None,) + STATUSES:
    raise ValueError(f"status={filters['status']!r}; expected None or one of {STATUSES}.")
  given = {k: v for k, v in filters.items() if v is not None}
  return ((" WHERE " + " AND ".join(f"{k} = ?" for k in given)) if given else "",
          tuple(given.values()))


def _trial_row(trial: TrialRecord) -> dict[str, Any]:
  return {**trial.to_json(), "hparams": json.dumps(trial.to_json()["hparams"]),
          "stored_at": _now()}


def _result_row(record: ResultRecord) -> dict[str, Any]:
  """The `results` table's columns of a record (`CSV_FIELDS`, plus stored_at)."""
  data = record.to_json()
  return {**{k: data.get(k) for k in CSV_FIELDS[:-1]}, "stored_at": _now(),
          "record": json.dumps(data, sort_keys=True)}


def load_record(path: str, text: str) -> ResultRecord:
  """A stored record's JSON text, checked.

  Raises:
    StoreError: the row does not hold a valid record (edited or damaged by hand).
  """
  try:
    return ResultRecord.from_json(json.loads(text))
  except ValueError as e:  # JSONDecodeError is a ValueError.
    raise storage.StoreError(
        path, f"holds a record that is not valid ({e})",
        "Restore the file from a backup, or remove the row's cell with --mode=forget") from e


def write_csv_export(path: str, rows: Iterable[Sequence[Any]]) -> None:
  with storage.atomic_open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(CSV_FIELDS)
    writer.writerows(rows)


def write_json_export(path: str, records: Sequence[ResultRecord],
                      trials: Sequence[TrialRecord], scores: Sequence[ScoreRecord]) -> int:
  with storage.atomic_open(path) as f:
    json.dump({"schema_version": SCHEMA_VERSION,
               "results": [r.to_json() for r in records],
               "trials": [t.to_json() for t in trials],
               "scores": [s.to_json() for s in scores]}, f, indent=1, sort_keys=True)
  return len(records)
