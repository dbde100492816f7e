"""The paper's other experiments in the report, on hand-made stores: Figures 9, 8, 6 and 4.

Every expected number is computed here from the records the test writes (means, standard
errors, odds thresholds, spreads) or typed in from a source (SimCLR's table), and the k-NN
separation is checked against scikit-learn's leave-one-out classifier.
"""

import csv
import json
import math
import os
import shutil
import statistics
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image
from sklearn import model_selection
from sklearn import neighbors

from tests import report_figures
from tests import tf_free
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.report import document
from tfhub_transfer.report import feature_maps
from tfhub_transfer.report import studies
from tfhub_transfer.report import study_plots
from tfhub_transfer.results import store as results


def _record(model, dataset, regime, seed, p, *, metric="top1", train=100, **settings):
  settings = {"protocol_version": 2, "examples_per_class": 0, **settings}
  if regime != "logreg":
    settings.setdefault("train_steps", 200)
  return {"model": model, "dataset": dataset, "regime": regime, "seed": seed, "status": "ok",
          "error": None, "metric": metric, "val_metric": p, "test_metric": p,
          "protocol": "p" + json.dumps(settings, sort_keys=True),
          "protocol_settings": settings, "sizes": {"train": train}, "hparams": {},
          "timings": {}, "config": {}}


def _csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _is_png(path):
  with Image.open(path) as image:
    return image.format == "PNG" and min(image.size) > 100


class LowDataTest(absltest.TestCase):
  """One store and its report for the class: the tests only read them."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    cls.addClassCleanup(shutil.rmtree, tmp, ignore_errors=True)
    cls.accuracy = {}
    records = []
    for regime, base in (("finetune", 0.5), ("scratch", 0.3)):
      for k, gain in ((2, 0.0), (8, 0.1)):
        for seed, noise in enumerate((0.01, -0.02, 0.04)):
          p = base + gain + noise
          cls.accuracy.setdefault((regime, k), []).append(p)
          records.append(_record("resnet_50", "dtd", regime, seed, p, train=47 * k,
                                 examples_per_class=k))
      records.append(_record("resnet_50", "dtd", regime, 0, base + 0.3, train=1880))
    store = results.ResultsStore(os.path.join(tmp, "r.sqlite"))
    store.put_many(records)
    cls.out = os.path.join(tmp, "report")
    cls.paths = document.write_report(store, cls.out, bootstrap_samples=20)

  def test_table_holds_mean_and_standard_error_over_subsets(self):
    rows = {(r["regime"], r["examples_per_class"]): r
            for r in _csv(os.path.join(self.out, "low_data.csv"))}
    self.assertLen(rows, 6)
    for (regime, k), values in self.accuracy.items():
      row = rows[(regime, str(k))]
      self.assertAlmostEqual(float(row["accuracy"]), 100 * statistics.mean(values))
      self.assertAlmostEqual(float(row["stderr"]), 100 * statistics.stdev(values) / math.sqrt(3))
      self.assertEqual(row["seeds"], "3")
      self.assertEqual(float(row["train_images"]), 47 * k)
    self.assertAlmostEqual(float(rows[("finetune", "0")]["accuracy"]), 80.0)
    self.assertEqual(rows[("finetune", "0")]["stderr"], "")
    finetune_8 = self.accuracy[("finetune", 8)]
    self.assertIn(f"| dtd | resnet_50 | finetune | 8 | 3 | {100 * statistics.mean(finetune_8):.2f}"
                  f" | {100 * statistics.stdev(finetune_8) / math.sqrt(3):.2f} | 376 |",
                  self.paths.markdown)
    self.assertIn("| dtd | resnet_50 | scratch | all | 1 | 60.00 | – | 1,880 |",
                  self.paths.markdown)
    self.assertTrue(_is_png(os.path.join(self.out, "figure9.png")))
    self.assertIn("figure9.png", self.paths.names())
    self.assertIn("standard error over 3 subsets", self.paths.markdown)
    # DTD's K on the paper's Figure 9: 1, 2, 4, 8, 16, 32; these lines have 2 and 8.
    self.assertIn("| dtd | 1 … 32 (6) | resnet_50 (finetune): 2/6, 3 seeds; resnet_50 "
                  "(scratch): 2/6, 3 seeds |", self.paths.markdown)

  def test_low_data_cells_leave_the_main_tables(self):
    table = {r["model"]: r for r in _csv(self.paths.tables["finetune"])}
    self.assertEqual(list(table), ["resnet_50"])  # Not renamed into variants.
    self.assertAlmostEqual(float(table["resnet_50"]["dtd"]), 80.0)
    self.assertEqual(table["resnet_50"]["dtd_seeds"], "1")
    self.assertIn("- 12 low-data cells (`--examples_per_class`) are not in these tables",
                  self.paths.markdown)
    self.assertIn("14 successful and 0 failed runs", self.paths.markdown)

  def test_other_differing_settings_name_the_lines(self):
    records = [_record("m", "dtd", "finetune", 0, 0.5, examples_per_class=2, batch_size=b)
               for b in (32, 64)]
    points = studies.low_data_points(records)
    self.assertCountEqual([p.model for p in points], ["m [batch_size=32]", "m [batch_size=64]"])


class StepBudgetTest(absltest.TestCase):

  FINETUNE = {100: 0.60, 200: 0.905, 400: 0.91, 800: 0.90}
  SCRATCH = {100: 0.30, 200: 0.50, 400: 0.70, 800: 0.85}

  @classmethod
  def _records(cls):
    out = [_record("inception_v3", "dtd", regime, 0, p, train_steps=steps)
           for regime, curve in (("finetune", cls.FINETUNE), ("scratch", cls.SCRATCH))
           for steps, p in curve.items()]
    out.append(_record("inception_v3", "dtd", "scratch", 1, 0.52, train_steps=200))
    out.append(_record("resnet_50", "dtd", "finetune", 0, 0.7))  # One budget: no curve.
    return out

  @classmethod
  def setUpClass(cls):
    """The report of `_records`, once for the tests that read it."""
    super().setUpClass()
    cls.out = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    cls.addClassCleanup(shutil.rmtree, cls.out, ignore_errors=True)
    cls.paths = document.write_report(cls._records(), cls.out, bootstrap_samples=20)

  def _by_hand(self, curve, threshold):
    """The smallest budget whose odds reach `threshold` x the best odds."""
    odds = {steps: p / (1 - p) for steps, p in curve.items()}
    best = max(odds.values())
    return min(steps for steps, o in odds.items() if o >= threshold * best)

  def test_curves_convergence_and_speedup(self):
    out, paths = self.out, self.paths
    points = {(r["regime"], r["train_steps"]): r for r in _csv(os.path.join(out, "budgets.csv"))}
    self.assertLen(points, 8)  # resnet_50's single budget is not a curve.
    self.assertAlmostEqual(float(points[("scratch", "200")]["accuracy"]), 51.0)
    self.assertAlmostEqual(float(points[("scratch", "200")]["stderr"]),
                           100 * statistics.stdev([0.50, 0.52]) / math.sqrt(2))
    fine, scratch = self._by_hand(self.FINETUNE, 0.9), self._by_hand(self.SCRATCH, 0.9)
    self.assertEqual((fine, scratch), (200, 800))  # As worked out: 9.53 >= 0.9 x 10.1.
    converged = {r["regime"]: r for r in _csv(os.path.join(out, "convergence.csv"))}
    self.assertEqual(converged["finetune"]["converged_steps"], "200")
    self.assertEqual(converged["finetune"]["best_steps"], "400")
    self.assertEqual(converged["scratch"]["converged_steps"], "800")
    self.assertIn("| dtd | inception_v3 | 200 | 800 | 4x |", paths.markdown)
    self.assertIn("odds p/(1-p) reach 0.9 of its best budget's odds (log-odds within 0.105",
                  paths.markdown)
    self.assertTrue(_is_png(os.path.join(out, "figure8.png")))

  def test_cross_dataset_average_beside_the_paper_s(self):
    # Two datasets: dtd (curves above: finetune converges at 200, scratch at 800) and flowers
    # (finetune at 100, scratch at 400); 1,000 and 2,000 final-fit images, batch 32.
    flowers = {"finetune": {100: 0.905, 200: 0.91, 400: 0.905, 800: 0.90},
               "scratch": {100: 0.2, 200: 0.4, 400: 0.80, 800: 0.81}}
    records = []
    for dataset, curves, images in (("dtd", {"finetune": self.FINETUNE,
                                             "scratch": self.SCRATCH}, 1000),
                                    ("oxford_flowers", flowers, 2000)):
      for regime, curve in curves.items():
        for steps, p in curve.items():
          r = _record("inception_v4", dataset, regime, 0, p, train_steps=steps, batch_size=32)
          records.append({**r, "sizes": {"train": images - 100, "trainval": images}})
    want_steps = {"finetune": math.sqrt(200 * 100), "scratch": math.sqrt(800 * 400)}
    want_epochs = {"finetune": math.sqrt(200 * 32 / 1000 * 100 * 32 / 2000),
                   "scratch": math.sqrt(800 * 32 / 1000 * 400 * 32 / 2000)}
    (average,) = studies.convergence_averages(
        studies.convergence(studies.budget_points(records)))
    self.assertEqual(average.datasets, ("dtd", "oxford_flowers"))
    for regime in ("finetune", "scratch"):
      self.assertAlmostEqual(average.steps[regime], want_steps[regime])
      self.assertAlmostEqual(average.epochs[regime], want_epochs[regime])
    self.assertAlmostEqual(average.ratio_steps, 4.0)
    out = self.create_tempdir().full_path
    # The text and tables only: the figures are drawn elsewhere in this file and in
    # test_report (drawing is most of a report's time).
    with report_figures.not_drawn((study_plots, "plot_budgets")):
      paths = document.write_report(records, out, bootstrap_samples=20)
    self.assertIn(f"| inception_v4 | 2: dtd, oxford_flowers | {want_steps['finetune']:,.0f} | "
                  f"{want_steps['scratch']:,.0f} | 4x | {want_epochs['finetune']:.3g} | "
                  f"{want_epochs['scratch']:.3g} | 4x |", paths.markdown)
    self.assertIn("| paper: inception_v4 | 12 | 1,151 | 19,531 | 17x | 26 | 444 | 17.1x |",
                  paths.markdown)
    self.assertIn("fine-tuning 1,151 steps (26 epochs), random init 19,531 steps (444 epochs)",
                  paths.markdown)
    self.assertIn("Threshold: odds reaching 0.9 x the best budget's, per curve: each "
                  "regime's threshold is relative to its own best budget", paths.markdown)
    (row,) = _csv(os.path.join(out, "convergence_average.csv"))
    self.assertAlmostEqual(float(row["scratch_epochs"]), want_epochs["scratch"])

  def test_threshold_is_a_parameter(self):
    points = studies.budget_points(self._records())
    speedups = studies.speedups(studies.convergence(points, threshold=0.2))
    self.assertEqual((speedups[0].finetune_steps, speedups[0].scratch_steps),
                     (self._by_hand(self.FINETUNE, 0.2), self._by_hand(self.SCRATCH, 0.2)))
    self.assertEqual(speedups[0].ratio, 2.0)
    with self.assertRaisesRegex(ValueError, "--convergence_threshold=1.5 must be in \\(0, 1\\]"):
      studies.convergence(points, threshold=1.5)

  def test_finetune_from_a_weights_file_pairs_with_scratch_of_its_network(self):
    records = []
    for regime, weights, curve in (("finetune", "/w/net.h5", self.FINETUNE),
                                   ("scratch", None, self.SCRATCH)):
      for steps, p in curve.items():
        config = ExperimentConfig(model="keras:MobileNet", dataset="dtd", regime=regime,
                                  weights=weights, image_size=64, train_steps=steps)
        record = _record(config.model_label, "dtd", regime, 0, p, train_steps=steps)
        records.append({**record, "config": config.to_dict()})
    self.assertEqual({r["model"] for r in records},
                     {"keras:MobileNet@net.h5@64px", "keras:MobileNet@64px"})
    (speedup,) = studies.speedups(studies.convergence(studies.budget_points(records)))
    self.assertEqual((speedup.network, speedup.ratio), ("keras:MobileNet@64px", 4.0))

  def test_each_study_names_its_lines_by_its_own_cells_only(self):
    # A budget study (K = all at 20, 40, 60 steps) and a low-data study (K = 2 at 60 steps) in
    # one store: each study's lines differ from the other study's cells, not among themselves.
    records = [_record("m", "dtd", "finetune", 0, p, train_steps=t)
               for t, p in ((20, 0.3), (40, 0.5), (60, 0.7))]
    records.append(_record("m", "dtd", "finetune", 0, 0.4, train_steps=60,
                           examples_per_class=2))
    low = studies.low_data_points(records)
    self.assertEqual([(p.model, p.x, p.mean) for p in low], [("m", 0, 0.7), ("m", 2, 0.4)])
    budgets = studies.budget_points(records)
    self.assertEqual([(p.model, p.x) for p in budgets], [("m", 20), ("m", 40), ("m", 60)])

  def test_main_tables_show_a_study_at_its_largest_budget(self):
    paths = self.paths
    table = {r["model"]: r for r in _csv(paths.tables["scratch"])}
    self.assertEqual(list(table), ["inception_v3"])
    self.assertAlmostEqual(float(table["inception_v3"]["dtd"]), 85.0)
    self.assertIn("- 7 cells of step-budget studies below their largest budget are not in "
                  "these tables", paths.markdown)


class PerDatasetTest(absltest.TestCase):

  def test_mean_spread_and_simclr_reference(self):
    records = [_record(m, "dtd", "logreg", 0, p)
               for m, p in (("a", 0.6), ("b", 0.7), ("c", 0.8))]
    records += [_record("a", "dtd", "logreg", 1, 0.62), _record("b", "folder:/x", "logreg", 0, 0.9),
                _record("a", "dtd", "finetune", 0, 0.75),
                _record("a", "dtd", "finetune", 0, 0.1, examples_per_class=2)]
    out = self.create_tempdir().full_path
    paths = document.write_report(records, out, bootstrap_samples=20)
    rows = {(r["dataset"], r["regime"]): r for r in _csv(os.path.join(out, "per_dataset.csv"))}
    dtd = [100 * statistics.mean([0.6, 0.62]), 70.0, 80.0]  # Model a: mean over its seeds.
    row = rows[("dtd", "logreg")]
    self.assertAlmostEqual(float(row["mean"]), statistics.mean(dtd))
    self.assertAlmostEqual(float(row["std"]), statistics.pstdev(dtd))
    self.assertAlmostEqual(float(row["min"]), 61.0)
    self.assertAlmostEqual(float(row["max"]), 80.0)
    self.assertEqual(row["n_models"], "3")
    # SimCLR's Table B.5, ResNet-50 on DTD: linear 74.9, fine-tuned 74.6, random init 64.8.
    self.assertAlmostEqual(float(row["simclr_resnet50"]), 74.9)
    self.assertAlmostEqual(float(rows[("dtd", "finetune")]["mean"]), 75.0)  # Low data: out.
    self.assertEqual(rows[("folder:/x", "logreg")]["simclr_resnet50"], "")
    self.assertIn(f"| dtd | {statistics.mean(dtd):.1f} ± {statistics.pstdev(dtd):.1f} "
                  f"[61.0, 80.0] (3) | 75.0 ± 0.0 [75.0, 75.0] (1) | 74.9 / 74.6 |",
                  paths.markdown)
    self.assertTrue(_is_png(os.path.join(out, "figure6.png")))

  def test_reference_values(self):
    reference = studies.simclr_resnet50()
    self.assertLen(reference, 36)  # 12 datasets x 3 regimes.
    self.assertAlmostEqual(reference[("dtd", "scratch")], 0.648)
    self.assertAlmostEqual(reference[("voc2007", "finetune")], 0.850)

  def test_no_results_no_study_sections(self):
    paths = document.write_report([], self.create_tempdir().full_path)
    for title in ("Figure 6", "Figure 8", "Figure 9", "Figure 4"):
      self.assertNotIn(title, paths.markdown)


def _write_entry(path, features, labels):
  """A feature-cache entry as features.py writes it (raw float32 rows, labels, meta)."""
  os.makedirs(path)
  np.asarray(features, np.float32).tofile(os.path.join(path, "features.f32"))
  np.save(os.path.join(path, "labels.npy"), labels)
  with open(os.path.join(path, "meta.json"), "w") as f:
    json.dump({"num_examples": len(features), "feature_dim": features.shape[1]}, f)
  return path


class FeatureMapTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.labels = np.repeat(np.arange(3), 40)
    centres = rng.normal(0, 0.3, (3, 60))
    self.features = centres[self.labels] + rng.normal(0, 1.2, (120, 60))
    self.workdir = self.create_tempdir().full_path
    self.entry = _write_entry(os.path.join(self.workdir, "features", "k1"), self.features,
                              self.labels)
    self.record = _record("hub:/m/net", "dtd", "logreg", 0, 0.8)
    self.record["feature_cache"] = {"test": {"path": self.entry, "hit": False}}

  def test_knn_accuracy_matches_scikit_learn(self):
    expected = np.mean(model_selection.cross_val_predict(
        neighbors.KNeighborsClassifier(n_neighbors=5, algorithm="brute"), self.features,
        self.labels, cv=model_selection.LeaveOneOut()) == self.labels)
    self.assertBetween(expected, 0.5, 0.99)  # Overlapping clusters: a number that can move.
    self.assertAlmostEqual(feature_maps.knn_accuracy(self.features, self.labels), expected)

  def test_report_section_figure_and_numbers(self):
    out = self.create_tempdir().full_path
    paths = document.write_report([self.record], out, tsne=("hub:/m/net/dtd",),
                                  bootstrap_samples=20)
    expected = 100 * feature_maps.knn_accuracy(self.features, self.labels)
    row = _csv(os.path.join(out, "feature_maps.csv"))[0]
    self.assertAlmostEqual(float(row["knn_accuracy"]), expected, places=6)
    self.assertEqual((row["images"], row["test_images"]), ("120", "120"))
    self.assertIn(f"- hub:/m/net/dtd: 5-NN accuracy {expected:.1f}% (120 of 120 test images)",
                  paths.markdown)
    figure = [f for f in paths.study_files if os.path.basename(f).startswith("figure4_")]
    self.assertLen(figure, 1)
    self.assertTrue(_is_png(figure[0]))

  def test_sampling_and_embedding_shape(self):
    pair = feature_maps.CachedPair("m", "d", self.entry)
    fmap = feature_maps.make_feature_map(pair, max_images=45)
    self.assertEqual(fmap.embedding.shape, (45, 2))
    self.assertEqual(fmap.total_images, 120)
    self.assertTrue(np.all(np.isfinite(fmap.embedding)))

  def test_pairs_found_by_record_or_in_the_workdir(self):
    moved = dict(self.record, feature_cache={"test": {"path": "/gone/features/k1"}})
    self.assertEmpty(feature_maps.cached_test_features([moved]))
    found = feature_maps.cached_test_features(
        [moved], features_dir=os.path.join(self.workdir, "features"))
    self.assertEqual(found["hub:/m/net/dtd"].path, self.entry)
    with self.assertRaisesRegex(ValueError, "no cached test features for x/y. Pairs with "
                                "cached features \\(from logreg cells\\): hub:/m/net/dtd"):
      feature_maps.select(found, ["x/y"])
    self.assertEqual(list(feature_maps.select(found, ["all"])), ["hub:/m/net/dtd"])

  def test_multi_label_rows_take_their_first_class(self):
    labels = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], np.float32)
    np.testing.assert_array_equal(feature_maps.class_ids(labels), [1, 0, -1])


class ImportTest(absltest.TestCase):

  def test_study_modules_never_import_tensorflow(self):
    self.assertEqual(tf_free.heavy_modules_after(
        "from tfhub_transfer.report import feature_maps, studies, study_plots, "
        "study_sections"), [])


if __name__ == "__main__":
  absltest.main()
