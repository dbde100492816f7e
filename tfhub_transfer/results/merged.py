"""A workdir's results: every host's store file, read together, read-only; and `forget`.

`read_workdir(workdir)` is how everything but the writer reads results (the report, a sweep's
"already done" check, the launcher): it lists `<workdir>/results/*.sqlite` (one file per
writing host, `store.ResultsStore.for_workdir`), opens each read-only and merges them; where
several files hold a key, the `ok` row wins over a failed one, then the latest. `forget`
removes a grid's stored results.
"""

import contextlib
import glob
import json
import os
import shutil
import sqlite3
import time
from typing import Any, Iterable, Optional, Protocol

from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results import storage
from tfhub_transfer.results import store as results
from tfhub_transfer.results import workdir as workdir_lib
from tfhub_transfer.results.records import KEY_FIELDS
from tfhub_transfer.results.records import SCORE_KEY_FIELDS
from tfhub_transfer.results.records import TRIAL_KEY_FIELDS
from tfhub_transfer.results.records import ResultRecord
from tfhub_transfer.results.records import ScoreRecord
from tfhub_transfer.results.records import TrialRecord
from tfhub_transfer.results.store import TRIAL_FIELDS


class ResultsReader(Protocol):
  """What both readers offer: one host's file (`store.ResultsStore`) and a workdir's files
  read together (`WorkdirResults`). The report, sweeps and `--mode=score` read through it."""

  @property
  def directory(self) -> str: ...

  def records(self, status: Optional[str] = None, *, model: Optional[str] = None,
              dataset: Optional[str] = None,
              regime: Optional[str] = None) -> list[ResultRecord]: ...

  def get(self, model: str, dataset: str, regime: str, seed: int,
          protocol: str) -> Optional[ResultRecord]: ...

  def has_ok(self, model: str, dataset: str, regime: str, seed: int, protocol: str) -> bool: ...

  def trials(self, model: Optional[str] = None, dataset: Optional[str] = None,
             regime: Optional[str] = None, seed: Optional[int] = None,
             protocol: Optional[str] = None, *,
             status: Optional[str] = None) -> list[TrialRecord]: ...

  def score_records(self, *, model: Optional[str] = None,
                    dataset: Optional[str] = None) -> list[ScoreRecord]: ...

  def get_score(self, model: str, dataset: str, seed: int,
                protocol: str) -> Optional[ScoreRecord]: ...

  def load_predictions(self, record: ResultRecord) -> Optional[predictions_lib.Predictions]: ...

  def export_csv(self, path: str) -> int: ...

  def export_json(self, path: str) -> int: ...


_READ_RETRIES = 5  # A file another host is writing may read torn for a moment over NFS.


class WorkdirResults:
  """Every results store of a workdir, read together and read-only (`read_workdir`).

  The files are listed again on each call, so stores of hosts that start later are seen.
  Where several files hold a key, the `ok` row wins over a failed one, then the latest.

  Args:
    workdir: the workdir; it must exist.
    timeout: seconds a read waits for a writer's lock.

  Raises:
    StoreError: the workdir does not exist.
  """

  def __init__(self, workdir: str, *, timeout: float = 60.0):
    if not os.path.isdir(workdir):
      raise storage.StoreError(workdir, "no such workdir",
                               "Pass the --workdir the runs wrote to; nothing was created")
    self.workdir = workdir
    self.timeout = timeout

  def __repr__(self):
    return f"WorkdirResults({self.workdir!r})"

  @property
  def directory(self) -> str:
    """The folder every store's record paths (prediction files) are relative to."""
    return self.workdir

  def load_predictions(self, record: ResultRecord) -> Optional[predictions_lib.Predictions]:
    """A stored record's test predictions (None: it has none, or the file is gone)."""
    return predictions_lib.load_for_record(self.directory, record)

  def paths(self) -> list[str]:
    """The store files read, in merge order (`results.store_paths`)."""
    return results.store_paths(self.workdir)

  def records(self, status: Optional[str] = None, *, model: Optional[str] = None,
              dataset: Optional[str] = None,
              regime: Optional[str] = None) -> list[ResultRecord]:
    """Stored records of every file, merged, sorted by key; each filter given must match."""
    where, params = results.where_clause(status=status, model=model, dataset=dataset,
                                         regime=regime)
    return [results.load_record(self.workdir, row[-1])
            for row in self._merged("results", ("record",), where, params)]

  def get(self, model: str, dataset: str, regime: str, seed: int,
          protocol: str) -> Optional[ResultRecord]:
    """The record stored under the key in any file (the merged one), or None."""
    rows = self._merged("results", ("record",), results.KEY_WHERE,
                        (model, dataset, regime, seed, protocol))
    return results.load_record(self.workdir, rows[0][-1]) if rows else None

  def has_ok(self, model: str, dataset: str, regime: str, seed: int, protocol: str) -> bool:
    """Whether any host stored the key as `ok` (so a rerun may skip it)."""
    sql = f"SELECT 1 FROM {{results}}{results.KEY_WHERE} AND status = 'ok'"
    key = (model, dataset, regime, seed, protocol)
    return any(self._read(path, sql, key, "results") for path in self.paths())

  def trials(self, model: Optional[str] = None, dataset: Optional[str] = None,
             regime: Optional[str] = None, seed: Optional[int] = None,
             protocol: Optional[str] = None, *,
             status: Optional[str] = None) -> list[TrialRecord]:
    """Stored trials of every file, merged (see `ResultsStore.trials`)."""
    where, params = results.where_clause(model=model, dataset=dataset, regime=regime,
                                         seed=seed, protocol=protocol, status=status)
    columns = tuple(f for f in TRIAL_FIELDS
                    if f not in TRIAL_KEY_FIELDS + ("status", "stored_at"))
    rows = self._merged("trials", columns, where, params, keys=TRIAL_KEY_FIELDS)
    out = []
    for row in rows:
      trial = dict(zip(TRIAL_KEY_FIELDS + ("status", "stored_at") + columns, row))
      trial["hparams"] = json.loads(trial["hparams"])
      out.append(TrialRecord(**{f: trial[f] for f in TRIAL_FIELDS}))
    return out

  def score_records(self, *, model: Optional[str] = None,
                    dataset: Optional[str] = None) -> list[ScoreRecord]:
    """Stored `--mode=score` rows of every file, merged (the latest per key), sorted by key."""
    where, params = results.where_clause(model=model, dataset=dataset)
    rows = self._merged("scores", ("record",), where, params, keys=SCORE_KEY_FIELDS,
                        status=False)
    return [ScoreRecord.from_json(json.loads(row[-1])) for row in rows]

  def get_score(self, model: str, dataset: str, seed: int,
                protocol: str) -> Optional[ScoreRecord]:
    """The score row any host stored under the key (the latest), or None."""
    where = " WHERE " + " AND ".join(f"{k} = ?" for k in SCORE_KEY_FIELDS)
    rows = self._merged("scores", ("record",), where, (model, dataset, seed, protocol),
                        keys=SCORE_KEY_FIELDS, status=False)
    return ScoreRecord.from_json(json.loads(rows[0][-1])) if rows else None

  def export_csv(self, path: str) -> int:
    """Writes the merged results as `ResultsStore.export_csv` does; returns #rows."""
    columns = tuple(f for f in results.CSV_FIELDS if f not in KEY_FIELDS + ("status",))
    rows = self._merged("results", columns, "", ())
    order = KEY_FIELDS + ("status", "stored_at") + columns
    results.write_csv_export(
        path, [[dict(zip(order, row))[f] for f in results.CSV_FIELDS] for row in rows])
    return len(rows)

  def export_json(self, path: str) -> int:
    """Writes the merged results, trials and scores as `ResultsStore.export_json`; returns
    #results."""
    return results.write_json_export(path, self.records(), self.trials(),
                                     self.score_records())

  def _merged(self, table, columns, where, params, *, keys=KEY_FIELDS,
              status=True) -> list[tuple]:
    """Rows (keys, status, stored_at, *columns) of every file; one per key, sorted by key.
    `status=False`: a table without statuses (scores), where the latest row wins; its rows
    get a status of None."""
    select = ", ".join(keys + ("status" if status else "NULL", "stored_at") + tuple(columns))
    best: dict[tuple, tuple] = {}
    for order, path in enumerate(self.paths()):
      for row in self._read(path, f"SELECT {select} FROM {{{table}}}{where}", params, table):
        key, state, stored_at = row[:len(keys)], row[len(keys)], row[len(keys) + 1]
        rank = (state == "ok", stored_at or "", order)
        if key not in best or rank > best[key][0]:
          best[key] = (rank, row)
    return [row for _, (_, row) in sorted(best.items(), key=lambda kv: _sort_key(kv[0]))]

  def _read(self, path: str, sql: str, params, table: str) -> list[tuple]:
    """Runs a SELECT on one file, read-only; `{table}` in `sql` becomes the table. A file
    without the table reads as empty; one of another schema version is refused."""
    deadline = time.monotonic() + self.timeout
    attempt = 0
    while True:
      try:
        with contextlib.closing(storage.connect_read_only(path, self.timeout)) as conn:
          if not conn.execute(f"PRAGMA table_info({table})").fetchall():
            return []
          version = conn.execute("PRAGMA user_version").fetchone()[0]
          if version != results.SCHEMA_VERSION:
            raise storage.StoreError(
                path, f"schema version {version}, not this tfhub_transfer's "
                f"{results.SCHEMA_VERSION}", "Move it out of the workdir's results/ folder "
                "(older files keyed models and datasets by name) and run the cells again")
          return [tuple(r) for r in conn.execute(sql.format(**{table: table}), params)]
      except sqlite3.Error as e:
        attempt += 1
        busy = "locked" in str(e) or "busy" in str(e)
        if busy and time.monotonic() < deadline or not busy and attempt < _READ_RETRIES:
          time.sleep(0.05 * attempt)
          continue
        raise storage.explain(path, e, writing=False) from e


def _sort_key(key: tuple) -> tuple:
  return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in key)


def read_workdir(workdir: str, **kwargs) -> WorkdirResults:
  """Every results store of `workdir`, read together, read-only (see `WorkdirResults`)."""
  return WorkdirResults(workdir, **kwargs)


# Forgetting cells.


def forget(workdir: str, *, models: Iterable[str], datasets: Iterable[str],
           regimes: Iterable[str], seeds: Iterable[int],
           include_ok: bool = False) -> list[dict[str, Any]]:
  """Removes the stored results of a grid's cells, so reports no longer show them and a run
  starts them afresh.

  A stored cell matches when the model (as given to --model, whatever its kwargs, weights or
  resolution), dataset (as given to --dataset) regime and seed are in the grid, under every
  protocol and content identity: a bad setting makes a variant of its own. Removed with each:
  its trials, its folders (`Workdir.cell_folders`: checkpoints, tuner state) and its
  prediction files. A record whose predictions path leads outside the workdir is logged as
  damaged and no file of it is deleted. It writes every host's store file: run it while no
  run writes to the workdir.

  Args:
    workdir: the workdir.
    models, datasets, regimes, seeds: the grid.
    include_ok: also remove `ok` results (default: only failed ones).

  Returns:
    The records removed.

  Raises:
    StoreError: the workdir does not exist, or a store cannot be written.
  """
  grid = (set(models), set(datasets), set(regimes), {int(s) for s in seeds})
  layout = workdir_lib.Workdir(workdir)
  forgotten = []
  for path in read_workdir(workdir).paths():
    store = results.ResultsStore(path, directory=workdir)
    matches = [r for r in store.records()
               if (include_ok or r.status == "failed") and _in_grid(r, grid)]
    if matches:
      store.delete_cells([r.key for r in matches])
      forgotten += matches
  for record in forgotten:
    predictions_lib.remove_for_record(workdir, record)
    name = workdir_lib.cell_dirname(record.key)
    targets = layout.cell_folders(record.key) + glob.glob(
        os.path.join(glob.escape(layout.predictions), glob.escape(name) + ".*"))
    for target in targets:
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
      elif os.path.lexists(target):
        os.remove(target)
  return forgotten


def _in_grid(record: ResultRecord, grid) -> bool:
  config = record.details.get("config") or {}
  models, datasets, regimes, seeds = grid
  names = {config.get("model"), record.model, record.model_label}
  dataset_names = {config.get("dataset"), record.dataset, record.dataset_label}
  return (bool(names & models) and bool(dataset_names & datasets)
          and record.regime in regimes and record.seed in seeds)
