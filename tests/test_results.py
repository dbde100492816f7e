"""Tests of the SQLite results store: concurrency, crash safety, upserts and exports."""

import contextlib
import csv
import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import numpy as np

from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results import store as results
from tfhub_transfer.results import workdir as workdir_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Child processes: a record carries a payload and its SHA-256, so a torn row would show.
_CHILD_PRELUDE = """
import hashlib, os, signal, sqlite3, sys, time
from tfhub_transfer.results import store as results

def record(model, i, payload_bytes, status="ok"):
  payload = os.urandom(payload_bytes // 2).hex()
  return {"model": model, "dataset": "cifar10", "regime": "logreg", "seed": i,
          "protocol": "p", "status": status, "error": None if status == "ok" else "boom",
          "metric": "top1",
          "val_metric": 0.5, "test_metric": (i % 100) / 100, "payload": payload,
          "sha256": hashlib.sha256(payload.encode()).hexdigest(), "writer": model}
"""

_CONCURRENT_WRITER = _CHILD_PRELUDE + """
path, name, go = sys.argv[1], sys.argv[2], sys.argv[5]
n, shared = int(sys.argv[3]), int(sys.argv[4])
open(go + "." + name, "w").close()  # Ready; wait until both are.
while not os.path.exists(go):
  time.sleep(0.001)
store = results.ResultsStore(path)
for i in range(n):
  store.put(record(name, i, 2000))
  time.sleep(0.01)  # Real runs write now and then; let the other writer in.
  if i < shared:
    store.put({**record("shared", i, 2000), "writer": name})
    store.put_trial("shared", "cifar10", "logreg", 0, f"t{i}", protocol="p",
                    hparams={"lr": i}, val_metric=0.5, status="ok")
"""

# Kills itself (SIGKILL) when the write after `k` committed ones is about to COMMIT: its
# 4 MB row has been inserted (and spilled into the WAL) but not committed.
_KILL_AT_COMMIT = _CHILD_PRELUDE + """
path, k = sys.argv[1], int(sys.argv[2])
store = results.ResultsStore(path)
real_connect = sqlite3.connect
commits = [0]
def trace(sql):
  if sql.strip().upper() == "COMMIT":
    commits[0] += 1
    if commits[0] > k:
      os.kill(os.getpid(), signal.SIGKILL)
def connect(*args, **kwargs):
  conn = real_connect(*args, **kwargs)
  conn.set_trace_callback(trace)
  return conn
sqlite3.connect = connect
for i in range(k + 1):
  store.put(record("m", i, 4_000_000 if i == k else 1000))
"""

_WRITE_FOREVER = _CHILD_PRELUDE + """
store = results.ResultsStore(sys.argv[1])
i = 0
while True:
  store.put(record("m", i, 200_000))
  i += 1
"""


def _spawn(script, *args):
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _record(model="resnet_50", dataset="cifar10", regime="logreg", seed=0, status="ok",
            protocol="", **extra):
  record = {"model": model, "dataset": dataset, "regime": regime, "seed": seed,
            "protocol": protocol, "status": status,
            "error": None if status == "ok" else "OOM", "metric": "top1",
            "val_metric": 0.8 if status == "ok" else None,
            "test_metric": 0.75 if status == "ok" else None, "hparams": {"l2": 1e-3},
            "sizes": {"train": 10}, "timings": {"fit": 1.5}, "versions": {"tf": "2.x"},
            "devices": ["CPU:0"], "config": {"batch_size": 64},
            "created_at": "2026-01-01T00:00:00+00:00"}
  record.update(extra)
  return record


class CellDirnameTest(absltest.TestCase):

  def test_distinct_keys_get_distinct_names_that_a_filesystem_takes(self):
    deep = "/root/.cache/bazel/_bazel_root/" + "x" * 200
    keys = [
        # Punctuation only: 'a b', 'a_b', 'a-b' and 'a/b' all read 'a_b' once sanitised.
        ("resnet_50", "folder:data/a b", "finetune", 0, "p"),
        ("resnet_50", "folder:data/a_b", "finetune", 0, "p"),
        ("resnet_50", "folder:data/a?b", "finetune", 0, "p"),
        ("resnet_50", "folder:data/a/b", "finetune", 0, "p"),
        # Non-ASCII names of one length that differ in case, and in letters.
        ("resnet_50", "folder:Ärger", "logreg", 0, "p"),
        ("resnet_50", "folder:ärger", "logreg", 0, "p"),
        ("resnet_50", "folder:Öl", "logreg", 0, "p"),
        ("resnet_50", "folder:Ül", "logreg", 0, "p"),
        # Long keys that differ only past the readable prefix.
        (f"hub:{deep}/hub", f"folder:{deep}/images", "logreg", 0, "p"),
        (f"hub:{deep}/hub", f"folder:{deep}/images", "logreg", 1, "p"),
        # Fields whose boundaries move: the joined text is the same.
        ("a__b", "c", "logreg", 0, "p"),
        ("a", "b__c", "logreg", 0, "p"),
    ]
    names = [workdir_lib.cell_dirname(key) for key in keys]
    self.assertLen(set(names), len(keys))
    self.assertEqual(names, [workdir_lib.cell_dirname(key) for key in keys])  # Stable.
    directory = self.create_tempdir().full_path
    for name in names:
      self.assertLessEqual(len(name.encode()), 120)
      self.assertRegex(name, r"__[0-9a-f]{16}$")  # Every name ends in its key's hash.
      predictions_lib.save(directory, name, predictions_lib.Predictions(
          labels=np.array([0, 1]), predicted=np.array([0, 0])))
    self.assertLen(os.listdir(directory), len(keys))


class ResultsStoreTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    self.path = os.path.join(self.dir, "results.sqlite")

  def assert_rows_intact(self, path):
    """Every row parses, matches its columns and its payload checksum."""
    conn = sqlite3.connect(path)
    self.assertEqual(conn.execute("PRAGMA integrity_check").fetchone()[0], "ok")
    rows = conn.execute("SELECT model, seed, status, test_metric, record FROM results").fetchall()
    conn.close()
    for model, seed, status, test_metric, text in rows:
      record = json.loads(text)
      self.assertEqual((record["model"], record["seed"], record["status"]),
                       (model, seed, status))
      self.assertEqual(record["test_metric"], test_metric)
      self.assertEqual(hashlib.sha256(record["payload"].encode()).hexdigest(),
                       record["sha256"])
    return rows

  def test_two_processes_write_concurrently(self):
    n, shared = 60, 20
    go = os.path.join(self.dir, "go")
    children = [_spawn(_CONCURRENT_WRITER, self.path, name, n, shared, go)
                for name in ("a", "b")]
    deadline = time.monotonic() + 30
    while not all(os.path.exists(f"{go}.{name}") for name in ("a", "b")):
      self.assertLess(time.monotonic(), deadline, "writers did not start")
      time.sleep(0.005)
    open(go, "w").close()  # Both open the (not yet created) store at once.
    for child in children:
      _, err = child.communicate(timeout=60)
      self.assertEqual(child.returncode, 0, err.decode())
    rows = self.assert_rows_intact(self.path)
    keys = [(model, seed) for model, seed, *_ in rows]
    self.assertLen(keys, len(set(keys)))
    self.assertCountEqual(keys, [(m, i) for m in ("a", "b") for i in range(n)]
                          + [("shared", i) for i in range(shared)])
    conn = sqlite3.connect(self.path)
    order = [m for (m,) in conn.execute(
        "SELECT model FROM results WHERE model != 'shared' ORDER BY rowid")]
    conn.close()
    self.assertGreaterEqual(sum(a != b for a, b in zip(order, order[1:])), 2,
                            "the writers did not interleave")
    store = results.ResultsStore(self.path)
    self.assertLen(store.trials(), shared)
    self.assertTrue(all(r["writer"] in ("a", "b") for r in store.records(model="shared")))

  def test_sigkill_before_commit_leaves_no_row(self):
    k = 3
    child = _spawn(_KILL_AT_COMMIT, self.path, k)
    child.communicate(timeout=60)
    self.assertEqual(child.returncode, -signal.SIGKILL)
    rows = self.assert_rows_intact(self.path)
    self.assertEqual(sorted(seed for _, seed, *_ in rows), list(range(k)))
    store = results.ResultsStore(self.path, timeout=5)
    self.assertIsNone(store.get("m", "cifar10", "logreg", k, "p"))
    self.assertTrue(store.put(_record(model="m", seed=k, protocol="p", payload="",
                                      sha256=hashlib.sha256(
        b"").hexdigest())))  # The killed writer's lock is gone.
    self.assertLen(store.records(), k + 1)

  def test_sigkill_while_writing_in_a_loop(self):
    child = _spawn(_WRITE_FOREVER, self.path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
      if (os.path.exists(self.path)
          and len(results.ResultsStore(self.path).records(status="ok")) >= 8):
        break
      time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=30)
    rows = self.assert_rows_intact(self.path)
    self.assertGreaterEqual(len(rows), 8)
    self.assertEqual(sorted(seed for _, seed, *_ in rows), list(range(len(rows))))

  def test_upsert(self):
    store = results.ResultsStore(self.path)
    self.assertTrue(store.put(_record(status="failed", error="first")))
    self.assertTrue(store.put(_record(status="failed", error="second")))
    self.assertEqual(store.get("resnet_50", "cifar10", "logreg", 0, "")["error"], "second")
    self.assertFalse(store.has_ok("resnet_50", "cifar10", "logreg", 0, ""))
    self.assertTrue(store.put(_record(test_metric=0.7)))
    self.assertTrue(store.has_ok("resnet_50", "cifar10", "logreg", 0, ""))
    with self.assertLogs(level="WARNING"):
      self.assertFalse(store.put(_record(status="failed", error="late crash")))
    self.assertEqual(store.get("resnet_50", "cifar10", "logreg", 0, "")["test_metric"], 0.7)
    self.assertTrue(store.put(_record(test_metric=0.72)))
    self.assertEqual(store.records(), [_record(test_metric=0.72)])
    self.assertTrue(store.has_ok("resnet_50", "cifar10", "logreg", 0, ""))
    # Another protocol of the same cell is another row.
    self.assertTrue(store.put(_record(test_metric=0.5, protocol="p2")))
    self.assertEqual(store.get("resnet_50", "cifar10", "logreg", 0, "p2")["test_metric"], 0.5)
    self.assertEqual(store.get("resnet_50", "cifar10", "logreg", 0, "")["test_metric"], 0.72)
    self.assertTrue(store.delete("resnet_50", "cifar10", "logreg", 0, "p2"))
    self.assertTrue(store.delete("resnet_50", "cifar10", "logreg", 0, ""))
    self.assertEqual(store.records(), [])

  def test_prediction_files_live_and_die_with_their_record(self):
    store = results.ResultsStore(self.path)
    folder = os.path.join(self.dir, predictions_lib.PREDICTIONS_DIR)
    first = predictions_lib.from_scores([0, 1, 2], np.eye(3)[[0, 2, 2]], multi_label=False)
    name = predictions_lib.save(folder, "cell", first)
    record = _record(predictions=predictions_lib.entry(name, first))
    self.assertTrue(store.replace(record))
    loaded = store.load_predictions(store.get("resnet_50", "cifar10", "logreg", 0, ""))
    np.testing.assert_array_equal(loaded.predicted, [0, 2, 2])
    np.testing.assert_array_equal(loaded.correct(), [True, False, True])
    self.assertEqual(os.listdir(folder), [name])  # No temporary file left behind.

    # A rerun writes a new file; storing its record removes the replaced record's file.
    second = predictions_lib.from_scores([0, 1, 2], np.eye(3), multi_label=False)
    other = predictions_lib.save(folder, "cell", second)
    self.assertNotEqual(other, name)
    self.assertTrue(store.replace(_record(predictions=predictions_lib.entry(other, second))))
    self.assertEqual(os.listdir(folder), [other])
    # A failed run does not replace an ok one, so the ok one's file stays.
    with self.assertLogs(level="WARNING"):
      self.assertFalse(store.replace(_record(status="failed")))
    self.assertEqual(os.listdir(folder), [other])
    self.assertTrue(store.delete("resnet_50", "cifar10", "logreg", 0, ""))
    self.assertEqual(os.listdir(folder), [])
    self.assertIsNone(store.load_predictions(record))  # The file is gone: None, no error.

  def test_multi_label_predictions_keep_scores_and_ignored_entries(self):
    labels = np.array([[1, 0, -1], [0, 1, 0]])
    scores = np.array([[2.0, -1.0, 3.0], [0.5, 0.25, -4.0]])
    saved = predictions_lib.from_scores(labels, scores, multi_label=True)
    name = predictions_lib.save(self.dir, "voc", saved)
    loaded = predictions_lib.load(os.path.join(self.dir, name))
    np.testing.assert_array_equal(loaded.labels, labels)
    np.testing.assert_allclose(loaded.scores, scores)
    # Right where the logit's sign matches the label; the ignored entry is never counted.
    np.testing.assert_array_equal(loaded.correct(), [[True, True, False],
                                                     [False, True, True]])
    with open(os.path.join(self.dir, "other.npz"), "wb") as f:
      np.savez(f, x=np.zeros(2))
    with self.assertRaisesRegex(ValueError, "not a tfhub_transfer predictions file"):
      predictions_lib.load(os.path.join(self.dir, "other.npz"))

  def test_a_store_of_an_older_schema_is_refused_naming_the_file(self):
    # Schema 2 keyed models and datasets by name: its rows cannot be matched to what ran.
    with contextlib.closing(sqlite3.connect(self.path)) as conn:
      conn.execute("CREATE TABLE results (model TEXT)")
      conn.execute("PRAGMA user_version = 2")
    with self.assertRaisesRegex(results.storage.StoreError,
                                "schema version 2.*by name, not content.*Move it out"):
      results.ResultsStore(self.path)

  def test_records_filters_and_plain_json(self):
    store = results.ResultsStore(self.dir)  # A directory means <dir>/results.sqlite.
    self.assertEqual(store.path, self.path)
    store.put(_record(seed=np.int64(1), test_metric=np.float32(0.5), note=(1, 2),
                      timings={"fit": float("nan")}))
    store.put(_record(regime="finetune", status="failed"))
    self.assertEqual(store.get("resnet_50", "cifar10", "logreg", 1, ""),
                     _record(seed=1, test_metric=0.5, note=[1, 2], timings={"fit": None}))
    self.assertEqual([r["regime"] for r in store.records(status="failed")], ["finetune"])
    self.assertEqual([r["seed"] for r in store.records(regime="logreg")], [1])
    self.assertIsNone(store.get("resnet_50", "cifar10", "scratch", 0, ""))
    with self.assertRaisesRegex(ValueError, "'done'"):
      store.records(status="done")

  def test_rejects_bad_records(self):
    store = results.ResultsStore(self.path)
    bad = _record()
    del bad["regime"]
    with self.assertRaisesRegex(ValueError, r"lacks \['regime'\]"):
      store.put(bad)
    with self.assertRaisesRegex(ValueError, "test_metric=75.0.*percentage, divide it by 100"):
      store.put(_record(test_metric=75.0))
    with self.assertRaisesRegex(ValueError, "'transfer'"):
      store.put(_record(regime="transfer"))
    with self.assertRaisesRegex(ValueError, "seed='0'"):
      store.put(_record(seed="0"))
    with self.assertRaisesRegex(ValueError, "metric='accuracy'"):
      store.put(_record(metric="accuracy"))
    with self.assertRaisesRegex(ValueError, "in-memory"):
      results.ResultsStore(":memory:")
    self.assertEqual(store.records(), [])

  def test_trials_are_idempotent(self):
    store = results.ResultsStore(self.path)
    cell = ("resnet_50", "cifar10", "finetune", 0)
    def put(trial_id, **kw):
      return store.put_trial(*cell, trial_id, protocol="p", **kw)
    put("t0", hparams={"lr": 0.1, "wd": 0.0}, val_metric=0.6, status="ok")
    put("t0", hparams={"lr": 0.1, "wd": 0.0}, val_metric=0.65, status="ok")
    self.assertFalse(put("t0", hparams={"lr": 0.1, "wd": 0.0}, val_metric=None,
                         status="failed", error="NaN loss"))
    put(1, hparams={"lr": 1.0}, val_metric=float("nan"), status="failed", error="diverged")
    trials = store.trials(*cell)
    self.assertEqual([(t["trial_id"], t["val_metric"], t["status"]) for t in trials],
                     [("1", None, "failed"), ("t0", 0.65, "ok")])
    self.assertEqual(trials[1]["hparams"], {"lr": 0.1, "wd": 0.0})
    self.assertLen(store.trials(status="ok"), 1)
    self.assertEqual(store.trials("other_model"), [])
    with self.assertRaisesRegex(ValueError, "val_metric=1.5"):
      put("t2", hparams={}, val_metric=1.5, status="ok")

  def test_csv_export_round_trip(self):
    store = results.ResultsStore(self.path)
    store.put(_record(test_metric=1 / 3, error=None, hparams={"l2": 0.1, "note": "a,b\n\"c\""}))
    store.put(_record(dataset="dtd", status="failed", error="line 1\nline 2, with comma"))
    csv_path = os.path.join(self.dir, "results.csv")
    self.assertEqual(store.export_csv(csv_path), 2)
    with open(csv_path, newline="") as f:
      rows = list(csv.DictReader(f))
    self.assertEqual(list(rows[0]), list(results.CSV_FIELDS))
    for row, record in zip(rows, store.records()):
      self.assertEqual(json.loads(row["record"]), record)
      self.assertEqual((row["model"], row["dataset"], row["regime"], int(row["seed"])),
                       (record["model"], record["dataset"], record["regime"], record["seed"]))
      self.assertEqual(row["error"], record["error"] or "")
      if record["status"] == "ok":
        self.assertEqual(float(row["test_metric"]), 1 / 3)
      else:
        self.assertEqual(row["test_metric"], "")

  def test_json_export_import_round_trip(self):
    store = results.ResultsStore(self.path)
    store.put(_record(test_metric=0.123456789012345))
    store.put(_record(model="hub:x/y", regime="scratch", seed=2, status="failed"))
    store.put_trial("resnet_50", "cifar10", "logreg", 0, "l2=0.001", protocol="",
                    hparams={"l2": 1e-3}, val_metric=0.8, status="ok")
    json_path = os.path.join(self.dir, "results.json")
    self.assertEqual(store.export_json(json_path), 2)
    with open(json_path) as f:
      self.assertEqual(json.load(f)["results"], [r.to_json() for r in store.records()])
    merged = results.ResultsStore(os.path.join(self.dir, "other", "results.sqlite"))
    self.assertEqual(merged.import_json(json_path), 2)
    self.assertEqual(merged.records(), store.records())
    def strip(trials):
      return [{k: v for k, v in t.items() if k != "stored_at"} for t in trials]
    self.assertLen(store.trials(), 1)
    self.assertEqual(strip(merged.trials()), strip(store.trials()))
    self.assertTrue(math.isclose(merged.records()[1]["test_metric"], 0.123456789012345,
                                 rel_tol=0, abs_tol=0))


if __name__ == "__main__":
  absltest.main()
