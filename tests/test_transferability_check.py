"""The scores table of the results store and the report's check of scores against measured
transfer: weighted tau and Pearson r by hand, too-few-models wording, files; no TensorFlow."""

import json
import math
import os

from absl.testing import absltest
from PIL import Image

from tests import report_figures
from tests import tf_free
from tfhub_transfer.report import correlation
from tfhub_transfer.report import document
from tfhub_transfer.report import transferability_check as check_lib
from tfhub_transfer.results import records
from tfhub_transfer.results import store as results


def _result(model, dataset, p, regime="logreg", seed=0):
  return {"model": model, "dataset": dataset, "regime": regime, "seed": seed, "status": "ok",
          "error": None, "metric": "top1", "val_metric": p, "test_metric": p, "hparams": {},
          "sizes": {}, "timings": {}, "versions": {}, "devices": [], "config": {},
          "created_at": "2026-01-01T00:00:00"}


def _score(model, dataset, seed=0, protocol="p1", created_at="2026-01-02T00:00:00", **scores):
  return {"model": model, "dataset": dataset, "seed": seed, "protocol": protocol,
          "scores": scores, "sizes": {"examples": 100, "dim": 8},
          "timings": {"total_s": 1.0}, "created_at": created_at}


def _pearson(x, y):
  mx, my = sum(x) / len(x), sum(y) / len(y)
  sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
  return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


# Four models on dtd, measured (logreg) 0.5 < 0.6 < 0.7 < 0.9; two on cifar10.
_MEASURED = {"a": 0.5, "b": 0.6, "c": 0.7, "d": 0.9}
_RESULTS = ([_result(m, "dtd", p) for m, p in _MEASURED.items()]
            + [_result("a", "cifar10", 0.8), _result("b", "cifar10", 0.9)])
_SCORES = ([_score(m, "dtd", logme=s, knn=-s, hscore=None if m == "a" else s)
            for m, s in (("a", 1.0), ("b", 2.0), ("c", 4.0), ("d", 8.0))]
           + [_score("a", "cifar10", logme=1.0, knn=0.1, hscore=1.0),
              _score("b", "cifar10", logme=2.0, knn=0.2, hscore=2.0)])


class CheckTest(absltest.TestCase):

  def test_tau_r_and_reasons(self):
    cells = correlation.average_cells(_RESULTS)
    groups = {(g.dataset, g.regime): g for g in check_lib.check(cells, _SCORES)}
    self.assertEqual(set(groups), {("dtd", "logreg"), ("cifar10", "logreg")})
    dtd = groups[("dtd", "logreg")]
    self.assertTrue(dtd.checked)
    self.assertFalse(groups[("cifar10", "logreg")].checked)
    agree = {a.estimator: a for a in dtd.agreements}
    # Same ranking as the measured metric: weighted tau 1; the reversed ranking: -1.
    self.assertAlmostEqual(agree["logme"].tau, 1.0, places=12)
    self.assertAlmostEqual(agree["knn"].tau, -1.0, places=12)
    logodds = [math.log(p / (1 - p)) for p in _MEASURED.values()]
    self.assertAlmostEqual(agree["logme"].r, _pearson([1.0, 2.0, 4.0, 8.0], logodds), places=12)
    self.assertIsNone(agree["hscore"].tau)
    self.assertIn("not computed for every model", agree["hscore"].reason)

    text = "\n".join(check_lib.markdown(list(groups.values()), num_scored=len(_SCORES)))
    self.assertIn("| dtd | logreg | 4 | 1.00 |", text)
    self.assertIn("cifar10 / logreg: too few models to check, 2 with both a score and a "
                  "result (need at least 3)", text)

  def test_seeds_averaged_and_latest_protocol_only(self):
    rows = [_score("a", "dtd", seed=0, logme=1.0), _score("a", "dtd", seed=1, logme=2.0),
            _score("a", "dtd", seed=0, protocol="old", created_at="2025-01-01", logme=9.0)]
    self.assertEqual(check_lib.average_scores(rows), {("a", "dtd"): {"logme": 1.5}})

  def test_report_section_and_figure_from_the_store(self):
    # The report's other figures are not this test's (test_report's): not drawn.
    self.enter_context(report_figures.not_drawn())
    out = self.create_tempdir().full_path
    store = results.ResultsStore(os.path.join(out, "results.sqlite"))
    store.put_many(_RESULTS)
    for row in _SCORES:
      store.put_score(row)
    paths = document.write_report(store, os.path.join(out, "report"), bootstrap_samples=50)
    self.assertIn("## Transferability scores vs measured transfer", paths.markdown)
    self.assertIn("![Transferability check](transferability.png)", paths.markdown)
    self.assertIn("transferability.png", paths.names())
    with Image.open(paths.transferability_png) as image:
      self.assertEqual(image.format, "PNG")
      self.assertEqual(image.size, (1320, 380))  # One checked group, three estimators.
    # Too few models anywhere: the section says so and no figure is drawn.
    few = document.write_report(_RESULTS[4:], os.path.join(out, "few"), bootstrap_samples=50,
                                score_records=_SCORES[4:])
    self.assertIn("too few models to check, 2", few.markdown)
    self.assertIsNone(few.transferability_png)
    # No scores at all: no section.
    self.assertNotIn("Transferability", document.write_report(
        _RESULTS, os.path.join(out, "none"), bootstrap_samples=50).markdown)


class ScoreStoreTest(absltest.TestCase):

  def test_put_get_replace_filter_and_json_round_trip(self):
    tmp = self.create_tempdir().full_path
    store = results.ResultsStore(os.path.join(tmp, "results.sqlite"))
    store.put_score(_score("a", "dtd", logme=1.0))
    store.put_score(_score("a", "dtd", logme=2.0))  # Same key: replaced.
    store.put_score(_score("b", "cifar10", seed=1, logme=None))
    self.assertEqual(store.get_score("a", "dtd", 0, "p1")["scores"], {"logme": 2.0})
    self.assertIsNone(store.get_score("a", "dtd", 0, "p2"))
    self.assertEqual([r["model"] for r in store.score_records()], ["a", "b"])  # By key.
    self.assertEqual([r["model"] for r in store.score_records(dataset="dtd")], ["a"])
    exported = os.path.join(tmp, "results.json")
    store.export_json(exported)
    with open(exported) as f:
      self.assertLen(json.load(f)["scores"], 2)
    merged = results.ResultsStore(os.path.join(tmp, "other", "results.sqlite"))
    merged.import_json(exported)
    self.assertEqual(merged.score_records(), store.score_records())

  def test_bad_rows_and_summary_line(self):
    store = results.ResultsStore(os.path.join(self.create_tempdir().full_path, "r.sqlite"))
    with self.assertRaisesRegex(ValueError, "lacks \\['scores'\\]"):
      store.put_score({"model": "a", "dataset": "d", "seed": 0, "protocol": "p"})
    with self.assertRaisesRegex(ValueError, "must map estimator names to numbers"):
      store.put_score(_score("a", "d", logme="high"))
    with self.assertRaisesRegex(ValueError, "seed"):
      store.put_score(_score("a", "d", seed="0", logme=1.0))
    line = records.ScoreRecord.from_json(_score("m", "d", knn=0.5, logme=0.734,
                                                hscore=None)).summary_line()
    self.assertIn("m / d (seed 0): logme=0.734 hscore=n/a knn=0.5", line)


class ImportTest(absltest.TestCase):

  def test_scores_and_their_check_never_import_tensorflow(self):
    self.assertEqual(tf_free.heavy_modules_after(
        "from tfhub_transfer import transferability\n"
        "from tfhub_transfer.report import transferability_check, document"), [])


if __name__ == "__main__":
  absltest.main()
