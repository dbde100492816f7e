"""`estimate`: a grid's time from the benchmark's rates, against the cost formula written out
here; where the rates come from; and `--mode=plan` printing it."""

import contextlib
import io
import json
import os

from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized

from tests import dummy_data_images
from tfhub_transfer import cli
from tfhub_transfer import estimate
from tfhub_transfer.config import ExperimentConfig

RATES = estimate.Rates(forward_s_per_gmac=0.5, train_s_per_gmac=2.0, lbfgs_s_per_example=0.01,
                       training_overhead_s=7.0, cell_overhead_s=3.0, source="test")


class CellSecondsTest(parameterized.TestCase):

  def test_logreg_cell_at_native_size(self):
    # caltech101: 3,060 train + val (20% held out: 612), 6,084 test; ResNet-50: 3.9 GMACs.
    config = ExperimentConfig(model="resnet_50", dataset="caltech101", regime="logreg")
    expected = (2448 + 612 + 6084) * 0.5 * 3.9 + 3060 * 0.01 + 3.0
    self.assertAlmostEqual(estimate.cell_seconds(config, RATES), expected, places=6)

  def test_finetune_cell_at_half_resolution(self):
    # 2 x 3 grid = 6 trials + 1 refit, each 100 steps of 8 images; 112 px = a quarter of
    # the pixels of 224; validation scored per trial, test once.
    config = ExperimentConfig(model="mobilenet_v2", dataset="caltech101", regime="finetune",
                              image_size=112, train_steps=100, batch_size=8,
                              learning_rates=(0.1, 0.01), weight_decays=(0, 1e-4, 1e-5))
    gmacs = 0.30 / 4
    expected = (7 * (100 * 8 * 2.0 * gmacs + 7.0) + (6 * 612 + 6084) * 0.5 * gmacs + 3.0)
    self.assertAlmostEqual(estimate.cell_seconds(config, RATES), expected, places=6)

  def test_max_trials_and_caps(self):
    config = ExperimentConfig(model="resnet_50", dataset="caltech101", regime="scratch",
                              train_steps=10, batch_size=4, max_trials=2, max_examples=100,
                              learning_rates=(0.1, 0.01), weight_decays=(0, 1e-4))
    expected = 3 * (10 * 4 * 2.0 * 3.9 + 7.0) + (2 * 100 + 100) * 0.5 * 3.9 + 3.0
    self.assertAlmostEqual(estimate.cell_seconds(config, RATES), expected, places=6)

  def test_folder_sizes_are_its_files(self):
    root = dummy_data_images.write_image_folder(
        os.path.join(self.create_tempdir().full_path, "pics"), per_class=10, split_dirs=True,
        test_per_class=4)
    config = ExperimentConfig(model="resnet_50", dataset="folder:" + root, regime="logreg",
                              workdir=self.create_tempdir().full_path)
    sizes = estimate.split_sizes(config)
    self.assertEqual((sizes.train + sizes.val, sizes.test), (30, 12))
    self.assertEqual(sizes.val, 6)  # 20% of each class's 10, held out.

  def test_unknown_size_and_unlisted_model_are_said(self):
    cells = [ExperimentConfig(model="resnet_50", dataset="digits", regime="logreg"),
             ExperimentConfig(model="keras:EfficientNetB0", dataset="caltech101",
                              regime="logreg")]
    result = estimate.estimate_cells(cells, RATES)
    self.assertEqual((result.cells, result.unknown_size), (1, 1))
    self.assertEqual(result.unlisted_models, ("keras:EfficientNetB0",))
    expected = (2448 + 612 + 6084) * 0.5 * estimate.UNKNOWN_GMACS + 3060 * 0.01 + 3.0
    self.assertAlmostEqual(result.seconds, expected, places=6)
    line = result.line()
    self.assertStartsWith(line, "estimate: about ")
    self.assertIn("an estimate, not a measurement", line)
    self.assertIn("1 cell(s) of unknown size not counted", line)


class RatesTest(parameterized.TestCase):

  def test_figure_10_rates_are_read_else_the_defaults(self):
    tmp = self.create_tempdir()
    rates = {"forward_s_per_gmac": 1.5, "train_s_per_gmac": 2.5, "lbfgs_s_per_example": 0.5,
             "training_overhead_s": 4.0, "cell_overhead_s": 6.0}
    stored = tmp.create_file("cpu.json", json.dumps(
        {"figures": [{"key": "4"}, {"key": "10", "rates": rates}]})).full_path
    loaded = estimate.load_rates(stored)
    self.assertEqual(loaded, estimate.Rates(**rates, source=stored))
    no_figure = tmp.create_file("old.json", json.dumps({"figures": [{"key": "4"}]})).full_path
    damaged = tmp.create_file("bad.json", "{not json").full_path
    for path in (no_figure, damaged, os.path.join(tmp.full_path, "absent.json"), None):
      self.assertIs(estimate.load_rates(path), estimate.DEFAULT_RATES, path)

  def test_format_duration(self):
    self.assertEqual([estimate.format_duration(s)
                      for s in (0.2, 89, 600, 3 * 3600, 4 * 86400, 3000 * 365 * 86400)],
                     ["1 s", "89 s", "10 min", "3.0 h", "4.0 days", "3,000 years"])

  def test_nothing_of_known_size(self):
    self.assertEqual(estimate.Estimate(0.0, 0, 2, (), "x").line(),
                     "estimate: none (2 cell(s) to run, each on a dataset of unknown size)")
    self.assertEqual(estimate.Estimate(0.0, 0, 0, (), "x").line(), "estimate: nothing to run")


class PlanTest(parameterized.TestCase):

  def test_plan_prints_the_estimate_of_the_cells_to_run(self):
    stdout = io.StringIO()
    workdir = os.path.join(self.create_tempdir().full_path, "none")
    with flagsaver.flagsaver(), contextlib.redirect_stdout(stdout):
      argv = cli._parse_flags(  # pylint: disable=protected-access
          ["tfhub_transfer", "--model=resnet_50,mobilenet_v2", "--dataset=caltech101",
           "--regime=logreg", "--mode=plan", "--workdir=" + workdir])
      self.assertEqual(cli.main(argv), 0)
    lines = stdout.getvalue().splitlines()
    self.assertEqual(lines[-2], "plan: 2 cells, 0 already done, 2 to run")
    rates = estimate.load_rates(estimate.default_results_path("cpu"))
    seconds = sum((2448 + 612 + 6084) * rates.forward_s_per_gmac * gmacs
                  + 3060 * rates.lbfgs_s_per_example + rates.cell_overhead_s
                  for gmacs in (3.9, 0.30))
    self.assertEqual(lines[-1], f"estimate: about {estimate.format_duration(seconds)} on this "
                                f"host for 2 cell(s) to run (rates: {rates.source}; an "
                                f"estimate, not a measurement)")


if __name__ == "__main__":
  absltest.main()
