"""The benchmarks' code paths at a tiny size, and their ratios recomputed from what they print.

No timing is asserted: on a shared machine only the arithmetic is checkable.
"""

import dataclasses
import os
import re
import statistics

import tensorflow as tf

from bench import harness
from bench import profiles
from bench import report
from bench import run
from tests import fakes

_RAW_LINE = re.compile(r"^  (measured|baseline) \((s|MiB)\): ([^|]+)\|")
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
  return figures


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

  def test_interleave_alternates_and_counts_per_function(self):
    calls = []
    seconds = harness.interleave([lambda: calls.append("a"), lambda: calls.append("b")],
                                 [3, 1])
    self.assertEqual(calls, ["a", "b", "a", "b", "a", "a"])  # Warm-up pair first.
    self.assertEqual([len(s) for s in seconds], [3, 1])


class TinyRunTest(tf.test.TestCase):
  """Every figure end to end on a tiny SavedModel backbone at 32 px."""

  def test_every_figure_runs_and_its_ratio_follows_from_the_printed_values(self):
    tmp = self.get_temp_dir()
    hub = "hub:" + fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=8)
    profile = dataclasses.replace(
        profiles.get_profile("tiny"), extract_models=((hub, 8),), cell_model=hub,
        train_model=hub, memory_model=hub)
    result = run.run_benchmarks(profile, workdir=os.path.join(tmp, "work"),
                                progress=lambda line: None)
    self.assertEqual([f.key for f in result.figures], ["1a", "2a", "3", "4", "5a"])

    printed = parse_raw(report.format_text(result))
    self.assertCountEqual(printed, ["1a", "2a", "3", "4", "5a"])
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
    markdown = report.render_markdown({"cpu": again, "device": None})
    self.assertIn("| 2a |", markdown)
    self.assertIn("Not run: no GPU", markdown)
    for figure in result.figures:
      self.assertIn(f"{figure.ratio:.3g} (", markdown)


if __name__ == "__main__":
  tf.test.main()
