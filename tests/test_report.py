"""Tests of the report: log-odds, correlation and its CI against scipy, files and wording."""

import csv
import math
import os
import re
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
from matplotlib import colors as colors_lib
from matplotlib import figure as figure_lib
from matplotlib import text as text_lib
import numpy as np
from PIL import Image
from scipy import stats

from tests import report_figures
from tests import tf_free
from tfhub_transfer import regimes
from tfhub_transfer.report import analyses
from tfhub_transfer.report import correlation
from tfhub_transfer.report import document as report
from tfhub_transfer.report import plots
from tfhub_transfer.report import reference
from tfhub_transfer.report import significance
from tfhub_transfer.report import studies
from tfhub_transfer.report import study_plots
from tfhub_transfer.report import transferability_check
from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results import store as results

# ImageNet top-1 of a few zoo networks' checkpoints, typed in from keras.io/api/applications
# and the TF-Slim table (not read from the package): what the report uses by default.
_TOP1 = {"inception_v1": 69.8, "mobilenet_v2": 71.3, "resnet_50": 74.9, "densenet_121": 75.0,
         "inception_v3": 77.9, "nasnet_large": 82.5}
_DATASETS = ("cifar10", "dtd", "oxford_flowers")


def _record(model, dataset, regime, seed, p, status="ok"):
  return {"model": model, "dataset": dataset, "regime": regime, "seed": seed,
          "status": status, "error": None if status == "ok" else "Traceback\nValueError: x",
          "metric": "mean_per_class" if dataset == "oxford_flowers" else "top1",
          "val_metric": p, "test_metric": p, "hparams": {}, "sizes": {}, "timings": {},
          "versions": {}, "devices": [], "config": {}, "created_at": "2026-01-01T00:00:00"}


def _synthetic(regime="finetune", models=tuple(_TOP1), seed=0):
  """Accuracies that grow with ImageNet top-1, plus noise; resnet_50 has three seeds."""
  rng = np.random.default_rng(seed)
  out = []
  for model in models:
    for dataset in _DATASETS:
      for s in range(3 if model == "resnet_50" else 1):
        p = 0.5 + 0.03 * (_TOP1[model] - 70) + rng.normal(0, 0.03)
        out.append(_record(model, dataset, regime, s, float(p)))
  return out


def _by_hand_avg_logodds(records, regime):
  """Mean over datasets of log(p / (1 - p)), p the seed-average, per model."""
  ps = {}
  for r in records:
    if r["regime"] == regime and r["status"] == "ok":
      ps.setdefault(r["model"], {}).setdefault(r["dataset"], []).append(r["test_metric"])
  return {m: sum(math.log(sum(v) / len(v) / (1 - sum(v) / len(v))) for v in d.values())
          / len(d) for m, d in ps.items()}


class LogOddsTest(absltest.TestCase):

  def test_formula(self):
    self.assertAlmostEqual(float(correlation.logodds(0.75)), math.log(3))
    self.assertAlmostEqual(float(correlation.logodds(0.5)), 0.0)
    np.testing.assert_allclose(correlation.logodds([0.1, 0.9]), [-math.log(9), math.log(9)])

  def test_clipped_away_from_0_and_1(self):
    eps = correlation.LOGODDS_EPS
    self.assertAlmostEqual(float(correlation.logodds(1.0)), math.log((1 - eps) / eps))
    self.assertAlmostEqual(float(correlation.logodds(0.0)), -math.log((1 - eps) / eps))


class CorrelationTest(parameterized.TestCase):

  def test_r_matches_scipy(self):
    records = _synthetic()
    cells = correlation.average_cells(records)
    corr = correlation.correlate(cells, "finetune", _TOP1, samples=500, seed=3)
    avg = _by_hand_avg_logodds(records, "finetune")
    models = sorted(_TOP1, key=_TOP1.get)
    self.assertEqual(corr.models, tuple(models))
    np.testing.assert_allclose(corr.logodds, [avg[m] for m in models], rtol=1e-12)
    expected = stats.pearsonr([_TOP1[m] for m in models], [avg[m] for m in models])
    self.assertAlmostEqual(corr.r, expected.statistic, places=12)
    self.assertEqual(corr.datasets, tuple(sorted(_DATASETS)))

  @parameterized.parameters(3, 8)
  def test_ci_matches_a_bootstrap_with_scipy(self, n):
    rng = np.random.default_rng(7)
    # mean([0.1] * 3) != 0.1: a resample of one point must still count as constant (r
    # undefined), not as r = 1, which would show in this negative correlation's CI.
    x = np.array([0.1, 0.7, 0.2] + list(rng.normal(size=n - 3)))
    y = np.array([0.7, 0.1, 0.2] + list(-x[3:] + rng.normal(size=n - 3)))
    samples, seed = 400, 11
    r, low, high = correlation.pearson_with_ci(x, y, samples=samples, seed=seed)
    # The documented procedure, with scipy's r for each resample.
    index = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    rs = [stats.pearsonr(x[i], y[i]).statistic for i in index
          if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0]
    self.assertAlmostEqual(r, stats.pearsonr(x, y).statistic, places=12)
    np.testing.assert_allclose([low, high], np.percentile(rs, [2.5, 97.5]), atol=1e-12)
    if n < 8:
      return
    # And scipy's own percentile bootstrap (other draws) agrees roughly.
    ci = stats.bootstrap((x, y), lambda a, b: stats.pearsonr(a, b).statistic, paired=True,
                         vectorized=False, n_resamples=400, method="percentile",
                         random_state=0).confidence_interval
    self.assertLess(abs(low - ci.low), 0.1)
    self.assertLess(abs(high - ci.high), 0.1)

  def test_paper_reference_reproduces_published_correlations(self):
    networks = reference.paper_networks()
    self.assertLen(networks, 16)
    self.assertLen(reference.paper_datasets(), 12)
    top1 = [n.imagenet_top1 for n in networks.values()]
    for regime, published in {"logreg": 0.99, "finetune": 0.96, "scratch": 0.55}.items():
      r = stats.pearsonr(top1, [n.avg_logodds(regime) for n in networks.values()]).statistic
      self.assertLessEqual(abs(r - published), 0.01, regime)
      # Through the report: one dataset whose accuracy has the paper's average log-odds.
      records = [_record(n.name, "cifar10", regime, 0, 1 / (1 + math.exp(-n.avg_logodds(regime))))
                 for n in networks.values()]
      corr = correlation.correlate(correlation.average_cells(records), regime,
                                   {n.name: n.imagenet_top1 for n in networks.values()},
                                   samples=100)
      self.assertLessEqual(abs(corr.r - published), 0.01, regime)
      self.assertEqual(regimes.REGIMES[regime].paper_correlation, published)

  def test_both_paper_references_labelled_and_the_comparable_one_named(self):
    self.enter_context(report_figures.not_drawn())
    public = _synthetic("logreg") + _synthetic("scratch")
    text = report.write_report(public, self.create_tempdir().full_path,
                               bootstrap_samples=20).markdown
    logreg = text.split("## Fine-tuned")[0]
    self.assertIn("References: the paper (CVPR 2019), its 16 networks retrained by the "
                  "authors: r = 0.99; the paper's v1 (arXiv:1805.08974v1), 13 public "
                  "checkpoints: r² = 0.24 (r = 0.49). Ours pairs public ImageNet checkpoints "
                  "with their published top-1: compare with the public-checkpoint reference",
                  logreg)
    scratch = text.split("## Trained from random")[1]
    self.assertIn("Reference: the paper (CVPR 2019), its 16 networks retrained by the authors: "
                  "r = 0.55. Random init loads no checkpoint", scratch)
    files = [{**r, "config": {"weights": f"/w/{r['model']}.h5"}}
             for r in _synthetic("finetune")]
    text = report.write_report(files, self.create_tempdir().full_path,
                               bootstrap_samples=20).markdown
    self.assertIn("r² = 0.86 (r = 0.93). Ours loads weights files: the retrained reference "
                  "applies only if", text)
    # A model without a known top-1 is left out of r, not out of what the run loaded.
    unplaced = [{**_record("keras:Net@w.h5", d, "logreg", 0, 0.7), "config": {"weights": "w.h5"}}
                for d in _DATASETS]
    text = report.write_report(unplaced, self.create_tempdir().full_path,
                               bootstrap_samples=20).markdown
    self.assertIn("r² = 0.24 (r = 0.49). Ours loads weights files", text)

  def test_too_few_models_and_unknown_top1(self):
    self.enter_context(report_figures.not_drawn())
    records = _synthetic(models=("resnet_50", "inception_v3"))
    records.append(_record("hub:my/net", "cifar10", "finetune", 0, 0.9))
    corr = correlation.correlate(correlation.average_cells(records), "finetune", _TOP1)
    self.assertIsNone(corr.r)
    self.assertIn("too few results: 2 model(s)", corr.reason)
    self.assertEqual(corr.excluded, ("hub:my/net",))
    text = report.write_report(records, self.create_tempdir().full_path,
                               bootstrap_samples=50).markdown
    self.assertIn("not computed, too few results: 2 model(s) with a known ImageNet top-1 "
                  "(need at least 3)", text)
    self.assertIn("Excluded, ImageNet top-1 unknown: hub:my/net", text)
    self.assertIn("## Logistic regression on frozen features (`logreg`)\n\nNo results in "
                  "this regime.", text)
    self.assertNotIn("Pearson r (ImageNet top-1 vs average log-odds): 0", text)

  def test_user_top1_includes_user_models(self):
    records = _synthetic(models=("resnet_50", "inception_v3"))
    records.append(_record("hub:my/net", "cifar10", "finetune", 0, 0.9))
    corr = correlation.correlate(correlation.average_cells(records), "finetune",
                                 {**_TOP1, "hub:my/net": 79.0})
    self.assertEqual(corr.datasets, ("cifar10",))
    self.assertLen(corr.models, 3)
    self.assertIsNotNone(corr.r)


class WriteReportTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.out = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))

  def test_files_tables_and_figure(self):
    records = _synthetic("logreg") + [_record("resnet_50", "cifar10", "scratch", 0, 0.5,
                                              status="failed")]
    store = results.ResultsStore(os.path.join(self.out, "w", "results.sqlite"))
    store.put_many(records)
    paths = report.write_report(store, self.out, bootstrap_samples=200)
    with open(paths.report_md) as f:
      self.assertEqual(f.read(), paths.markdown)
    self.assertIn("\n![Figure 1](figure1.png)\n\n![Figure 2](figure2.png)\n", paths.markdown)
    self.assertTrue(paths.markdown.endswith("\n![Figure 6](figure6.png)\n"))  # Per dataset.
    self.assertIn("resnet_50 / cifar10 / scratch / seed 0: ValueError: x", paths.markdown)
    corr_line = next(x for x in paths.markdown.splitlines() if x.startswith("Pearson r"))
    avg = _by_hand_avg_logodds(records, "logreg")
    models = sorted(_TOP1, key=_TOP1.get)
    expected = stats.pearsonr([_TOP1[m] for m in models], [avg[m] for m in models])
    self.assertIn(f"Pearson r (ImageNet top-1 vs average log-odds): "
                  f"{expected.statistic:.2f}, 95% CI [", corr_line)

    with open(paths.tables["logreg"], newline="") as f:
      table = {row["model"]: row for row in csv.DictReader(f)}
    resnet = [r["test_metric"] for r in records if r["model"] == "resnet_50"
              and r["dataset"] == "dtd" and r["regime"] == "logreg"]
    self.assertAlmostEqual(float(table["resnet_50"]["dtd"]), 100 * sum(resnet) / 3)
    self.assertEqual(table["resnet_50"]["dtd_seeds"], "3")
    self.assertEqual(float(table["mobilenet_v2"]["imagenet_top1"]), 71.3)
    cells = []
    for dataset in _DATASETS:  # Already in the paper's Table 1 order.
      ps = [r["test_metric"] for r in records if r["model"] == "resnet_50"
            and r["dataset"] == dataset and r["regime"] == "logreg"]
      cells.append(f"{100 * sum(ps) / len(ps):.1f} (3)")
    self.assertIn(f"| resnet_50 | 74.90 | {' | '.join(cells)} | {avg['resnet_50']:.2f} (3) |",
                  paths.markdown)
    with open(paths.tables["finetune"], newline="") as f:
      self.assertEqual(list(csv.reader(f)), [["model", "imagenet_top1"]])

    with open(paths.summary_csv, newline="") as f:
      summary = list(csv.DictReader(f))
    self.assertLen(summary, len(_TOP1))
    for row in summary:
      self.assertAlmostEqual(float(row["avg_logodds"]), avg[row["model"]], places=10)
      self.assertEqual(row["n_datasets"], "3")
      self.assertEqual(float(row["paper_avg_logodds"]),
                       reference.paper_networks()[row["model"]].avg_logodds("logreg"))

    with open(paths.figure_png, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    with Image.open(paths.figure_png) as image:
      self.assertEqual(image.format, "PNG")
      self.assertEqual(image.size, (1650, 594))

  def test_empty_store(self):
    paths = report.write_report([], self.out)
    self.assertEqual(paths.markdown.count("No results in this regime."), 3)
    self.assertTrue(os.path.getsize(paths.figure_png) > 0)
    with open(paths.summary_csv) as f:
      self.assertEqual(f.read().split(",")[0], "regime")

  def test_bad_input_says_what_to_pass(self):
    with self.assertRaisesRegex(TypeError, r"merged.read_workdir\('w/results.sqlite'\)"):
      report.write_report("w/results.sqlite", self.out)
    with self.assertRaisesRegex(ValueError, "lacks"):
      report.write_report([{"model": "resnet_50"}], self.out)


class Figure1Test(absltest.TestCase):

  def _figure(self, records, top1=None):
    cells = correlation.average_cells(records)
    corrs = {regime: correlation.correlate(cells, regime, top1 or _TOP1, samples=50)
             for regime in regimes.REGIMES}
    fig = plots.make_figure1(corrs)
    fig.canvas.draw()  # Places every text as in the PNG.
    return corrs, fig

  def _check_nothing_spills(self, fig):
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    legend = fig.legends[0]
    texts = [legend.get_title(), *legend.get_texts()]
    for ax in fig.axes:
      texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
    for text in texts:
      if text.get_text():
        box = text_lib.Text.get_window_extent(text, renderer)
        self.assertTrue(frame.x0 <= box.x0 and box.x1 <= frame.x1 and
                        frame.y0 <= box.y0 and box.y1 <= frame.y1, text.get_text())

  def test_a_model_without_imagenet_top1_is_a_dashed_line_and_no_message_covers_data(self):
    # The quickstart's case: one model, top-1 unknown, in one regime.
    records = [_record("keras:Mine", "cifar10", "scratch", 0, 0.8),
               _record("keras:Mine", "dtd", "scratch", 0, 0.6)]
    corrs, fig = self._figure(records)
    by_hand = (math.log(0.8 / 0.2) + math.log(0.6 / 0.4)) / 2
    self.assertEqual(corrs["scratch"].excluded, ("keras:Mine",))
    self.assertAlmostEqual(corrs["scratch"].excluded_logodds[0], by_hand, places=12)
    axes = dict(zip(regimes.REGIMES, fig.axes))
    flat = [line for line in axes["scratch"].get_lines()
            if len(set(line.get_ydata())) == 1 and line.get_linestyle() == "--"]
    self.assertLen(flat, 1)
    self.assertAlmostEqual(flat[0].get_ydata()[0], by_hand, places=12)
    low, high = axes["scratch"].get_ylim()
    self.assertLess(low, by_hand)
    self.assertLess(by_hand, high)
    for ax in fig.axes:
      self.assertEqual(list(ax.texts), [])  # Messages are in titles and under the panels.
    self.assertIn("r needs 3 models with a known ImageNet top-1, has 0 (1 without: dashed)",
                  axes["scratch"].get_title().replace("\n", " "))
    self.assertIn("no results of ours in this regime", axes["logreg"].get_title())
    legend = fig.legends[0]
    self.assertIn("keras:Mine: ImageNet top-1 unknown",
                  [t.get_text() for t in legend.get_texts()])
    self.assertIn("--imagenet_top1='NAME=TOP1'", legend.get_title().get_text())
    self._check_nothing_spills(fig)

  def test_sixteen_labelled_networks_do_not_overlap(self):
    # The paper's 16 networks on 3 datasets each, at their published average log-odds.
    records = []
    for network in reference.paper_networks().values():
      for regime in regimes.REGIMES:
        p = 1 / (1 + math.exp(-network.avg_logodds(regime)))
        records += [_record(network.name, d, regime, 0, p) for d in _DATASETS]
    top1 = {n.name: n.imagenet_top1 for n in reference.paper_networks().values()}
    corrs, fig = self._figure(records, top1)
    renderer = fig.canvas.get_renderer()
    for ax, regime in zip(fig.axes, regimes.REGIMES):
      self.assertIsNotNone(corrs[regime].r)
      self.assertCountEqual([t.get_text() for t in ax.texts], top1)
      # The names' text (an Annotation's own extent includes its leader line).
      boxes = [text_lib.Text.get_window_extent(t, renderer) for t in ax.texts]
      frame = ax.get_window_extent(renderer)
      for i, box in enumerate(boxes):
        self.assertTrue(frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1),
                        ax.texts[i].get_text())
        for j in range(i):
          self.assertFalse(box.overlaps(boxes[j]),
                           (regime, ax.texts[i].get_text(), ax.texts[j].get_text()))
    self._check_nothing_spills(fig)


def _store_with_predictions(root, accuracies, regime="logreg", dataset="cifar10", n=400,
                            seed=0, **extra):
  """A store whose records have per-example test predictions with the given accuracies."""
  store = results.ResultsStore(os.path.join(root, "results.sqlite"))
  labels = np.arange(n) % 10
  rng = np.random.default_rng(seed)
  preds = {}
  for model, accuracy in accuracies.items():
    predicted = np.where(rng.random(n) < accuracy, labels, (labels + 1) % 10)
    preds[model] = predictions_lib.from_scores(labels, np.eye(10)[predicted],
                                               multi_label=False)
    name = predictions_lib.save(os.path.join(root, "predictions"), model, preds[model])
    record = _record(model, dataset, regime, 0, float(np.mean(preds[model].correct())))
    record.update(predictions=predictions_lib.entry(name, preds[model]), **extra)
    store.put(record)
  return store, preds


class TopOneTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(report_figures.not_drawn())

  def test_checkpoint_top1_by_default_paper_values_beside_the_paper(self):
    records = _synthetic("logreg", models=("mobilenet_v2", "resnet_50", "inception_v3"))
    records.append(_record("hub:mine", "cifar10", "logreg", 0, 0.8))
    out = self.create_tempdir().full_path
    paths = report.write_report(records, out, bootstrap_samples=50)
    text = paths.markdown
    self.assertIn("| resnet_50 | 74.90 |", text)  # Keras' ResNet50 checkpoint: 74.9.
    # Beside the paper's numbers, the paper's own top-1 (its retrained network: 76.9).
    self.assertRegex(text, r"\| resnet_50 \| 74.90 \| 76.90 \| [0-9.]+ \(3\) \| 1.35 \|")
    self.assertIn("| resnet_50 | 74.90 | keras.io/api/applications", text)
    self.assertIn("| hub:mine | – | unknown: excluded from the correlations", text)
    corr_line = next(x for x in text.splitlines() if x.startswith("Pearson r"))
    self.assertIn("Excluded, ImageNet top-1 unknown: hub:mine", corr_line)
    with open(paths.top1_csv, newline="") as f:
      rows = {r["model"]: r for r in csv.DictReader(f)}
    self.assertEqual((rows["inception_v3"]["imagenet_top1"],
                      rows["inception_v3"]["paper_imagenet_top1"]), ("77.9", "78.63"))

    overridden = report.write_report(records, out, bootstrap_samples=50,
                                     imagenet_top1={"resnet_50": 76.0, "hub:mine": 79.0})
    self.assertIn("| resnet_50 | 76.00 | --imagenet_top1 |", overridden.markdown)
    self.assertIn("| hub:mine | 79.00 | --imagenet_top1 |", overridden.markdown)
    self.assertNotIn("Excluded, ImageNet top-1 unknown", overridden.markdown)


class SignificanceInReportTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(report_figures.not_drawn())

  def test_bold_marks_the_best_and_those_not_significantly_worse(self):
    root = self.create_tempdir().full_path
    store, preds = _store_with_predictions(
        root, {"mobilenet_v2": 0.6, "resnet_50": 0.84, "inception_v3": 0.86})
    paths = report.write_report(store, os.path.join(root, "report"), bootstrap_samples=50)
    best = significance.permutation_test(preds["inception_v3"], preds["resnet_50"],
                                         metric="top1", seed=0)
    worst = significance.permutation_test(preds["inception_v3"], preds["mobilenet_v2"],
                                          metric="top1", seed=0)
    self.assertGreater(best.p_value, 0.05)
    self.assertLess(worst.p_value, 0.05)
    logreg_section = paths.markdown.split("## Fine-tuned")[0]
    table = {line.split(" | ")[0][2:]: line for line in logreg_section.splitlines()
             if line.startswith("| ") and "cifar10" not in line}
    acc = {m: 100 * float(np.mean(p.correct())) for m, p in preds.items()}
    self.assertIn(f"| **{acc['inception_v3']:.1f}** |", table["inception_v3"])
    self.assertIn(f"| **{acc['resnet_50']:.1f}** |", table["resnet_50"])
    self.assertIn(f"| {acc['mobilenet_v2']:.1f} |", table["mobilenet_v2"])
    self.assertIn("10,000 permutations", paths.markdown)
    with open(paths.significance_csv, newline="") as f:
      rows = {r["model"]: r for r in csv.DictReader(f)}
    self.assertAlmostEqual(float(rows["mobilenet_v2"]["p_value"]), worst.p_value)
    self.assertEqual(rows["resnet_50"]["not_different_from_best"], "True")
    self.assertEqual(rows["inception_v3"]["best_model"], "inception_v3")

  def test_reference_rows_beside_resnet_50_with_source_and_caveat(self):
    records = _synthetic("scratch", models=("mobilenet_v2", "resnet_50", "inception_v3"))
    records.append(_record("resnet_50@32px", "dtd", "scratch", 1, 0.3))
    records[-1]["config"] = {"eval_preprocessing": "simclr"}
    text = report.write_report(records, self.create_tempdir().full_path,
                               bootstrap_samples=50).markdown
    # Each side's evaluation preprocessing is named (records without the field: the default).
    self.assertIn("Evaluation preprocessing: SimCLR's shorter side to S, central S crop, "
                  "bicubic (simclr); our resnet_50 rows' shorter side to S, central S crop, "
                  "bicubic (simclr); shorter side to S / 0.875, central S crop, bilinear "
                  "(slim) (`--eval_preprocessing`)", text)
    # SimCLR's Table B.5, Random init: CIFAR-10 95.9, DTD 64.8, Flowers 92.0 (typed in).
    self.assertIn("| *SimCLR 2020 ResNet-50 (reference)* | – | *95.9* | *64.8* | *92.0* | – |",
                  text)
    self.assertEqual(text.count("SimCLR 2020 ResNet-50 (reference)* | –"), 1)
    self.assertIn("Appendix B.8, Table B.5", text)
    self.assertIn("not Keras' ResNet50 checkpoint", text)
    self.assertIn("Not tested: cifar10: too few results: 0 model(s) with stored test "
                  "predictions (need at least 2)", text)


class PaperStatisticsInReportTest(absltest.TestCase):

  def test_statistics_section_and_figure2(self):
    records = _synthetic("logreg") + _synthetic("finetune", seed=1)
    paths = report.write_report(records, self.create_tempdir().full_path,
                                bootstrap_samples=50)
    text = paths.markdown
    cells = correlation.average_cells(records)
    wins = sum(cells[("finetune", m, d)].mean > cells[("logreg", m, d)].mean
               for m in _TOP1 for d in _DATASETS)
    self.assertIn(f"Fine-tuning beats logistic regression (higher test metric) on {wins} of "
                  f"{len(_TOP1) * len(_DATASETS)} (model, dataset) pairs with both results "
                  f"(paper: 179 of 192).", text)
    self.assertIn("sqrt(M / (M - 1))", text)  # Morey's formula, stated.
    # _record has no sizes: the paper's Table 1 ones; cifar10 is the only large dataset.
    self.assertIn("cifar10 50,000 (paper), dtd 3,760 (paper)", text)
    r_ci = r"[0-9.]+ \[[-0-9.]+, [-0-9.]+\]"
    self.assertRegex(text, rf"\| `logreg` \| {r_ci} \(6 models, 2 datasets\) \| {r_ci} \(6 "
                           rf"models, 1 dataset\) \|")
    self.assertIn("| `scratch` | too few results: no small dataset in this regime | too few "
                  "results: no large dataset in this regime |", text)
    self.assertIn("- `scratch`: no error bars, too few results", text)
    with open(paths.summary_csv, newline="") as f:
      rows = list(csv.DictReader(f))
    ci = [float(r["avg_logodds_common_ci95"]) for r in rows]
    self.assertLen(ci, 2 * len(_TOP1))
    self.assertTrue(all(w > 0 for w in ci))
    # Figure 1 draws standard errors, as the paper: the 95% half-width over t_{0.975, N-1}
    # (N = 3 common datasets).
    for r in rows:
      self.assertAlmostEqual(float(r["avg_logodds_common_se"]),
                             float(r["avg_logodds_common_ci95"]) / 4.302652729911275)
    self.assertIn("Error bars in Figure 1: within-subject standard errors", text)
    # The bold average: the best and those a paired t-test over datasets cannot tell from it.
    logreg = [r for r in rows if r["regime"] == "logreg"]
    best = max(logreg, key=lambda r: float(r["avg_logodds_common"]))
    self.assertEqual(float(best["p_vs_best_average"]), 1.0)
    logreg_section = text.split("## Fine-tuned")[0]
    for r in logreg:
      average = f"{float(r['avg_logodds']):.2f}"
      line = next(x for x in logreg_section.splitlines() if x.startswith(f"| {r['model']} |"))
      bold = float(r["p_vs_best_average"]) > 0.05
      self.assertIn(f"| **{average}** (3) |" if bold else f"| {average} (3) |", line)
    self.assertIn(f"Best: {best['model']};", logreg_section)
    with Image.open(paths.figure2_png) as image:
      self.assertEqual(image.format, "PNG")
    self.assertIn("![Figure 2](figure2.png)", text)

  def test_unconverged_logreg_cells_are_flagged(self):
    self.enter_context(report_figures.not_drawn())
    records = _synthetic("logreg", models=("mobilenet_v2", "resnet_50", "inception_v3"))
    records[0]["convergence"] = {
        "tol": 1e-4, "max_iter": 1000,
        "chosen": {"converged": False, "iterations": 1000, "max_abs_grad": 0.02},
        "refit": {"converged": True, "iterations": 12, "max_abs_grad": 5e-5}}
    text = report.write_report(records, self.create_tempdir().full_path,
                               bootstrap_samples=50).markdown
    model, dataset = records[0]["model"], records[0]["dataset"]
    self.assertIn(f"- {model} / {dataset} / seed 0: chosen fit (1000 iterations, max "
                  f"|gradient| 0.02) (tol 0.0001, max_iter 1000).", text)
    self.assertIn(f"{100 * records[0]['test_metric']:.1f}†", text)
    self.assertEqual(text.count("†:"), 1)


class RegimeColoursTest(absltest.TestCase):
  """Every figure draws each regime in its `RegimeSpec.colour`, and no other entry in it."""

  def _rgba(self, artist):
    if hasattr(artist, "get_facecolor") and len(np.atleast_2d(artist.get_facecolor())):
      return colors_lib.to_rgba(np.atleast_2d(artist.get_facecolor())[0])
    return colors_lib.to_rgba(artist.get_color())

  def _check_legends(self, fig, drawn):
    """Each legend entry naming a regime has its colour; any other entry no regime's."""
    colours = {colors_lib.to_rgba(s.colour): s.name for s in regimes.REGIMES.values()}
    seen = set()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    for legend in legends:
      for handle, text in zip(legend.legend_handles, legend.get_texts()):
        named = [r for r in regimes.REGIMES if re.search(rf"\b{r}\b", text.get_text())]
        rgba = self._rgba(handle)
        if named:
          self.assertLen(named, 1, text.get_text())
          self.assertEqual(rgba, colors_lib.to_rgba(regimes.REGIMES[named[0]].colour),
                           text.get_text())
          seen.add(named[0])
        else:
          self.assertNotIn(rgba, colours, text.get_text())
    self.assertEqual(seen, set(drawn))

  def _saved(self, plot_fn, *args):
    with mock.patch.object(figure_lib.Figure, "savefig", autospec=True) as savefig:
      plot_fn(*args, os.path.join(self.create_tempdir().full_path, "f.png"))
    return savefig.call_args.args[0]

  def test_figure1(self):
    records = [r for regime in regimes.REGIMES for r in _synthetic(regime)]
    records += [_record("net_unplaced", d, "logreg", 0, 0.6) for d in _DATASETS]
    cells = correlation.average_cells(records)
    corrs = {regime: correlation.correlate(cells, regime, _TOP1, samples=20)
             for regime in regimes.REGIMES}
    fig = plots.make_figure1(corrs)
    self._check_legends(fig, regimes.REGIMES)
    for ax, spec in zip(fig.axes, regimes.REGIMES.values()):  # Ours: the regime's colour.
      self.assertIn(colors_lib.to_rgba(spec.colour),
                    [self._rgba(c) for c in ax.collections])

  def test_figure2(self):
    line = analyses.Line(1.0, 0.0, (70.0, 80.0), (0.1, 0.2), (0.3, 0.4))
    panels = [analyses.Panel("dtd", regime, ("a", "b", "c"), (70.0, 75.0, 80.0),
                             (0.5, 0.6, 0.7), line) for regime in regimes.REGIMES]
    fig = self._saved(plots.plot_figure2, panels)
    self._check_legends(fig, regimes.REGIMES)

  def _points(self, first):
    return [studies.Point("dtd", model, regime, model, x, 0.5 + 0.01 * x, 0.01, 2, "top1",
                          100.0)
            for regime in regimes.REGIMES for model in ("net_a", "net_b")
            for x in (first, 2 * first)]

  def test_study_figures(self):
    fig = self._saved(study_plots.plot_low_data, self._points(5))
    self._check_legends(fig, regimes.REGIMES)
    fig = self._saved(study_plots.plot_budgets, self._points(100), [], [])
    self._check_legends(fig, regimes.REGIMES)
    bars = [studies.Bar("dtd", regime, "top1", 0.6, 0.1, 0.5, 0.7, 2, 0.65)
            for regime in regimes.REGIMES]
    fig = self._saved(study_plots.plot_per_dataset, bars)
    self._check_legends(fig, regimes.REGIMES)

  def test_transferability_check_figure(self):
    agreement = transferability_check.Agreement("logme", (0.1, 0.2, 0.3), 1.0, 0.9, None)
    groups = [transferability_check.Group("dtd", regime, "top1", ("a", "b", "c"),
                                          (0.5, 0.6, 0.7), (agreement,))
              for regime in regimes.REGIMES]
    fig = self._saved(transferability_check.plot, groups)
    for ax, spec in zip(fig.axes, regimes.REGIMES.values()):
      self.assertEqual([self._rgba(c) for c in ax.collections],
                       [colors_lib.to_rgba(spec.colour)])

  def test_no_figure_module_spells_a_regime_colour(self):
    report_dir = os.path.dirname(plots.__file__)
    for name in sorted(os.listdir(report_dir)):
      if name.endswith(".py"):
        with open(os.path.join(report_dir, name)) as f:
          source = f.read()
        for spec in regimes.REGIMES.values():
          self.assertNotIn(f'"{spec.colour}"', source, name)


class ImportTest(absltest.TestCase):

  def test_the_report_side_never_imports_tensorflow(self):
    self.assertEqual(tf_free.heavy_modules_after(
        "from tfhub_transfer.report import analyses, correlation, document, plots, "
        "reference, sections, significance, variants\n"
        "from tfhub_transfer.results import merged, predictions, records, storage, store, "
        "workdir\n"
        "from tfhub_transfer import cli, config, protocol, regimes, sweep"), [])


if __name__ == "__main__":
  absltest.main()
