"""Sweeps through the real CLI: killed with SIGKILL and rerun, failing cells, shards."""

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

import tensorflow as tf

from tests import fakes
from tfhub_transfer.report import results
from tfhub_transfer.report import stores
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig


class SweepTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    tmp = self.get_temp_dir()
    hub = os.path.join(tmp, "hub")
    if not os.path.exists(hub):
      fakes.make_tiny_savedmodel(hub, feature_dim=8, grid=2)
    self.workdir = os.path.join(tmp, "sweep")
    self.args = [sys.executable, "-m", "tfhub_transfer.cli", "--model=hub:" + hub,
                 "--dataset=digits", "--regime=logreg", "--image_size=16",
                 "--max_examples=40", "--l2_grid_size=5", "--seeds=0,1,2,3,4,5",
                 "--workdir=" + self.workdir]

  def _store(self):
    return stores.read_workdir(self.workdir)

  def test_killed_sweep_resumes_without_duplicates_or_gaps(self):
    process = subprocess.Popen(self.args, cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
      deadline = time.monotonic() + 240
      while time.monotonic() < deadline and process.poll() is None:
        if results.store_paths(self.workdir) and len(
            self._store().records(status="ok")) >= 2:
          break
        time.sleep(0.2)
    finally:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
      process.wait()
    before = {r["seed"]: r["created_at"] for r in self._store().records(status="ok")}
    self.assertBetween(len(before), 2, 5, "killed after 2 cells, before the last")

    done = subprocess.run(self.args, cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertIn(f"sweep: {6 - len(before)} cells run, {len(before)} already done, "
                  f"0 failed", done.stdout)
    records = self._store().records()
    self.assertCountEqual([r["seed"] for r in records], range(6))  # Once each.
    self.assertEqual({r["status"] for r in records}, {"ok"})
    for r in records:  # Cells finished before the kill were not run again.
      if r["seed"] in before:
        self.assertEqual(r["created_at"], before[r["seed"]])

  def test_failing_cell_is_recorded_and_the_sweep_goes_on(self):
    # Stanford Cars must be placed by hand; an empty manual_dir fails that cell at run time.
    manual = self.create_tempdir().full_path
    args = [a.replace("--dataset=digits", "--dataset=stanford_cars,digits")
            .replace("--seeds=0,1,2,3,4,5", "--seeds=0") for a in self.args]
    args += ["--manual_dir=" + manual, "--data_dir=" + self.create_tempdir().full_path]
    done = subprocess.run(args, cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(done.returncode, 1)
    self.assertIn("sweep: 1 cells run, 0 already done, 1 failed", done.stdout)
    self.assertIn("FAILED", done.stderr)
    by_dataset = {r["dataset"]: r for r in self._store().records()}
    self.assertEqual(by_dataset["digits"]["status"], "ok")
    failed = by_dataset["stanford_cars"]
    self.assertEqual(failed["status"], "failed")
    self.assertIn(manual, failed["error"])
    self.assertIn("cars_train.tgz", failed["error"])  # Which files to place, by name.

  def test_missing_folder_is_a_usage_error(self):
    done = subprocess.run(self.args[:4] + ["--dataset=folder:/no/such/dir", "--regime=logreg"],
                          cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    self.assertNotEqual(done.returncode, 0)
    self.assertIn("--dataset=folder:/no/such/dir: no such directory", done.stderr)
    self.assertNotIn("Traceback", done.stderr)

  def test_shards_partition_the_grid(self):
    base = ExperimentConfig(model="m", dataset="d", regime="logreg")
    grid = dict(models=("a", "b", "c"), datasets=("x", "y"), regimes=("logreg", "scratch"),
                seeds=(0, 1))
    everything = [c.cell for c in sweep.Grid(**grid).cells(base)]
    self.assertLen(everything, 24)
    shards = [[c.cell for c in sweep.Grid(**grid, shard=(i, 5)).cells(base)]
              for i in range(5)]
    self.assertCountEqual(sum(shards, []), everything)
    with self.assertRaisesRegex(ValueError, "--shard='3/3'"):
      sweep.parse_shard("3/3")



def _readme_slurm_script():
  """The README's job-array script: the shell block after the comment naming this test."""
  with open(os.path.join(fakes.REPO_ROOT, "README.md")) as f:
    readme = f.read()
  after = readme[readme.index("tests/test_sweep.py (SlurmArrayTest)"):]
  return re.search(r"```sh\n(.*?)```", after, re.S).group(1)


class SlurmArrayTest(tf.test.TestCase):
  """The README's SLURM job array, run as separate local processes: one per array task,
  two tasks per (faked) node, as SLURM places them."""

  def test_readme_job_array(self):
    script = _readme_slurm_script()
    first, last = map(int, re.search(r"--array=(\d+)-(\d+)", script).groups())
    tasks = range(first, last + 1)
    self.assertIn("--shard=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT", script)
    tmp = self.get_temp_dir()
    hub = fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=4, grid=2)
    workdir, data_dir = os.path.join(tmp, "array"), os.path.join(tmp, "data")
    from tfhub_transfer.data import datasets, loading  # pylint: disable=g-import-not-at-top
    loading.load_splits(datasets.get_dataset_spec("digits"), data_dir=data_dir)  # Built once.
    # The script runs as written; `tfhub_transfer` is this checkout's CLI, with the paper's
    # models and datasets (not available offline) swapped for a tiny Hub model and digits.
    offline = (f"--model=hub:{hub} --dataset=digits --image_size=16 --max_examples=30 "
               f"--l2_grid_size=3 --seeds=0,1,2,3,4 --workdir={workdir} "
               f"--data_dir={data_dir}")
    prelude = f'tfhub_transfer() {{ {sys.executable} -m tfhub_transfer.cli "$@" {offline}; }}\n'

    def launch(task):
      env = fakes.subprocess_env(SLURM_ARRAY_TASK_ID=str(task),
                                 SLURM_ARRAY_TASK_COUNT=str(len(tasks)),
                                 TFHUB_TRANSFER_HOST=f"node{task // 2}")
      return subprocess.Popen(["bash", "-c", prelude + script], cwd=fakes.REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    processes = [launch(task) for task in tasks]  # All at once, as the array starts.
    for process in processes:
      out, err = process.communicate(timeout=600)
      self.assertEqual(process.returncode, 0, err[-3000:])

    stored = stores.read_workdir(workdir)
    records = stored.records()
    self.assertCountEqual([r["seed"] for r in records], range(5))  # Each cell once,
    self.assertEqual({r["status"] for r in records}, {"ok"})  # all done.
    by_file = collections.defaultdict(set)
    for path in stored.paths():
      for r in results.ResultsStore(path).records():
        by_file[os.path.basename(path)].add(r["seed"])
    base = ExperimentConfig(model="hub:" + hub, dataset="digits", regime="logreg")
    expected, shards = collections.defaultdict(set), {}
    for task in tasks:  # Each node's file holds the cells of its own tasks' shards.
      grid = sweep.Grid(models=("m",), datasets=("digits",), regimes=("logreg",),
                        seeds=(0, 1, 2, 3, 4), shard=(task, len(tasks)))
      shards[task] = len(grid.cells(base))
      expected[f"node{task // 2}.sqlite"] |= {c.seed for c in grid.cells(base)}
    self.assertEqual(dict(by_file), dict(expected))

    again = launch(0)  # Resubmitted: task 0's cells are done.
    out, err = again.communicate(timeout=600)
    self.assertEqual(again.returncode, 0, err[-3000:])
    self.assertIn(f"sweep: 0 cells run, {shards[0]} already done, 0 failed", out)
    report = subprocess.run([sys.executable, "-m", "tfhub_transfer.cli", "--mode=report",
                             "--workdir=" + workdir], cwd=fakes.REPO_ROOT,
                            env=fakes.subprocess_env(), capture_output=True, text=True,
                            timeout=300, check=False)
    self.assertEqual(report.returncode, 0, report.stderr[-3000:])
    with open(os.path.join(workdir, "report", "results.json")) as f:
      self.assertLen(json.load(f)["results"], 5)


if __name__ == "__main__":
  tf.test.main()
