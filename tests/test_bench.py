"""The benchmarks' code paths at a tiny size, and their ratios recomputed from what they print.

No timing is asserted: on a shared machine only the arithmetic is checkable.
"""

import contextlib
import dataclasses
import io
import os
import re
import runpy
import statistics
import subprocess
import sys
import threading
from unittest import mock
import warnings

import numpy as np
import tensorflow as tf

from bench import data
from bench import harness
from bench import logreg_path
from bench import profiles
from bench import report
from bench import run
from bench import study
from tests import fakes
from tfhub_transfer import features

_RAW_LINE = re.compile(r"^  (measured|baseline) \((s|MiB)\): ([^|]+)\|")
_CURVE_LINE = re.compile(r"^  \w+ ([\d,]+): seconds ([^|]+)\| peak MiB (.+)$")
_EXPONENT = re.compile(r"^  exponent = .*: time (\S+), memory ([^;]+)")
_UNPAIRED = re.compile(r"^  ratio = median\((\w+)\) / median\((\w+)\) = \S+ / \S+ = (\S+);")
_PAIRED = re.compile(r"^  ratio = median of (\w+)_i / (\w+)_i = median\([^)]*\) = (\S+);")


def parse_raw(text):
  """{figure key: {"measured": [...], "baseline": [...], "ratio": printed, "of": (a, b)}}
  from the printed raw-values section."""
  figures, key = {}, None
  for line in text.splitlines():
    header = re.match(r"^\[(\w+)\] ", line)
    if header:
      key = header.group(1)
      figures[key] = {}
      continue
    raw = _RAW_LINE.match(line)
    if raw:
      figures[key][raw.group(1)] = [float(v) for v in raw.group(3).split()]
    for pattern in (_UNPAIRED, _PAIRED):
      ratio = pattern.match(line)
      if ratio:
        figures[key]["of"] = (ratio.group(1), ratio.group(2))
        figures[key]["ratio"] = float(ratio.group(3))
        figures[key]["paired"] = pattern is _PAIRED
    point = _CURVE_LINE.match(line)
    if point:
      figures[key].setdefault("points", []).append(
          (float(point.group(1).replace(",", "")), [float(v) for v in point.group(2).split()],
           [float(v) for v in point.group(3).split()]))
    exponent = _EXPONENT.match(line)
    if exponent:
      figures[key]["exponents"] = (float(exponent.group(1)), float(exponent.group(2)))
  return figures


def children_in_process(real: int):
  """A `subprocess.run` for `harness.run_child`, and the list of the children it started.

  The first `real` benchmark children run as processes (`python -m bench.X '<json>'`, this
  checkout on PYTHONPATH, as every benchmark run starts them); the others run the same module
  as `__main__` in this process (runpy), each saving a TensorFlow start (~7 CPU-s here). Other
  commands run as processes.
  """
  real_run, started = subprocess.run, []

  def run(command, **kwargs):
    if command[:2] != [sys.executable, "-m"] or not command[2].startswith("bench."):
      return real_run(command, **kwargs)
    started.append(command[2])
    if len(started) <= real:
      return real_run(command, **kwargs)
    stdout, stderr = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", command[2:]), contextlib.redirect_stdout(stdout), \
        contextlib.redirect_stderr(stderr), warnings.catch_warnings():
      # runpy warns that the module was imported before (bench.run imports bench.curves).
      warnings.simplefilter("ignore", RuntimeWarning)
      runpy.run_module(command[2], run_name="__main__", alter_sys=True)
    return subprocess.CompletedProcess(command, 0, stdout.getvalue(), stderr.getvalue())

  return run, started


def _slope(xs, ys):
  """Least-squares slope of log(y) on log(x), written out here."""
  lx, ly = np.log(xs), np.log(ys)
  return float(np.sum((lx - lx.mean()) * (ly - ly.mean())) / np.sum((lx - lx.mean()) ** 2))


class HarnessTest(tf.test.TestCase):

  def test_paired_ratio_is_the_median_of_per_repetition_ratios(self):
    measured = harness.Measurement("m", "s", [2.0, 4.0, 3.0])
    baseline = harness.Measurement("b", "s", [1.0, 5.0, 1.5])
    speed = harness.Figure("x", "t", measured, baseline, harness.BASELINE_OVER_MEASURED,
                           ">= 0.9")
    self.assertTrue(speed.paired)
    self.assertAllClose(speed.repetition_ratios, [0.5, 1.25, 0.5])
    self.assertAllClose(speed.ratio, 0.5)
    self.assertAllClose(speed.ratio_range, (0.5, 1.25))
    self.assertFalse(speed.met)
    fraction = dataclasses.replace(speed, ratio_of=harness.MEASURED_OVER_BASELINE,
                                   goal="< 2.5")
    self.assertAllClose(fraction.ratio, 2.0)  # Median of 2, 0.8, 2.
    self.assertTrue(fraction.met)
    failing_check = dataclasses.replace(
        fraction, checks=[harness.Check("accuracy gap", 0.7, "<= 0.5")])
    self.assertFalse(failing_check.met)

  def test_unpaired_ratio_is_the_ratio_of_medians(self):
    figure = harness.Figure(
        "x", "t", harness.Measurement("ours", "s", [2.0, 4.0, 3.0]),
        harness.Measurement("theirs", "s", [60.0]), harness.BASELINE_OVER_MEASURED, ">= 5")
    self.assertFalse(figure.paired)
    self.assertAllClose(figure.ratio, 20.0)
    self.assertAllClose(figure.ratio_range, (15.0, 30.0))
    self.assertTrue(figure.met)

  def test_goals_parse_and_bad_goals_fail_loudly(self):
    self.assertTrue(harness.meets(0.9, ">= 0.90"))
    self.assertFalse(harness.meets(0.05, "< 0.05"))
    with self.assertRaisesRegex(ValueError, "'about 1'"):
      harness.meets(1.0, "about 1")

  def test_notes_are_kept_in_the_markdown_in_name_order(self):
    results_dir = self.create_tempdir()
    results_dir.create_file("figure9.md", "## Figure 9\n\nmeasured apart\n")
    results_dir.create_file("a_first.md", "## First\n")
    results_dir.create_file("cpu.json", "{}")  # Not a note.
    notes = report.read_notes(results_dir.full_path)
    self.assertEqual(notes, ["## First\n", "## Figure 9\n\nmeasured apart\n"])
    markdown = report.render_markdown({"cpu": None, "device": None}, notes)
    self.assertLess(markdown.index("## First"), markdown.index("## Figure 9"))
    self.assertLess(markdown.index("measured apart"), markdown.index("## CPU run"))

  def test_interleave_alternates_and_counts_per_function(self):
    calls = []
    seconds = harness.interleave([lambda: calls.append("a"), lambda: calls.append("b")],
                                 [3, 1])
    self.assertEqual(calls, ["a", "b", "a", "b", "a", "a"])  # Warm-up pair first.
    self.assertEqual([len(s) for s in seconds], [3, 1])


class PhaseClockTest(tf.test.TestCase):
  """Figure 9's breakdown: each moment counted once, for the innermost phase."""

  def test_nested_phases_are_exclusive_and_add_up(self):
    clock = study.PhaseClock()
    inner = clock.wrap("inner", lambda: None)

    def outer_fn():
      inner()
      inner()
    outer = clock.wrap("outer", outer_fn)
    # perf_counter at: enter outer 10, enter inner 13, leave 14, enter 20, leave 22, leave 30.
    with mock.patch.object(study.time, "perf_counter", side_effect=[10, 13, 14, 20, 22, 30]):
      outer()
    self.assertEqual(dict(clock.seconds), {"outer": 3 + 6 + 8, "inner": 1 + 2})
    self.assertEqual(dict(clock.calls), {"outer": 1, "inner": 2})

  def test_calls_from_other_threads_are_not_counted(self):
    clock = study.PhaseClock()
    wrapped = clock.wrap("x", lambda: 7)
    results = []
    thread = threading.Thread(target=lambda: results.append(wrapped()))
    thread.start()
    thread.join()
    self.assertEqual((results, dict(clock.seconds)), ([7], {}))


class TinyRunTest(tf.test.TestCase):
  """Every figure end to end on a tiny SavedModel backbone at 32 px. Of the fresh processes
  figures 5 and 7 start, the first runs as one; the others run their `__main__` in this
  process (`children_in_process`)."""

  def test_every_figure_runs_and_its_ratio_follows_from_the_printed_values(self):
    tmp = self.get_temp_dir()
    hub = "hub:" + fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=8)
    other = "hub:" + fakes.make_tiny_savedmodel(os.path.join(tmp, "hub2"), feature_dim=4,
                                                seed=1)
    photos = os.path.join(tmp, "photos")  # Figure 9's real photos stand-in (hermetic).
    rng = np.random.default_rng(0)
    for i in range(8):
      os.makedirs(os.path.join(photos, f"class{i % 2}"), exist_ok=True)
      with open(os.path.join(photos, f"class{i % 2}", f"{i}.jpg"), "wb") as f:
        f.write(data.encode_jpeg(rng, 60 + 10 * i, 80))
    study_data = os.path.join(tmp, "study")  # Figure 10's dataset (a folder: dataset).
    for i in range(24):
      os.makedirs(os.path.join(study_data, "pets", f"class{i % 3}"), exist_ok=True)
      with open(os.path.join(study_data, "pets", f"class{i % 3}", f"{i}.jpg"), "wb") as f:
        f.write(data.encode_jpeg(rng, 40 + 4 * i, 48))
    profile = dataclasses.replace(
        profiles.get_profile("tiny"), extract_models=((hub, 8),), cell_model=hub,
        train_model=hub, memory_model=hub, shared_models=(hub, other), curve_train_model=hub,
        precision_model=hub, preprocess_photos_dir=photos, study_model=hub,
        study_data_dir=study_data, study_datasets=("pets",))
    run_fn, children = children_in_process(real=1)
    with mock.patch.object(harness.subprocess, "run", side_effect=run_fn):
      result = run.run_benchmarks(profile, workdir=os.path.join(tmp, "work"),
                                  progress=lambda line: None)
    # Figure 5: a child per count (one repetition); figure 7: a child per logreg and
    # training curve (its extraction curve reuses figure 5's).
    self.assertEqual(children, ["bench.memory_child"] * 2 + ["bench.curves"] * 3)
    self.assertEqual(result.failures, {})
    figure_keys = ["1a", "2a", "3", "4", "5a", "6", "8a", "9a", "9b", "9c", "9d", "9e", "9f",
                   "10"]
    curve_keys = ["7a", "7b", "7c", "7d"]
    self.assertEqual([f.key for f in result.figures], figure_keys)
    self.assertEqual([c.key for c in result.curves], curve_keys)

    printed = parse_raw(report.format_text(result))
    self.assertCountEqual(printed, figure_keys + curve_keys)
    for curve in result.curves:  # Each exponent follows from the printed raw values.
      points = printed[curve.key]["points"]
      self.assertEqual([size for size, _, _ in points], curve.sizes)
      sizes = [size for size, _, _ in points]
      time_exponent = _slope(sizes, [statistics.median(p[1]) for p in points])
      memory = [statistics.median(p[2]) for p in points]
      memory_exponent = _slope(sizes, memory) if min(memory) > 0 else float("nan")
      # Printed with 4 significant digits, raw values with 6.
      np.testing.assert_allclose(printed[curve.key]["exponents"],
                                 (time_exponent, memory_exponent), rtol=2e-3, atol=1e-3,
                                 err_msg=curve.key)
      # From raw values rounded to 6 significant digits (relative error <= 5e-6 each), a
      # least-squares slope over these sizes moves by at most about 1e-5: an exponent near 0
      # (7d measured -0.00738 against -0.0073804 recomputed) needs that absolute bound.
      self.assertAllClose(curve.time_exponent, time_exponent, rtol=1e-4, atol=1e-5,
                          msg=curve.key)
    for figure in result.figures:
      values = printed[figure.key]
      self.assertLen(values["measured"], len(figure.measured.values))
      numerator, denominator = values["of"]
      self.assertEqual(values["paired"], len(values["measured"]) == len(values["baseline"]))
      if values["paired"]:  # Median of the per-repetition ratios.
        recomputed = statistics.median(
            n / d for n, d in zip(values[numerator], values[denominator]))
      else:  # Ratio of the medians.
        recomputed = (statistics.median(values[numerator])
                      / statistics.median(values[denominator]))
      # The printed ratio has 3 significant digits, the printed raw values 6.
      self.assertAllClose(values["ratio"], recomputed, rtol=5e-3, msg=figure.key)
      self.assertAllClose(figure.ratio, recomputed, rtol=1e-5, msg=figure.key)
      self.assertEqual(
          (numerator, denominator),
          ("baseline", "measured") if figure.ratio_of == harness.BASELINE_OVER_MEASURED
          else ("measured", "baseline"))
    self.assertLen(result.figures[1].checks, 1)  # The accuracy check of figure 2.

    path = os.path.join(tmp, "tiny.json")
    report.save_json(result, path)
    again = report.load_json(path)
    self.assertEqual([f.ratio for f in again.figures], [f.ratio for f in result.figures])
    self.assertEqual([c.seconds for c in again.curves], [c.seconds for c in result.curves])
    markdown = report.render_markdown({"cpu": again, "device": None})
    self.assertIn("| 2a |", markdown)
    self.assertIn("| 7b |", markdown)
    self.assertIn("Not run: no GPU", markdown)
    for figure in result.figures:
      self.assertIn(f"{figure.ratio:.3g} (", markdown)


class UserFeaturesTest(tf.test.TestCase):
  """Figure 2 rerun on features a user passes (`--logreg_features`)."""

  def _features(self, num_examples=90, dim=12, num_classes=3):
    rng = np.random.default_rng(0)
    labels = np.arange(num_examples) % num_classes
    centres = rng.normal(0.0, 2.0, (num_classes, dim))
    return (centres[labels] + rng.normal(0.0, 1.0, (num_examples, dim))).astype(np.float32), \
        labels

  def test_loads_npz_and_feature_cache_entries_alike(self):
    x, y = self._features()
    npz = os.path.join(self.get_temp_dir(), "f.npz")
    np.savez(npz, features=x, labels=y + 5)  # Any integer labels: remapped to 0..C-1.
    cache_dir = os.path.join(self.get_temp_dir(), "cache")
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    entry = features.extract_features(lambda v: v, batches, cache_dir=cache_dir, key="k")
    for path in (npz, entry.path):
      loaded_x, loaded_y = data.load_features(path)
      self.assertAllEqual(loaded_x, x)
      self.assertAllEqual(loaded_y, y)
      self.assertEqual(loaded_y.dtype, np.int64)

  def test_bad_feature_files_name_the_file_and_the_fix(self):
    tmp = self.get_temp_dir()
    x, y = self._features()
    cases = {
        "wrong_keys.npz": (dict(x=x, y=y), r"holds arrays \['x', 'y'\].*np.savez"),
        "multi_label.npz": (dict(features=x, labels=np.eye(3)[y]), "multi-label"),
        "float_labels.npz": (dict(features=x, labels=y.astype(np.float32)), "integers"),
    }
    for name, (arrays, message) in cases.items():
      path = os.path.join(tmp, name)
      np.savez(path, **arrays)
      with self.assertRaisesRegex(ValueError, message, msg=name):
        data.load_features(path)
    with self.assertRaisesRegex(ValueError, "No features at '/nowhere.npz'"):
      data.load_features("/nowhere.npz")
    with self.assertRaisesRegex(ValueError, "without meta.json"):
      data.load_features(tmp)
    lonely = os.path.join(tmp, "lonely.npz")
    np.savez(lonely, features=x[:4], labels=np.array([0, 0, 1, 2]))
    with self.assertRaisesRegex(ValueError, "class 1 has 1 example"):
      logreg_path.cases_from_files([lonely], "top1")
    with self.assertRaisesRegex(ValueError, "'map_11point'.*top1 or mean_per_class"):
      logreg_path.cases_from_files([lonely], "map_11point")

  def test_figure_2_runs_on_user_features(self):
    x, y = self._features()
    path = os.path.join(self.get_temp_dir(), "mine.npz")
    np.savez(path, features=x, labels=y)
    cases = logreg_path.cases_from_files([path], "mean_per_class")
    self.assertEqual([(c.key, c.num_examples, c.dim, c.num_classes) for c in cases],
                     [("2a", 90, 12, 3)])
    figure = logreg_path.figure_logreg(profiles.get_profile("tiny"), cases[0])
    self.assertIn("mine.npz features", figure.title)
    self.assertIn(f"features and labels from {path}; 90 x 12, 3 classes", figure.setup)
    self.assertIn("72 train / 18 val x 12", figure.measured.label)
    self.assertLen(figure.checks, 1)

  def test_a_partial_run_prints_but_never_replaces_the_stored_run(self):
    # `python -m bench`'s main, in this process: its flags are its own (bench.__main__.FLAGS),
    # apart from the CLI's. Its import sets TensorFlow's log level and GPU memory growth in
    # the environment, restored here.
    with mock.patch.dict(os.environ):
      import bench.__main__ as bench_main  # pylint: disable=g-import-not-at-top
    x, y = self._features()
    path = os.path.join(self.get_temp_dir(), "mine.npz")
    np.savez(path, features=x, labels=y)
    results_dir = self.create_tempdir().full_path  # Where a full run would be stored.
    stdout = io.StringIO()
    bench_main.FLAGS(["bench", "--figures=2", f"--logreg_features={path}"])
    try:
      with mock.patch.object(bench_main, "RESULTS_DIR", results_dir), \
          mock.patch.object(bench_main, "MARKDOWN", os.path.join(results_dir, "B.md")), \
          contextlib.redirect_stdout(stdout), warnings.catch_warnings():
        bench_main.main([])
    finally:
      bench_main.FLAGS.unparse_flags()
    self.assertIn("[2a] 45-value L2 path + refit, mine.npz features", stdout.getvalue())
    self.assertIn("Not written: only a full run", stdout.getvalue())
    self.assertEqual(os.listdir(results_dir), [])


if __name__ == "__main__":
  tf.test.main()
