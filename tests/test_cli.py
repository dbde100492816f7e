"""The command line as a user runs it: a subprocess where a process is the point (exit codes
of TF-free commands, signals, a piped run), the parse step and cli.main in this process
(tests/cli_runner.py) for flag checks and plans."""

import collections
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl import flags
import tensorflow as tf

from tests import cli_runner
from tests import fakes
from tfhub_transfer import backbones
from tfhub_transfer import cli
from tfhub_transfer import experiment
from tfhub_transfer import faults
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import merged as stores
from tfhub_transfer.results import storage
from tfhub_transfer.results import store as results

# Modules a TF-free command must not need: each is made to fail on import.
_HEAVY = ("tensorflow", "keras", "tensorflow_datasets", "tensorflow_hub", "keras_tuner")


def run_cli(*args, timeout=300, env=None):
  return subprocess.run([sys.executable, "-m", "tfhub_transfer.cli", *args],
                        cwd=fakes.REPO_ROOT, env=env or fakes.subprocess_env(),
                        capture_output=True, text=True, timeout=timeout, check=False)


def env_without_tensorflow(tmp):
  """A subprocess environment whose `import tensorflow` (and Keras, TFDS, ...) fails."""
  for name in _HEAVY:
    os.makedirs(os.path.join(tmp, name), exist_ok=True)
    with open(os.path.join(tmp, name, "__init__.py"), "w") as f:
      f.write(f"raise ImportError('{name} is blocked by the test')\n")
  env = fakes.subprocess_env()
  env["PYTHONPATH"] = tmp + os.pathsep + env["PYTHONPATH"]
  return env


def _default_sigint():
  """In the child, before Python starts: Ctrl-C's default action. A runner started in the
  background (`cmd &` in a script, nohup) ignores SIGINT, which its children inherit, and
  Python then installs no KeyboardInterrupt handler: the signal would do nothing."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


class CliTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # The TF-free commands run once, with TensorFlow blocked: their own tests read these.
    cls._tmp = tempfile.TemporaryDirectory()
    cls._blocked_env = env_without_tensorflow(os.path.join(cls._tmp.name, "blocked"))
    cls._without_tf = {flag: run_cli(flag, env=cls._blocked_env, timeout=120)
                       for flag in ("--list_models", "--help")}

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def test_list_models_lists_the_zoo(self):
    done = self._without_tf["--list_models"]
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    lines = done.stdout.splitlines()
    self.assertLen(lines, 1 + len(backbones.BACKBONES))
    for spec in backbones.BACKBONES.values():
      row = next(line for line in lines if line.startswith(spec.name + " "))
      self.assertIn(f"{spec.paper_top1:.2f}", row)
      self.assertIn(str(spec.image_size), row)
    self.assertIn("tfhub.dev/google/imagenet/inception_v2", done.stdout)

  def test_unknown_names_exit_2_listing_choices(self):
    # In this process: a usage error's exit code is cli.main's (a process's own exit code
    # for one: test_stores's test_missing_workdir).
    for flag, bad, listed in (("--model", "resnet", "resnet_50"),
                              ("--regime", "linear", "logreg, finetune, scratch"),
                              ("--dataset", "imagenet", "caltech101")):
      args = {"--model": "resnet_50", "--regime": "logreg", "--dataset": "dtd"}
      args[flag] = bad
      code, lines = cli_runner.run_in_process(*(f"{k}={v}" for k, v in args.items()),
                                              "--workdir=" + self.get_temp_dir())
      self.assertEqual((code, len(lines)), (2, 1), lines)
      self.assertStartsWith(lines[0], f"tfhub_transfer: Unknown {flag}={bad!r}")
      self.assertIn(listed, lines[0])

  def test_study_dimensions_must_be_counts(self):
    for flag, value, message in (
        ("--examples_per_class", "2,-1", "flag --examples_per_class=['2', '-1']: '-1' is not "
                                         "an integer in [1, 2,147,483,647], or 0 (all)"),
        ("--train_steps", "20,x", "flag --train_steps=['20', 'x']: 'x' is not an integer in "
                                  "[1, 2,147,483,647], or 0 (a quick default)")):
      code, lines = cli_runner.run_in_process(
          "--model=resnet_50", "--dataset=dtd", "--regime=finetune", f"{flag}={value}",
          "--workdir=" + self.get_temp_dir())
      self.assertEqual(code, 2, lines)
      self.assertLen(lines, 1)
      self.assertIn(message, lines[0])

  def test_the_docs_flag_reference_is_the_help(self):
    # docs/cli.md's reference is `--help` itself (tools/cli_doc.py), and every flag its table
    # of the main flags names is one of this tool's.
    sys.path.insert(0, os.path.join(fakes.REPO_ROOT, "tools"))
    try:
      import cli_doc  # pylint: disable=g-import-not-at-top
    finally:
      sys.path.pop(0)
    self.assertEqual(cli_doc.main(["--check"]), 0, "run python tools/cli_doc.py")
    with open(cli_doc.DOC) as f:
      table = f.read().split(cli_doc.BEGIN)[0]
    named = set(re.findall(r"`--(\w+)", table))
    known = {flag.name for flag in flags.FLAGS.get_flags_for_module(cli)} | {
        "verbosity", "flagfile", "help", "helpfull"}
    self.assertTrue(named, "no flag found in the table")
    self.assertEqual(named - known, set())

  def test_help_exits_0_with_this_tools_flags_grouped(self):
    done = self._without_tf["--help"]
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    out = done.stdout
    titles = ["run:", "search:", "data:", "scale-out:", "compute:", "report (--mode=report):"]
    positions = [out.index("\n" + title + "\n") for title in titles]
    self.assertEqual(positions, sorted(positions))
    self.assertLess(out.index("--model:"), positions[1])
    self.assertLess(positions[1], out.index("--learning_rates:"))
    self.assertLess(positions[3], out.index("--parallel_trials:"))
    self.assertNotIn("absl.logging", out)  # absl's own flags: --helpfull.
    self.assertNotIn("--logtostderr", out)
    self.assertLess(len(out.splitlines()), 105)

  def test_usage_lines_of_help_are_intact(self):
    usage = cli.help_text().split("\n\n")[1]
    self.assertIn("--dataset=dtd,oxford_pets \\\n      --regime=logreg,finetune --seeds=0,1",
                  usage)

  def test_a_sigterm_that_surfaced_as_another_error_ends_as_sigterm(self):
    # The handler ran inside C code and its exception came out as a SystemError that no
    # layer below caught as the interrupt (tests/test_experiment.py: LostInterruptTest).
    def dispatch():
      try:
        faults.raise_terminated(signal.SIGTERM, None)
      except faults.Terminated:
        raise SystemError("bad argument to internal function") from None

    with mock.patch.object(cli, "_dispatch", dispatch):
      code, lines = cli_runner.run_in_process("--model=mobilenet_v2", "--dataset=digits",
                                              "--regime=logreg")
    self.assertEqual((code, lines), (faults.TERMINATED_EXIT_CODE, [cli.TERMINATED]))
    faults.raise_if_interrupted()  # Reported, so forgotten: raises nothing.

  def test_one_error_path(self):
    workdir = self.create_tempdir().full_path
    cell = ("--model=mobilenet_v1", "--dataset=digits", "--regime=finetune",
            "--weights=random", "--workdir=" + workdir)
    # A usage error: one line, exit 2 (a stray argument, a setting that cannot run).
    self.assertEqual(cli_runner.run_in_process("extra_arg"), (2, [
        "tfhub_transfer: unexpected argument(s) extra_arg: every option is a --flag "
        "(see --help)"]))
    code, lines = cli_runner.run_in_process(*cell, "--parallel_trials=2", "--seeds=0,1")
    self.assertEqual((code, len(lines)), (2, 1), lines)
    self.assertIn("got 2 cells. Run one cell at a time", lines[0])
    code, lines = cli_runner.run_in_process(*cell, "--parallel_trials=2", "--regime=logreg")
    self.assertEqual((code, len(lines)), (2, 1), lines)
    self.assertIn("--regime=logreg has no trials", lines[0])
    code, lines = cli_runner.run_in_process(*cell, "--mode=score")
    self.assertEqual((code, len(lines)), (2, 1), lines)
    self.assertIn("--mode=score scores frozen features (the logreg regime's)", lines[0])
    # A failed cell: one line naming it and the first line of its error, exit 1.
    failed = experiment.ExperimentFailed({"error": "ValueError: no pixels\nmore detail"})
    with mock.patch.object(experiment, "run_experiment", side_effect=failed):
      code, lines = cli_runner.run_in_process(*cell)
    self.assertEqual((code, len(lines)), (1, 1), lines)
    self.assertRegex(lines[0], r"^tfhub_transfer: FAILED mobilenet_v1.* / digits / finetune / "
                               r"seed 0 / protocol \w+: ValueError: no pixels$")
    # A storage fault: one line, exit 1.
    broken = storage.StoreError("s.sqlite", "damaged", "Move it away.")
    with mock.patch.object(sweep, "run_grid", side_effect=broken):
      self.assertEqual(cli_runner.run_in_process(*cell),
                       (1, ["tfhub_transfer: s.sqlite: damaged. Move it away."]))
    # A bug deep inside: its traceback, not a usage error.
    with mock.patch.object(sweep, "run_grid", side_effect=ValueError("a bug")):
      with self.assertRaisesRegex(ValueError, "a bug"):
        cli_runner.run_in_process(*cell)

  def test_every_flag_has_a_help_group(self):
    grouped = [holder.name for _, holders in cli.FLAG_GROUPS for holder in holders]
    self.assertCountEqual(grouped, [holder.name for holder in cli.own_flags()])

  def test_answers_without_tensorflow(self):
    env = self._blocked_env
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True, check=False)
    self.assertIn("tensorflow is blocked by the test", probe.stderr)
    workdir = os.path.join(self.get_temp_dir(), "work")
    results.ResultsStore.for_workdir(workdir).put({
        "model": "resnet_50", "dataset": "dtd", "regime": "logreg", "seed": 0,
        "status": "ok", "metric": "top1", "test_metric": 0.7, "val_metric": 0.7,
        "hparams": {"l2": 0.1}, "timings": {"total_s": 1.0}})
    for args, expected in ((["--list_models"], "resnet_50"), (["--list_datasets"], "caltech101"),
                           (["--help"], "scale-out:"),
                           (["--mode=report", f"--workdir={workdir}"], "| resnet_50 | 74.90 |")):
      done = self._without_tf.get(args[0]) or run_cli(*args, env=env, timeout=120)
      self.assertEqual(done.returncode, 0, f"{args}: {done.stderr[-2000:]}")
      self.assertIn(expected, done.stdout, args)
      self.assertNotIn("blocked", done.stderr, args)

  def test_helpfull_shows_flags_and_defaults(self):
    done = run_cli("--helpfull")  # absl exits 1 after printing help.
    for text in ("--model", "--regime", "--weights", "--parallel_trials", "default: 'auto'"):
      self.assertIn(text, done.stdout)

  def test_flagfiles_name_only_known_models_datasets_and_regimes(self):
    # --mode=plan checks every model, dataset and regime name and lists the cells; a
    # flagfile with an unknown name fails it (shown by the bad one), a good one lists its grid.
    shipped = sorted(glob.glob(os.path.join(fakes.REPO_ROOT, "flags", "*.cfg")))
    self.assertContainsSubset(
        ["quickstart.cfg", "paper_logreg.cfg", "paper_finetune.cfg", "paper_scratch.cfg",
         "paper_convergence.cfg", "paper_low_data.cfg"],
        [os.path.basename(path) for path in shipped])
    bad = os.path.join(self.get_temp_dir(), "bad.cfg")
    with open(bad, "w") as f:
      f.write("--regime=logreg\n--model=resnet_50,mobilenet_v2\n--dataset=dtd,imagenet\n")
    for path in shipped + [bad]:
      code, out, errors = cli_runner.run_in_process_with_stdout(
          f"--flagfile={path}", "--mode=plan",
          "--workdir=" + os.path.join(self.get_temp_dir(), "none"))
      if path == bad:
        self.assertEqual(code, 2)
        self.assertIn("Unknown --dataset='imagenet'", "\n".join(errors))
      else:
        self.assertEqual(code, 0, f"{path}: {errors[-20:]}")
        lines = out.splitlines()
        self.assertRegex(lines[-2], r"^plan: (\d+) cells, 0 already done, \1 to run$", path)
        self.assertRegex(lines[-1], r"^estimate: (about [\d.,]+ (s|min|h|days|years) on this "
                                    r"host|none \(1 cell\(s\) to run)", path)  # Digits: none.
        self.assertGreater(len(lines), 2, path)
        self.assertTrue(all(line.startswith("to run  ") for line in lines[:-2]), path)
        if os.path.basename(path) in ("paper_low_data.cfg", "paper_convergence.cfg"):
          self._check_study_plan(os.path.basename(path), lines[:-2])

  def _check_study_plan(self, name, lines):
    """Figure 9's grid: 11 datasets, 3 regimes, K = 1, 2, 4, ... up to each dataset's maximum
    on the figure (typed in from its axes), 3 seeds; Figure 8's: 12 datasets x 2 regimes x 11
    budgets."""
    cells = [re.sub(r" / protocol \w+( #\w+)?$", "", line[len("to run  "):]).split(" / ")
             for line in lines]
    cells = [c[:3] + [c[3].removeprefix("seed ")] + c[4:] for c in cells]
    if name == "paper_convergence.cfg":
      self.assertLen({c[1] for c in cells}, 12)
      self.assertLen(cells, 12 * 2 * 11)
      return
    figure9 = {"food101": 512, "cifar10": 4096, "cifar100": 256, "birdsnap": 64,
               "sun397": 32, "stanford_cars": 16, "fgvc_aircraft": 32, "dtd": 32,
               "oxford_pets": 64, "caltech101": 16, "oxford_flowers": 8}
    want = {("inception_v4", d, r, s, f"K={2 ** i}")
            for d, top in figure9.items() for r in ("logreg", "finetune", "scratch")
            for s in "012" for i in range(top.bit_length())}
    self.assertCountEqual([tuple(c[:5]) for c in cells], want)
    self.assertEqual({(c[2], c[5] if len(c) > 5 else None) for c in cells},
                     {("logreg", None), ("finetune", "steps=20000"),
                      ("scratch", "steps=40000")})

  def test_plan_marks_stored_cells_done_and_runs_nothing(self):
    workdir = self.create_tempdir().full_path
    cell = ["--model=resnet_50", "--dataset=dtd", "--regime=logreg", "--seeds=0,1",
            "--workdir=" + workdir]
    code, first, errors = cli_runner.run_in_process_with_stdout(*cell, "--mode=plan")
    self.assertEqual(code, 0, errors)
    key = ExperimentConfig(model="resnet_50", dataset="dtd", regime="logreg", seed=1).cell
    self.assertIn(f"protocol {key.protocol}", first)
    results.ResultsStore.for_workdir(workdir, host="a").put(
        {**key._asdict(), "status": "ok", "metric": "top1", "val_metric": 0.5,
         "test_metric": 0.5})
    code, out, errors = cli_runner.run_in_process_with_stdout(*cell, "--mode=plan")
    self.assertEqual((code, errors), (0, []))
    self.assertEqual(out.splitlines()[:-1], [
        f"to run  resnet_50 / dtd / logreg / seed 0 / protocol {key.protocol}",
        f"done    resnet_50 / dtd / logreg / seed 1 / protocol {key.protocol}",
        "plan: 2 cells, 1 already done, 1 to run"])
    self.assertIn("for 1 cell(s) to run", out.splitlines()[-1])  # The one to run.
    self.assertLen(stores.read_workdir(workdir).records(), 1)  # Nothing ran.

  def test_bad_values_are_one_line_before_the_first_cell_and_leave_no_row(self):
    workdir = self.create_tempdir().full_path
    store = results.ResultsStore.for_workdir(workdir, host="a")
    store.put({"model": "resnet_50", "dataset": "dtd", "regime": "logreg", "seed": 0,
               "status": "ok", "metric": "top1", "val_metric": 0.5, "test_metric": 0.5})
    tmp = self.create_tempdir()
    not_weights = tmp.create_file("notes.weights.h5", "not weights").full_path
    no_saved_model = tmp.mkdir("empty_dir").full_path
    hdf5_named_wrong = tmp.create_file("w.bin", mode="wb",
                                       content=b"\x89HDF\r\n\x1a\n" + bytes(64)).full_path
    # A cell that, if a bad value got through, would run here (and fail) and store a row.
    cell = ["--model=mobilenet_v1", "--dataset=digits", "--regime=finetune",
            f"--data_dir={tmp.full_path}/tfds", "--weights=random", "--workdir=" + workdir]
    # The cell itself is fine.
    self.assertEqual(cli_runner.run_in_process(*cell, "--mode=plan"), (0, []))
    expected = "an integer in [{}], or 0 ({})".format
    for bad, says in (
        ("--image_size=-1", expected("16, 2,048", "the model's own")),
        ("--image_size=1", "1 is not " + expected("16, 2,048", "the model's own")),
        ("--image_size=100000", "100000 is not " + expected("16, 2,048", "the model's own")),
        ("--image_size=20", "does not build: Input size must be at least 32x32"),
        ("--batch_size=0", "0 is not an integer in [1, 2,147,483,647]"),
        ("--batch_size=99999999999999999999", "is not an integer in [1, 2,147,483,647]"),
        ("--batch_size=1000000", "GiB of float32 pixels, more than this machine's"),
        ("--train_steps=-100", "'-100' is not " + expected("1, 2,147,483,647",
                                                          "a quick default")),
        ("--train_steps=99999999999999999999999", "'99999999999999999999999' is not an "
                                                  "integer in [1, 2,147,483,647]"),
        ("--examples_per_class=2,x", "'x' is not an integer in [1, 2,147,483,647]"),
        ("--max_trials=-1", "-1 is not " + expected("1, 2,147,483,647", "the whole grid")),
        ("--l2_grid_size=0", "0 is not an integer in [1, 10,000]"),
        ("--max_examples=-5", "-5 is not " + expected("1, 2,147,483,647", "all")),
        ("--seeds=0,-1", "'-1' is not an integer in [0, 2,147,483,647]"),
        ("--seeds=2147483648", "'2147483648' is not an integer in [0, 2,147,483,647]"),
        ("--seeds=", "no value given; expected an integer in [0, 2,147,483,647], e.g. --seeds=0"),
        ("--learning_rates=0.1,0", "'0' is not a positive number"),
        ("--weight_decays=-1e-4", "'-1e-4' is not a non-negative number"),
        ("--shard=2/2", "is not 'i/n' with 0 <= i < n"),
        ("--model_kwargs={alpha: 1}", "is not JSON"),
        ('--model_kwargs={"alphaa":0.25}', "'alphaa' is not an argument of "
                                           "keras.applications.MobileNet; it accepts "
                                           "alpha, depth_multiplier, dropout,"),
        ('--model_kwargs={"alpha":"x"}', "alpha='x' for keras.applications.MobileNet must "
                                         "be a float like its default 1.0"),
        ('--model_kwargs={"alpha":0.25,"include_top":true}',
         "'include_top' is set by tfhub_transfer (the backbone is headless and pooled)"),
        ("--weights=/no/such/weights.h5", "no such file or directory"),
        (f"--weights={not_weights}", "a file starting with b'not weig', neither HDF5 nor"),
        (f"--weights={no_saved_model}", "a directory without saved_model.pb"),
        (f"--weights={hdf5_named_wrong}", "must be named *.weights.h5, *.h5, *.hdf5, *.keras"),
        ("--manual_dir=/no/such/dir", "no such directory"),
        ("--parallel_trials=-2", "-2 is not a non-negative integer"),
        ("--gpus_per_trial=0", "0 is not a positive integer")):
      code, lines = cli_runner.run_in_process(*cell, bad)
      self.assertEqual(code, 2, f"{bad}: {lines}")
      self.assertLen(lines, 1, bad)  # One line, naming the flag; no usage text.
      self.assertStartsWith(lines[0], "tfhub_transfer: ")
      self.assertIn(bad.split("=")[0] + "=", lines[0])
      self.assertIn(says, lines[0])
    # Nothing ran: the one stored row is all there is, in the one store file.
    self.assertEqual(results.store_paths(workdir), [store.path])
    self.assertLen(stores.read_workdir(workdir).records(), 1)

  def test_forget_removes_failed_rows_from_every_host(self):
    workdir = self.create_tempdir().full_path
    def row(host, seed, status, model="resnet_50"):
      results.ResultsStore.for_workdir(workdir, host=host).put(
          {"model": model, "dataset": "dtd", "regime": "logreg", "seed": seed,
           "protocol": f"p{seed}", "status": status, "metric": "top1",
           "error": None if status == "ok" else f"error {seed}",
           "val_metric": 0.5 if status == "ok" else None,
           "test_metric": 0.5 if status == "ok" else None})
    row("a", 0, "failed")
    row("b", 1, "failed")
    row("b", 2, "ok")
    row("a", 0, "failed", model="densenet_121")  # Not in the grid.
    done = run_cli("--mode=forget", "--model=resnet_50", "--dataset=dtd", "--regime=logreg",
                   "--seeds=0,1,2", "--workdir=" + workdir, timeout=120)
    self.assertEqual(done.returncode, 0, done.stderr[-2000:])
    self.assertEqual(done.stdout.splitlines(), [
        "forgot resnet_50 / dtd / logreg / seed 0 [protocol p0]: failed: error 0",
        "forgot resnet_50 / dtd / logreg / seed 1 [protocol p1]: failed: error 1",
        f"2 stored result(s) forgotten in {workdir} (failed ones only; --forget_ok for ok "
        f"ones)"])
    self.assertEqual([(r["model"], r["seed"]) for r in stores.read_workdir(workdir).records()],
                     [("densenet_121", 0), ("resnet_50", 2)])


class RunOutputTest(tf.test.TestCase):
  """A run as a user sees it when the output goes to a file, and when they press Ctrl-C or
  the scheduler sends SIGTERM.

  The piped output and SIGTERM share one run (each CLI process starts TensorFlow: seconds of
  CPU): a grid of two cells, the first of 4 steps that runs to its result line, the second
  of 100000 steps, terminated once it trains. Ctrl-C has a run of its own.
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    # Digits is built by this run, as a first run does (TFDS's output included).
    cls._piped = _signal_mid_training(
        _run_args(cls._tmp.name, train_steps="4,100000", learning_rates="0.1,0.01"),
        signal.SIGTERM, training="training 100000 steps.")

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def test_piped_output_is_plain_lines_without_library_noise(self):
    run = self._piped
    self.assertTrue(run.started, run.stderr[-3000:])
    output = run.stdout + run.stderr
    self.assertNotIn("\x1b", output)  # No colour or cursor codes,
    self.assertNotIn("\r", output)  # and no redrawn lines: TFDS, Keras, keras-tuner.
    self.assertRegex(run.stderr.splitlines()[0],
                     r"cli\.py:\d+\] tfhub_transfer [0-9.]+: TensorFlow [0-9.]+ on "
                     r"/device:CPU:0 \(no GPU visible")
    for noise in ("retracing", "is deprecated", "shuffle=True", "oneDNN", "InitializeLog",
                  "Search: Running Trial", "Traceback"):
      self.assertNotIn(noise, output)
    warnings = [line for line in run.stderr.splitlines() if line.startswith("W")]
    self.assertEqual(warnings, [])
    self.assertEqual(run.stderr.count("training 4 steps."), 2)  # One line per trial.
    self.assertIn("digits / finetune (seed 0): test top1 =", run.stdout)

  def test_ctrl_c_prints_one_line_and_exits_130(self):
    tmp = self.get_temp_dir()
    run = _signal_mid_training(
        _run_args(tmp, train_steps="100000", learning_rates="0.1",
                  data_dir=os.path.join(self._tmp.name, "tfds")),  # Built by the class's run.
        signal.SIGINT, training="training 100000 steps.")
    self._assert_ended_by_the_signal(run, 130, cli.INTERRUPTED)

  def test_sigterm_prints_one_line_and_exits_143(self):
    run = self._piped
    self._assert_ended_by_the_signal(run, 143, cli.TERMINATED)
    # State as after Ctrl-C: the finished cell and its trials are kept; the terminated one
    # left no failed row and no failed trial (a rerun resumes its trial).
    stored = stores.read_workdir(os.path.join(self._tmp.name, "work"))
    self.assertEqual([(r["config"]["train_steps"], r["status"]) for r in stored.records()],
                     [(4, "ok")])
    trials = stored.trials()
    self.assertLen(trials, 2)
    self.assertEqual({t["status"] for t in trials}, {"ok"})
    self.assertEqual({t["protocol"] for t in trials}, {stored.records()[0]["protocol"]})

  def _assert_ended_by_the_signal(self, run, code, expected):
    """Exit `code`, no traceback, and the tool printed `expected` once after the signal and
    no other line of its own.

    Found among the lines, not at a position: a library's log line (TFDS's, absl's) may
    land after it.
    """
    self.assertTrue(run.started, run.stderr[-3000:])
    self.assertEqual(run.returncode, code, run.after[-3000:])
    for text in ("Traceback", "KeyboardInterrupt", "Terminated"):
      self.assertNotIn(text, run.after)
      self.assertNotIn(text, run.stdout)
    lines = [line.strip() for line in run.after.splitlines()]
    self.assertEqual(lines.count(expected), 1, run.after[-3000:])
    own = [line for line in lines if line.startswith(("tfhub_transfer:", "interrupted",
                                                      "terminated"))]
    self.assertEqual(own, [expected], run.after[-3000:])


def _run_args(tmp, *, train_steps, learning_rates, data_dir=None):
  """A finetune grid on digits with a tiny Hub backbone. `data_dir`: digits built
  beforehand; by default the run builds it, as a first run does (TFDS's output included)."""
  hub = os.path.join(tmp, "hub")
  if not os.path.exists(hub):
    fakes.make_tiny_savedmodel(hub)
  return [f"--model=hub:{hub}", "--image_size=16", "--dataset=digits", "--regime=finetune",
          f"--data_dir={data_dir or tmp + '/tfds'}", f"--workdir={tmp}/work",
          "--max_examples=40", "--batch_size=16", f"--train_steps={train_steps}",
          f"--learning_rates={learning_rates}", "--weight_decays=0"]


SignalledRun = collections.namedtuple(
    "SignalledRun", "started returncode stdout stderr after")


def _signal_mid_training(args, signum, *, training):
  """Runs the CLI with `args` and sends `signum` once the trial that logs `training` trains
  (its training batches are made: the process is inside the training).

  stdout goes to a file of its own: a pipe's buffered stdout (TFDS prints "Dataset digits
  downloaded and prepared" there) is flushed at exit, so in a merged stream it can land
  after the tool's last stderr line.

  Returns:
    A `SignalledRun`: whether the training started (else no signal was sent), the exit
    code, stdout, the whole stderr, and stderr after the signal.
  """
  with tempfile.TemporaryFile("w+") as stdout:
    process = subprocess.Popen(
        [sys.executable, "-m", "tfhub_transfer.cli", *args], cwd=fakes.REPO_ROOT,
        env=fakes.subprocess_env(), stdout=stdout, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint)
    try:
      seen, training_started, started = [], False, False
      for line in process.stderr:  # Until the trial's training batches are made.
        seen.append(line)
        training_started = training_started or training in line
        if training_started and "] train split: " in line:
          started = True
          break
      if started:
        time.sleep(0.5)  # Into the training's first steps.
        process.send_signal(signum)
      _, after = process.communicate(timeout=120)
    finally:
      if process.poll() is None:
        process.kill()
    stdout.seek(0)
    return SignalledRun(started, process.returncode, stdout.read(), "".join(seen) + after,
                        after)


if __name__ == "__main__":
  tf.test.main()
