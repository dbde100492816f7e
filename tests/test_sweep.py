"""Sweeps through the real CLI: killed with SIGKILL and rerun, failing cells, shards."""

import os
import signal
import subprocess
import sys
import time

import tensorflow as tf

from tests import fakes
from tfhub_transfer.report import results
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
    return results.ResultsStore(os.path.join(self.workdir, "results.sqlite"))

  def test_killed_sweep_resumes_without_duplicates_or_gaps(self):
    process = subprocess.Popen(self.args, cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
      deadline = time.monotonic() + 240
      while time.monotonic() < deadline and process.poll() is None:
        if os.path.exists(os.path.join(self.workdir, "results.sqlite")) and len(
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

  def test_data_sizes_and_budgets_are_dimensions(self):
    base = ExperimentConfig(model="m", dataset="d", regime="logreg", train_steps=7)
    grid = sweep.Grid(models=("a",), datasets=("x",), regimes=("logreg", "finetune"),
                      seeds=(0, 1), examples_per_class=(0, 2, 8), train_steps=(20, 40))
    cells = grid.cells(base)
    finetune = {(c.examples_per_class, c.train_steps, c.seed) for c in cells
                if c.regime == "finetune"}
    self.assertLen(finetune, 12)  # 3 sizes x 2 budgets x 2 seeds.
    # logreg does not depend on the budget: one cell per (size, seed), not two.
    logreg = [(c.examples_per_class, c.seed) for c in cells if c.regime == "logreg"]
    self.assertCountEqual(logreg, [(k, s) for k in (0, 2, 8) for s in (0, 1)])
    self.assertLen({c.cell for c in cells}, len(cells))
    # Empty lists keep the base config's values.
    (only,) = sweep.Grid(models=("a",), datasets=("x",), regimes=("finetune",)).cells(base)
    self.assertEqual((only.train_steps, only.examples_per_class), (7, 0))

  def test_two_budgets_store_two_rows_with_their_own_searches(self):
    hub = os.path.join(self.get_temp_dir(), "hub")
    base = ExperimentConfig(
        model="hub:" + hub, dataset="digits", regime="finetune", image_size=16,
        workdir=self.create_tempdir().full_path, data_dir=self.create_tempdir().full_path,
        max_examples=40, batch_size=16, learning_rates=(0.01, 0.001), weight_decays=(0.0,))
    grid = sweep.Grid(models=(base.model,), datasets=("digits",), regimes=("finetune",),
                      train_steps=(1, 2))
    summary = sweep.run_grid(base, grid)
    self.assertEqual((summary.done, summary.failed), (2, 0))
    store = results.ResultsStore.for_workdir(base.workdir)
    rows = store.records()
    self.assertCountEqual([r["hparams"]["train_steps"] for r in rows], [1, 2])
    self.assertLen({r["protocol"] for r in rows}, 2)
    for r in rows:
      trials = store.trials(r["model"], r["dataset"], r["regime"], r["seed"], r["protocol"])
      self.assertLen(trials, 2)  # Each budget searched its own grid of two.
      self.assertNear(r["val_metric"], max(t["val_metric"] for t in trials), 1e-9)
    self.assertEqual(sweep.run_grid(base, grid).skipped, 2)


if __name__ == "__main__":
  tf.test.main()
