"""Sweeps: resume, failures and shards in-process with a fake cell runner and the real
results store; then through the real CLI: killed with SIGKILL and rerun, a failing cell."""

import collections
import contextlib
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

from tests import cli_runner
from tests import fakes
from tests import report_figures
from tfhub_transfer import experiment
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import merged as stores
from tfhub_transfer.results import store as results


class _Crash(Exception):
  """The process dies: nothing after it runs (`run_sweep` catches only ExperimentFailed)."""


class _FakeCellRunner:
  """Stands in for `experiment.run_experiment`: each cell it runs stores a record tagged with
  this runner's `name`, `ok` unless its seed is in `failing` (then `failed`, raising
  ExperimentFailed after storing, as the real one does). Its `crash_at`-th call (0-based)
  raises _Crash, before storing or, with `crash_after_store`, after.

  Attributes:
    ran: the seeds of the cells it was called for, in order.
  """

  def __init__(self, name, *, failing=(), crash_at=None, crash_after_store=False):
    self.name = name
    self.failing = failing
    self.crash_at = crash_at
    self.crash_after_store = crash_after_store
    self.ran = []

  def __call__(self, config, *, store):
    self.ran.append(config.seed)
    crash = len(self.ran) - 1 == self.crash_at
    if crash and not self.crash_after_store:
      raise _Crash(config.cell)
    failed = config.seed in self.failing
    model, dataset, regime, seed, protocol = config.cell
    record = {"model": model, "dataset": dataset, "regime": regime, "seed": seed,
              "protocol": protocol, "status": "failed" if failed else "ok",
              "error": f"boom in seed {seed}" if failed else None, "metric": "top1",
              "val_metric": None, "test_metric": None if failed else seed / 10,
              "runner": self.name}
    store.put(record)
    if crash:
      raise _Crash(config.cell)
    if failed:
      raise experiment.ExperimentFailed(record)
    return experiment.Result(record)


class SweepResumeTest(parameterized.TestCase):
  """`sweep.run_sweep`'s bookkeeping: which cells run, are skipped, fail; in-process."""

  def setUp(self):
    super().setUp()
    self.path = os.path.join(self.create_tempdir().full_path, "results.sqlite")
    self.base = ExperimentConfig(model="m", dataset="digits", regime="logreg",
                                 l2_grid_size=5, workdir=os.path.dirname(self.path))

  def _cells(self, seeds, base=None):
    grid = sweep.Grid(models=("m",), datasets=("digits",), regimes=("logreg",),
                      seeds=tuple(seeds))
    return grid.cells(base or self.base)

  def _stored(self):
    """seed -> (status, the runner that stored it), from a fresh connection to the file."""
    stored = [(r["seed"], r["status"], r["runner"])
              for r in results.ResultsStore(self.path).records()]
    by_seed = {seed: (status, runner) for seed, status, runner in stored}
    self.assertLen(by_seed, len(stored), f"a cell stored twice: {stored}")
    return by_seed

  @parameterized.named_parameters(("killed_mid_cell", False), ("killed_after_store", True))
  def test_rerun_after_a_crash_runs_only_the_missing_cells(self, stored_before_crash):
    cells = self._cells(range(6))
    first = _FakeCellRunner("first", crash_at=2, crash_after_store=stored_before_crash)
    with self.assertRaises(_Crash):
      sweep.run_sweep(cells, store=results.ResultsStore(self.path), run_fn=first)
    self.assertEqual(first.ran, [0, 1, 2])
    done = [0, 1, 2] if stored_before_crash else [0, 1]
    self.assertEqual(self._stored(), {seed: ("ok", "first") for seed in done})

    second = _FakeCellRunner("second")  # A new process: a new store object on the same file.
    summary = sweep.run_sweep(cells, store=results.ResultsStore(self.path), run_fn=second)
    rest = [seed for seed in range(6) if seed not in done]
    self.assertEqual(second.ran, rest)
    self.assertEqual(summary, sweep.SweepSummary(done=len(rest), skipped=len(done), failed=0,
                                                 failures=()))
    self.assertEqual(summary.line(),
                     f"sweep: {len(rest)} cells run, {len(done)} already done, 0 failed")
    self.assertEqual(self._stored(), {**{seed: ("ok", "first") for seed in done},
                                      **{seed: ("ok", "second") for seed in rest}})

    third = _FakeCellRunner("third")
    summary = sweep.run_sweep(cells, store=results.ResultsStore(self.path), run_fn=third)
    self.assertEqual((third.ran, summary.done, summary.skipped), ([], 0, 6))

  def test_failed_cell_is_recorded_the_sweep_goes_on_and_a_rerun_retries_it(self):
    cells = self._cells(range(3))
    reported = []
    summary = sweep.run_sweep(cells, store=results.ResultsStore(self.path),
                              run_fn=_FakeCellRunner("first", failing=(1,)),
                              on_result=reported.append)
    self.assertEqual((summary.done, summary.skipped, summary.failed), (2, 0, 1))
    (failure,) = summary.failures
    self.assertIn(sweep.cell_label(cells[1]), failure)
    self.assertIn("boom in seed 1", failure)
    self.assertEqual([r.record["seed"] for r in reported], [0, 2])  # Not the failed one.
    self.assertEqual(self._stored(), {0: ("ok", "first"), 1: ("failed", "first"),
                                      2: ("ok", "first")})

    second = _FakeCellRunner("second")
    summary = sweep.run_sweep(cells, store=results.ResultsStore(self.path), run_fn=second)
    self.assertEqual(second.ran, [1])
    self.assertEqual((summary.done, summary.skipped, summary.failed), (1, 2, 0))
    self.assertEqual(self._stored()[1], ("ok", "second"))

  def test_only_a_changed_protocol_setting_reruns_done_cells(self):
    sweep.run_sweep(self._cells(range(2)), store=results.ResultsStore(self.path),
                    run_fn=_FakeCellRunner("first"))
    # batch_size is not part of logreg's protocol (regimes.py): the same measurement.
    same = _FakeCellRunner("same")
    cells = self._cells(range(2), dataclasses.replace(self.base, batch_size=7))
    summary = sweep.run_sweep(cells, store=results.ResultsStore(self.path), run_fn=same)
    self.assertEqual((same.ran, summary.skipped), ([], 2))
    # l2_grid_size is: another protocol id, so every cell runs again under its own key.
    other = _FakeCellRunner("other")
    cells = self._cells(range(2), dataclasses.replace(self.base, l2_grid_size=6))
    summary = sweep.run_sweep(cells, store=results.ResultsStore(self.path), run_fn=other)
    self.assertEqual((other.ran, summary.done, summary.skipped), ([0, 1], 2, 0))
    self.assertLen(results.ResultsStore(self.path).records(status="ok"), 4)

  def test_shards_sharing_a_store_run_each_cell_once(self):
    grid = dict(models=("a", "b"), datasets=("digits",), regimes=("logreg", "scratch"),
                seeds=(0, 1, 2))
    for index in range(3):  # One after another; none finds a cell another shard ran.
      cells = sweep.Grid(**grid, shard=(index, 3)).cells(self.base)
      summary = sweep.run_sweep(cells, store=results.ResultsStore(self.path),
                                run_fn=_FakeCellRunner(f"shard{index}"))
      self.assertEqual((summary.done, summary.skipped), (4, 0))
    everything = sweep.Grid(**grid).cells(self.base)
    stored = results.ResultsStore(self.path).records(status="ok")
    self.assertCountEqual([(r["model"], r["regime"], r["seed"]) for r in stored],
                          [(c.model, c.regime, c.seed) for c in everything])
    last = _FakeCellRunner("all")
    summary = sweep.run_sweep(everything, store=results.ResultsStore(self.path), run_fn=last)
    self.assertEqual((last.ran, summary.skipped), ([], 12))

  def test_shards_partition_the_grid(self):
    base = ExperimentConfig(model="m", dataset="d", regime="logreg")
    grid = dict(models=("a", "b", "c"), datasets=("x", "y"), regimes=("logreg", "scratch"),
                seeds=(0, 1))
    everything = [c.names for c in sweep.Grid(**grid).cells(base)]
    self.assertLen(everything, 24)
    shards = [[c.names for c in sweep.Grid(**grid, shard=(i, 5)).cells(base)]
              for i in range(5)]
    self.assertCountEqual(sum(shards, []), everything)
    with self.assertRaisesRegex(ValueError, "--shard='3/3'"):
      sweep.parse_shard("3/3")


class SweepCliTest(tf.test.TestCase):
  """The real CLI on a tiny Hub module and `digits` built in the test: a subprocess where a
  process is the point (the one killed), the parse step and cli.main in this process
  otherwise (tests/cli_runner.py)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    cls.addClassCleanup(shutil.rmtree, tmp, ignore_errors=True)
    cls.hub = fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=8, grid=2)

  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(self.create_tempdir().full_path, "sweep")
    self.args = [sys.executable, "-m", "tfhub_transfer.cli", "--model=hub:" + self.hub,
                 "--dataset=digits", "--regime=logreg", "--image_size=16",
                 "--max_examples=40", "--l2_grid_size=5", "--seeds=0,1,2",
                 "--workdir=" + self.workdir, "--data_dir=" + fakes.digits_data_dir()]

  def _store(self):
    return stores.read_workdir(self.workdir)

  def test_killed_sweep_resumes_without_duplicates_or_gaps(self):
    # SIGKILL once the first of 3 cells is stored: the cell in flight dies with the process
    # (or, if it just finished, is stored whole); SweepResumeTest covers the bookkeeping.
    process = subprocess.Popen(self.args, cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
      deadline = time.monotonic() + 240
      while time.monotonic() < deadline and process.poll() is None:
        if results.store_paths(self.workdir) and len(
            self._store().records(status="ok")) >= 1:
          break
        time.sleep(0.1)
    finally:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
      process.wait()
    self.assertEqual(process.returncode, -signal.SIGKILL, "the sweep ended before the kill")
    before = {r["seed"]: r["created_at"] for r in self._store().records(status="ok")}
    self.assertBetween(len(before), 1, 2, "killed after the first cell, before the last")

    # The rerun in this process: what it finds on disk is what the killed process left.
    code, out, errors = cli_runner.run_in_process_with_stdout(*self.args[3:])
    self.assertEqual(code, 0, errors[-30:])
    self.assertIn(f"sweep: {3 - len(before)} cells run, {len(before)} already done, "
                  f"0 failed", out)
    records = self._store().records()
    self.assertCountEqual([r["seed"] for r in records], range(3))  # Once each.
    self.assertEqual({r["status"] for r in records}, {"ok"})
    for r in records:  # Cells finished before the kill were not run again.
      if r["seed"] in before:
        self.assertEqual(r["created_at"], before[r["seed"]])

  def test_failing_cell_is_recorded_and_the_sweep_goes_on(self):
    # Stanford Cars must be placed by hand; an empty manual_dir fails that cell at run time.
    manual = self.create_tempdir().full_path
    args = [a.replace("--dataset=digits", "--dataset=stanford_cars,digits")
            .replace("--seeds=0,1,2", "--seeds=0") for a in self.args]
    args += ["--manual_dir=" + manual]
    # In this process: the exit code is cli.main's; no signal or process is involved.
    code, out, errors = cli_runner.run_in_process_with_stdout(*args[3:])
    self.assertEqual(code, 1, errors[-30:])
    self.assertIn("sweep: 1 cells run, 0 already done, 1 failed", out)
    self.assertTrue(any(line.startswith("tfhub_transfer: FAILED ") for line in errors),
                    errors[-30:])
    by_dataset = {r.dataset_label: r for r in self._store().records()}
    self.assertEqual(by_dataset["digits"]["status"], "ok")
    failed = by_dataset["stanford_cars"]
    self.assertEqual(failed["status"], "failed")
    self.assertIn(manual, failed["error"])
    self.assertIn("cars_train.tgz", failed["error"])  # Which files to place, by name.

  def test_missing_folder_is_one_line_and_exit_1(self):
    # In this process: the exit code is cli.main's (a process's own exit code for a refusal:
    # test_stores's test_damaged_store and test_missing_workdir). The folder is looked for
    # when the cell loads its data: an OSError, exit 1, not a usage error's 2.
    code, lines = cli_runner.run_in_process(*self.args[3:4], "--dataset=folder:/no/such/dir",
                                            "--regime=logreg")
    self.assertEqual((code, len(lines)), (1, 1), lines)
    self.assertStartsWith(lines[0], "tfhub_transfer: --dataset=folder:/no/such/dir: no such "
                                    "directory. Expected <path>/<class>/<image>")



def _readme_slurm_script():
  """The README's job-array script: the shell block after the comment naming this test, in
  README.md or a page of docs/ (BUILD declares both as the test's data)."""
  marker = "tests/test_sweep.py (SlurmArrayTest)"
  pages = [os.path.join(fakes.REPO_ROOT, "README.md")]
  pages += sorted(glob.glob(os.path.join(fakes.REPO_ROOT, "docs", "*.md")))
  texts = []
  for page in pages:
    with open(page) as f:
      texts.append(f.read())
  readme = next((text for text in texts if marker in text), None)
  if readme is None:
    raise AssertionError(f"no page of {pages} names {marker!r} above the job-array script")
  after = readme[readme.index(marker):]
  return re.search(r"```sh\n(.*?)```", after, re.S).group(1)


class SlurmArrayTest(tf.test.TestCase):
  """docs/scaling.md's SLURM job array: the script as bash expands it for each array task,
  two tasks per (faked) node, as SLURM places them; each task's command runs in this process,
  one after the other. Array tasks write at once; two processes writing one host's file at
  once is tests/test_results.py's `test_two_processes_write_concurrently`."""

  def test_readme_job_array(self):
    script = _readme_slurm_script()
    first, last = map(int, re.search(r"--array=(\d+)-(\d+)", script).groups())
    tasks = range(first, last + 1)
    self.assertIn("--shard=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT", script)
    tmp = self.get_temp_dir()
    hub = fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=4, grid=2)
    workdir, data_dir = os.path.join(tmp, "array"), os.path.join(tmp, "data")
    # The script as written, `tfhub_transfer` printing the arguments bash gives it; the
    # paper's models and datasets (not available offline) swapped for a tiny Hub model and
    # digits, appended as a wrapper script would.
    offline = [f"--model=hub:{hub}", "--dataset=digits", "--image_size=16",
               "--max_examples=30", "--l2_grid_size=3", "--seeds=0,1,2,3,4",
               f"--workdir={workdir}", f"--data_dir={data_dir}"]

    def task_args(task):
      printed = subprocess.run(
          ["bash", "-c", 'tfhub_transfer() { printf "%s\\0" "$@"; }\n' + script],
          env=dict(os.environ, SLURM_ARRAY_TASK_ID=str(task),
                   SLURM_ARRAY_TASK_COUNT=str(len(tasks))),
          capture_output=True, text=True, timeout=60, check=True).stdout
      args = printed.split("\0")[:-1]
      self.assertIn(f"--shard={task}/{len(tasks)}", args)
      return args + offline

    def run_task(task):  # From the checkout, as the tasks ran (the flagfile's path).
      with contextlib.chdir(fakes.REPO_ROOT), \
          mock.patch.dict(os.environ, TFHUB_TRANSFER_HOST=f"node{task // 2}"):
        code, out, errors = cli_runner.run_in_process_with_stdout(*task_args(task))
      self.assertEqual(code, 0, errors[-30:])
      return out

    for task in tasks:
      run_task(task)

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

    # Resubmitted: task 0's cells are done.
    self.assertIn(f"sweep: 0 cells run, {shards[0]} already done, 0 failed", run_task(0))
    # Then the report, as the page says; in this process (--mode=report in a process of its
    # own: test_stores's test_read_only_store_is_reported_on_and_refuses_writes), its figures
    # not drawn (test_report checks them).
    with report_figures.not_drawn():
      code, errors = cli_runner.run_in_process("--mode=report", "--workdir=" + workdir)
    self.assertEqual(code, 0, errors[-30:])
    with open(os.path.join(workdir, "report", "results.json")) as f:
      self.assertLen(json.load(f)["results"], 5)


class StudyGridTest(tf.test.TestCase):
  """Data sizes and step budgets as sweep dimensions (the paper's Figures 9 and 8)."""

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
    self.assertLen({c.names for c in cells}, len(cells))
    # Empty lists keep the base config's values.
    (only,) = sweep.Grid(models=("a",), datasets=("x",), regimes=("finetune",)).cells(base)
    self.assertEqual((only.train_steps, only.examples_per_class), (7, 0))

  def test_paper_values_are_each_dataset_s_and_each_regime_s(self):
    # Figure 9's axes: Flowers up to K = 8, Stanford Cars to 16 (read off the figure).
    base = ExperimentConfig(model="m", dataset="d", regime="logreg")
    grid = sweep.make_grid(models=("a",), datasets=("oxford_flowers", "stanford_cars"),
                           regimes=("logreg", "finetune", "scratch"), seeds=(0, 1, 2),
                           examples_per_class=sweep.PAPER, train_steps=sweep.PAPER)
    cells = grid.cells(base)
    for dataset, ks in (("oxford_flowers", {1, 2, 4, 8}), ("stanford_cars", {1, 2, 4, 8, 16})):
      for regime in ("logreg", "finetune", "scratch"):
        got = [(c.examples_per_class, c.seed) for c in cells
               if (c.dataset, c.regime) == (dataset, regime)]
        self.assertCountEqual(got, [(k, s) for k in ks for s in (0, 1, 2)], (dataset, regime))
    self.assertEqual({(c.regime, c.train_steps) for c in cells},
                     {("logreg", 0), ("finetune", 20_000), ("scratch", 40_000)})
    self.assertLen(cells, (4 + 5) * 3 * 3)
    self.assertIn("oxford_flowers / scratch / seed 2 / K=8 / steps=40000 / protocol ",
                  sweep.plan_line(cells[-1 - 5 * 3 * 3]))
    with self.assertRaisesRegex(ValueError, "Figure 9 has no K values for dataset 'voc2007'"):
      sweep.make_grid(models=("a",), datasets=("voc2007",), regimes=("logreg",), seeds=(0,),
                      examples_per_class=sweep.PAPER)

  def test_two_budgets_store_two_rows_with_their_own_searches(self):
    # Issue 13, item 4: the same finetune cell at two budgets, in one workdir, ends with two
    # result rows, each selected from its own trials, each with its own run folder and
    # predictions file.
    hub = fakes.make_tiny_savedmodel(os.path.join(self.get_temp_dir(), "hub"), feature_dim=8,
                                     grid=2)
    base = ExperimentConfig(
        model="hub:" + hub, dataset="digits", regime="finetune", image_size=16,
        workdir=self.create_tempdir().full_path, data_dir=fakes.digits_data_dir(),
        max_examples=40, batch_size=16, learning_rates=(0.01, 0.001), weight_decays=(0.0,))
    grid = sweep.Grid(models=(base.model,), datasets=("digits",), regimes=("finetune",),
                      train_steps=(1, 2))
    summary = sweep.run_grid(base, grid)
    self.assertEqual((summary.done, summary.failed), (2, 0))
    store = results.ResultsStore.for_workdir(base.workdir)
    rows = store.records()
    self.assertCountEqual([r["hparams"]["train_steps"] for r in rows], [1, 2])
    self.assertCountEqual([r["protocol_settings"]["train_steps"] for r in rows], [1, 2])
    self.assertLen({r["protocol"] for r in rows}, 2)
    for r in rows:
      trials = store.trials(r["model"], r["dataset"], r["regime"], r["seed"], r["protocol"])
      self.assertLen(trials, 2)  # Each budget searched its own grid of two.
      self.assertNear(r["val_metric"], max(t["val_metric"] for t in trials), 1e-9)
    cells = grid.cells(base)
    self.assertLen({experiment.cell_id(c) for c in cells}, 2)
    self.assertLen(os.listdir(os.path.join(base.workdir, "predictions")), 2)
    self.assertEqual(sweep.run_grid(base, grid).skipped, 2)


if __name__ == "__main__":
  tf.test.main()
