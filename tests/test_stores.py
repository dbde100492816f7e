"""A workdir's results stores: one file per host, read together; and the storage faults of a
user's bad day (a damaged store, a read-only one, a full disk) through the real CLI: in this
process (tests/cli_runner.py) where no mount is needed, else in a process of its own."""

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest

from tests import cli_runner
from tests import fakes
from tfhub_transfer.results import merged as stores
from tfhub_transfer.results import storage
from tfhub_transfer.results import store as results
from tfhub_transfer.results import workdir as workdir_lib

# A host's writer: 30 cells of its own and 10 shared with the other host, written
# interleaved with it; its host name comes from $TFHUB_TRANSFER_HOST, as on a real host.
_HOST_WRITER = """
import os, sys, time
from tfhub_transfer.results import store as results
workdir, go, shared_status = sys.argv[1], sys.argv[2], sys.argv[3]
host = os.environ["TFHUB_TRANSFER_HOST"]
open(go + "." + host, "w").close()
while not os.path.exists(go):
  time.sleep(0.001)
store = results.ResultsStore.for_workdir(workdir)
def record(model, seed, status):
  return {"model": model, "dataset": "dtd", "regime": "finetune", "seed": seed,
          "protocol": "p", "status": status, "error": None if status == "ok" else "OOM",
          "metric": "top1",
          "val_metric": 0.5 if status == "ok" else None,
          "test_metric": 0.25 if status == "ok" else None, "writer": host}
for i in range(30):
  store.put(record(host, i, "ok"))
  store.put_trial(host, "dtd", "finetune", i, "t0", protocol="p", hparams={"lr": 0.1},
                  val_metric=0.5, status="ok")
  if i < 10:
    store.put(record("shared", i, shared_status))
  time.sleep(0.005)
"""


def _record(model="resnet_50", seed=0, status="ok", protocol="", **extra):
  return {"model": model, "dataset": "dtd", "regime": "logreg", "seed": seed,
          "protocol": protocol, "status": status, "error": None if status == "ok" else "boom",
          "metric": "top1", "val_metric": 0.5 if status == "ok" else None,
          "test_metric": 0.25 if status == "ok" else None, **extra}


def _sha256(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _rows(path):
  with contextlib.closing(sqlite3.connect(path)) as conn:
    return sorted(conn.execute("SELECT model, seed, status, record FROM results"))


def _one_error_line(test, stderr):
  """The tool's one error line (TensorFlow's start-up chatter aside), and no traceback."""
  test.assertNotIn("Traceback", stderr)
  (line,) = [x for x in stderr.splitlines() if x.startswith("tfhub_transfer: ")]
  return line


def _namespaces_work():
  return shutil.which("unshare") and subprocess.run(
      ["unshare", "-rm", "true"], capture_output=True, check=False).returncode == 0


def _in_namespace(script, timeout=600):
  """Runs a shell script as root of a new user + mount namespace, where it may mount a small
  tmpfs (a disk that fills up) or a read-only bind mount (root ignores file modes). The
  mounts vanish with it."""
  return subprocess.run(["unshare", "-rm", "sh", "-c", "set -e\n" + script],
                        cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(), capture_output=True,
                        text=True, timeout=timeout, check=False)


class HostStoresTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))

  def test_two_hosts_write_their_own_files_and_every_reader_sees_both(self):
    go = os.path.join(self.workdir, "go")
    children = []
    for host, shared_status in (("host-a", "failed"), ("host-b", "ok")):
      env = fakes.subprocess_env(TFHUB_TRANSFER_HOST=host)
      children.append(subprocess.Popen(
          [sys.executable, "-c", _HOST_WRITER, self.workdir, go, shared_status],
          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline = time.monotonic() + 60
    while not all(os.path.exists(f"{go}.host-{h}") for h in "ab"):
      self.assertLess(time.monotonic(), deadline, "writers did not start")
      time.sleep(0.005)
    open(go, "w").close()
    for child in children:
      _, err = child.communicate(timeout=120)
      self.assertEqual(child.returncode, 0, err.decode())

    files = {os.path.basename(p): p for p in results.store_paths(self.workdir)}
    self.assertEqual(sorted(files), ["host-a.sqlite", "host-b.sqlite"])
    for name, path in files.items():  # Each host's file holds what that host wrote, only.
      writers = {json.loads(r[3])["writer"] for r in _rows(path)}
      self.assertEqual(writers, {name[:-len(".sqlite")]})
      self.assertLen(_rows(path), 40)
      with contextlib.closing(sqlite3.connect(path)) as conn:
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "delete")
        self.assertEqual(conn.execute("PRAGMA integrity_check").fetchone()[0], "ok")

    merged = stores.read_workdir(self.workdir)
    records = merged.records()
    self.assertLen(records, 70)  # 30 + 30 own cells, 10 shared: each key once.
    shared = [r for r in records if r["model"] == "shared"]
    self.assertEqual({(r["status"], r["writer"]) for r in shared}, {("ok", "host-b")})
    self.assertTrue(merged.has_ok("shared", "dtd", "finetune", 3, "p"))
    self.assertTrue(merged.has_ok("host-a", "dtd", "finetune", 29, "p"))
    self.assertFalse(merged.has_ok("host-a", "dtd", "finetune", 30, "p"))
    self.assertEqual(merged.get("host-b", "dtd", "finetune", 7, "p")["writer"], "host-b")
    self.assertLen(merged.trials(), 60)
    self.assertEqual(merged.records(), sorted(records, key=lambda r: (r["model"], r["seed"])))

  def test_merge_prefers_ok_then_the_latest(self):
    a = results.ResultsStore.for_workdir(self.workdir, host="a")
    b = results.ResultsStore.for_workdir(self.workdir, host="b")
    b.put(_record(seed=0, status="failed"))
    a.put(_record(seed=0, test_metric=0.1))  # ok beats failed, whichever file.
    a.put(_record(seed=1, status="failed"))
    b.put(_record(seed=1, test_metric=0.2))
    a.put(_record(seed=2, test_metric=0.3))
    time.sleep(1.1)  # stored_at has one-second resolution.
    b.put(_record(seed=2, test_metric=0.4))  # Both ok: the later one.
    merged = stores.read_workdir(self.workdir)
    self.assertEqual([r["test_metric"] for r in merged.records()], [0.1, 0.2, 0.4])
    csv_path, json_path = (os.path.join(self.workdir, n) for n in ("r.csv", "r.json"))
    self.assertEqual(merged.export_csv(csv_path), 3)
    self.assertEqual(merged.export_json(json_path), 3)
    restored = results.ResultsStore(os.path.join(self.workdir, "restored.sqlite"))
    self.assertEqual(restored.import_json(json_path), 3)
    self.assertEqual(restored.records(), merged.records())

  def test_a_store_file_of_an_older_schema_is_refused_naming_it(self):
    results.ResultsStore.for_workdir(self.workdir, host="new").put(_record(seed=0))
    old = workdir_lib.Workdir(self.workdir).store_path("old")
    with contextlib.closing(sqlite3.connect(old)) as conn:
      conn.execute("CREATE TABLE results (model TEXT)")  # What schema 2 named by name.
      conn.execute("PRAGMA user_version = 2")
    before = _sha256(old)
    with self.assertRaisesRegex(storage.StoreError, f"{old}: schema version 2"):
      stores.read_workdir(self.workdir).records()
    self.assertEqual(_sha256(old), before)  # Only read.

  def test_forget_removes_failed_cells_everywhere(self):
    a = results.ResultsStore.for_workdir(self.workdir, host="a")
    b = results.ResultsStore.for_workdir(self.workdir, host="b")
    bad = _record(seed=0, status="failed", protocol="p_bad",
                  config={"model": "resnet_50", "image_size": -3})
    bad_key = ("resnet_50", "dtd", "logreg", 0, "p_bad")
    a.put(bad)
    a.put_trial("resnet_50", "dtd", "logreg", 0, "t0", protocol="p_bad", hparams={},
                val_metric=None, status="failed", error="boom")
    b.put(_record(seed=0, status="failed", model="resnet_50@random", protocol="p2",
                  config={"model": "resnet_50"}))
    b.put(_record(seed=0, protocol="p_ok"))
    b.put(_record(seed=1, status="failed"))  # Another seed: not in the grid.
    cell = workdir_lib.Workdir(self.workdir).cell_dir(bad_key)
    tuner = workdir_lib.Workdir(self.workdir).cell_folders(bad_key)[1]
    os.makedirs(os.path.join(cell, "backup"))
    os.makedirs(os.path.join(tuner, "trial_0"))
    predictions = os.path.join(self.workdir, "predictions",
                               workdir_lib.cell_dirname(bad_key) + ".1234abcd.npz")
    os.makedirs(os.path.dirname(predictions))
    open(predictions, "w").close()

    forgotten = stores.forget(self.workdir, models=["resnet_50"], datasets=["dtd"],
                              regimes=["logreg"], seeds=[0])
    self.assertCountEqual([(r["model"], r["protocol"]) for r in forgotten],
                          [("resnet_50", "p_bad"), ("resnet_50@random", "p2")])
    merged = stores.read_workdir(self.workdir)
    self.assertEqual([(r["seed"], r["status"]) for r in merged.records()],
                     [(0, "ok"), (1, "failed")])
    self.assertEmpty(merged.trials())
    self.assertFalse(os.path.exists(cell))
    self.assertFalse(os.path.exists(tuner))
    self.assertFalse(os.path.exists(predictions))
    forgotten = stores.forget(self.workdir, models=["resnet_50"], datasets=["dtd"],
                              regimes=["logreg"], seeds=[0], include_ok=True)
    self.assertEqual([r["protocol"] for r in forgotten], ["p_ok"])

  def test_a_missing_workdir_is_refused_not_created(self):
    missing = os.path.join(self.workdir, "typo")
    with self.assertRaisesRegex(storage.StoreError, f"{missing}: no such workdir"):
      stores.read_workdir(missing)
    self.assertFalse(os.path.exists(missing))


class StorageFaultTest(absltest.TestCase):
  """Each fault through the CLI: one line naming the file and what to do, a non-zero exit,
  and every stored byte as it was. A fault that needs a mount (a read-only or full disk)
  runs the CLI in a user + mount namespace; the others run it in this process."""

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    self.workdir = os.path.join(self.tmp, "work")
    self.good = results.ResultsStore.for_workdir(self.workdir, host="a")
    self.good.put_many([_record(model=m, seed=0) for m in ("resnet_50", "inception_v3")])

  def test_damaged_store(self):
    damaged = os.path.join(self.workdir, "results", "b.sqlite")
    with open(damaged, "wb") as f:
      f.write(b"\x00garbage where a SQLite header should be" * 200)
    hashes = {p: _sha256(p) for p in (damaged, self.good.path)}
    code, stderr = cli_runner.run_in_process("--mode=report", "--workdir=" + self.workdir)
    self.assertEqual(code, 1, stderr)
    line = _one_error_line(self, "\n".join(stderr))
    self.assertIn(f"{damaged}: damaged, not a readable SQLite database", line)
    self.assertIn("restore it from a backup or from the last report's export", line)
    self.assertIn("import_json('<workdir>/report/results.json')", line)
    self.assertEqual({p: _sha256(p) for p in hashes}, hashes)

  def test_missing_workdir(self):
    missing = os.path.join(self.tmp, "typo")
    code, stderr = cli_runner.run_in_process("--mode=report", "--workdir=" + missing)
    self.assertEqual(code, 2, stderr)
    self.assertIn(f"--workdir={missing}: no such directory",
                  _one_error_line(self, "\n".join(stderr)))
    self.assertFalse(os.path.exists(missing))

  @absltest.skipUnless(_namespaces_work(), "needs unshare -rm (user + mount namespaces)")
  def test_read_only_store_is_reported_on_and_refuses_writes(self):
    before = _sha256(self.good.path)
    out = os.path.join(self.tmp, "elsewhere")
    done = _in_namespace(f"""
      mount --bind {self.workdir} {self.workdir}
      mount -o remount,bind,ro {self.workdir}
      {sys.executable} -m tfhub_transfer.cli --mode=report --workdir={self.workdir} \\
          --report_dir={out} > {self.tmp}/report.out
      echo report rc=$?
      TFHUB_TRANSFER_HOST=a {sys.executable} -m tfhub_transfer.cli --mode=forget \\
          --model=resnet_50 --dataset=dtd --regime=logreg --workdir={self.workdir} \\
          --forget_ok || echo forget rc=$?
      """)
    self.assertIn("report rc=0", done.stdout, done.stderr[-3000:])
    with open(os.path.join(out, "results.json")) as f:
      self.assertLen(json.load(f)["results"], 2)
    self.assertIn("forget rc=1", done.stdout)
    self.assertIn(f"{self.good.path}: read-only", _one_error_line(self, done.stderr))
    self.assertEqual(_sha256(self.good.path), before)
    self.assertLen(stores.read_workdir(self.workdir).records(), 2)

  @absltest.skipUnless(_namespaces_work(), "needs unshare -rm (user + mount namespaces)")
  def test_full_disk_during_a_run_keeps_the_store(self):
    # The workdir's results/ folder on a 256 KiB disk, filled up after the store was made;
    # the run's logistic regression computes, then its write fails.
    hub = fakes.make_tiny_savedmodel(os.path.join(self.tmp, "hub"), feature_dim=4)
    results_dir = os.path.join(self.workdir, "results")
    saved = os.path.join(self.tmp, "saved")
    shutil.copytree(results_dir, saved)
    done = _in_namespace(f"""
      mount -t tmpfs -o size=256k tmpfs {results_dir}
      cp {saved}/* {results_dir}/
      dd if=/dev/zero of={results_dir}/filler bs=4k 2>/dev/null || true
      TFHUB_TRANSFER_HOST=a {sys.executable} -m tfhub_transfer.cli --model=hub:{hub} \\
          --dataset=digits --regime=logreg --image_size=16 --max_examples=30 \\
          --l2_grid_size=3 --workdir={self.workdir} --data_dir={fakes.digits_data_dir()} \\
          || echo run rc=$?
      rm {results_dir}/filler
      {sys.executable} -c "
import sqlite3; conn = sqlite3.connect('{self.good.path}')
print('integrity', conn.execute('PRAGMA integrity_check').fetchone()[0])
print('rows', sorted(conn.execute('SELECT model, seed, record FROM results')))"
      """)
    self.assertIn("run rc=1", done.stdout, done.stderr[-3000:])
    line = _one_error_line(self, done.stderr)
    self.assertIn(f"{self.good.path}: the disk is full", line)
    self.assertIn("what was stored is intact. Free space", line)
    self.assertIn("integrity ok", done.stdout)
    self.assertIn(f"rows {sorted((m, s, r) for m, s, _, r in _rows(saved + '/a.sqlite'))}",
                  done.stdout)

  @absltest.skipUnless(_namespaces_work(), "needs unshare -rm (user + mount namespaces)")
  def test_full_disk_during_the_report_keeps_the_previous_one(self):
    out = os.path.join(self.tmp, "report")
    code, stderr = cli_runner.run_in_process("--mode=report", "--workdir=" + self.workdir,
                                             "--report_dir=" + out)
    self.assertEqual(code, 0, stderr)
    self.good.put(_record(model="densenet_121"))  # A new result: the next report differs.
    saved = os.path.join(self.tmp, "saved_report")
    shutil.copytree(out, saved)
    before = _sha256(self.good.path)
    done = _in_namespace(f"""
      mount -t tmpfs -o size=1m tmpfs {out}
      cp {saved}/* {out}/
      dd if=/dev/zero of={out}/filler bs=4k 2>/dev/null || true
      {sys.executable} -m tfhub_transfer.cli --mode=report --workdir={self.workdir} \\
          --report_dir={out} > /dev/null || echo report rc=$?
      rm {out}/filler
      sha256sum {out}/report.md {out}/results.json {out}/results.csv
      ls -a {out}
      """)
    self.assertIn("report rc=1", done.stdout, done.stderr[-3000:])
    line = _one_error_line(self, done.stderr)
    self.assertIn("cannot write the report (No space left on device)", line)
    self.assertIn(f"files already in {out} are kept until their new versions are complete",
                  line)
    for name in ("report.md", "results.json", "results.csv"):  # The previous report, whole.
      self.assertIn(f"{_sha256(os.path.join(saved, name))}  {out}/{name}", done.stdout)
    self.assertNotIn(".tmp-", done.stdout)  # No half-written file left behind.
    self.assertEqual(_sha256(self.good.path), before)


if __name__ == "__main__":
  absltest.main()
