"""The paired permutation test against scipy's exact McNemar test and a literal
exchange of predictions; which models the tables mark as not worse than the best."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import stats

from tfhub_transfer.report import significance
from tfhub_transfer.results import predictions as predictions_lib


def _single(labels, predicted):
  return predictions_lib.Predictions(labels=np.asarray(labels, np.int32),
                                     predicted=np.asarray(predicted, np.int32))


def _pair(n=200, a_wrong=3, b_wrong=12, both_wrong=5):
  """Hand-made: A and B agree except on `a_wrong` + `b_wrong` examples (the McNemar b, c)."""
  labels = np.arange(n) % 4
  a, b = labels.copy(), labels.copy()
  a[:a_wrong] += 1
  b[a_wrong:a_wrong + b_wrong] += 1
  start = a_wrong + b_wrong
  a[start:start + both_wrong] += 1  # Both wrong: no information about which is better.
  b[start:start + both_wrong] += 2
  return _single(labels, a % 4), _single(labels, b % 4)


def _literal_exchange_p(a, b, metric_fn, samples, seed):
  """The definition: swap each example's two predictions with probability 1/2, score both."""
  rng = np.random.default_rng(seed)
  observed = metric_fn(a) - metric_fn(b)
  extreme = 0
  for _ in range(samples):
    swap = rng.random(len(a.labels)) < 0.5
    pa = np.where(swap, b.predicted, a.predicted)
    pb = np.where(swap, a.predicted, b.predicted)
    diff = metric_fn(_single(a.labels, pa)) - metric_fn(_single(a.labels, pb))
    extreme += abs(diff) >= abs(observed) - 1e-12
  return (1 + extreme) / (1 + samples)


def _mean_per_class(p):
  return np.mean([np.mean(p.predicted[p.labels == c] == c) for c in np.unique(p.labels)])


class PermutationTestTest(parameterized.TestCase):

  @parameterized.parameters((3, 12), (10, 10), (0, 7), (40, 25))
  def test_top1_is_the_exact_mcnemar_test(self, a_wrong, b_wrong):
    a, b = _pair(a_wrong=a_wrong, b_wrong=b_wrong)
    test = significance.permutation_test(a, b, metric="top1", samples=100_000, seed=1)
    # McNemar's exact test: the discordant pairs, b ~ Binomial(b + c, 1/2), two-sided.
    exact = stats.binomtest(b_wrong, a_wrong + b_wrong, 0.5).pvalue
    self.assertLess(abs(test.p_value - exact), 0.005)  # 100,000 draws: SE < 0.0016.
    self.assertEqual(test.discordant, a_wrong + b_wrong)
    self.assertAlmostEqual(test.difference, (b_wrong - a_wrong) / 200)

  def test_mean_per_class_matches_a_literal_exchange(self):
    rng = np.random.default_rng(1)
    labels = rng.choice(3, size=90, p=[0.6, 0.3, 0.1])  # Unequal classes: unequal weights.
    a = np.where(rng.random(90) < 0.85, labels, (labels + 1) % 3)
    b = np.where(rng.random(90) < 0.65, labels, (labels + 2) % 3)
    pa, pb = _single(labels, a), _single(labels, b)
    test = significance.permutation_test(pa, pb, metric="mean_per_class", samples=20_000)
    self.assertAlmostEqual(test.difference, _mean_per_class(pa) - _mean_per_class(pb))
    literal = _literal_exchange_p(pa, pb, _mean_per_class, samples=4000, seed=5)
    self.assertBetween(test.p_value, 0.002, 0.1)  # An informative case.
    self.assertLess(abs(test.p_value - literal), 0.025)  # 4,000 literal draws: SE < 0.008.

  def test_multi_label_is_tested_on_accuracy_without_ignored_entries(self):
    labels = np.array([[1, 0, -1], [0, 1, 0], [1, 1, 0], [0, 0, 1]] * 10)
    a = predictions_lib.from_scores(labels, np.where(labels == 1, 1.0, -1.0),
                                    multi_label=True)  # Right on every counted entry.
    b_scores = np.where(labels == 1, 1.0, -1.0)
    b_scores[:12, 1] *= -1  # Wrong on 12 entries.
    b = predictions_lib.from_scores(labels, b_scores, multi_label=True)
    test = significance.permutation_test(a, b, metric="map_11point", samples=10_000)
    counted = np.count_nonzero(labels != -1)
    self.assertAlmostEqual(test.difference, 12 / counted)  # Accuracy over counted entries.
    # One wrong entry per image on 12 images: McNemar on the images.
    self.assertLess(abs(test.p_value - stats.binomtest(0, 12, 0.5).pvalue), 0.002)

  def test_identical_predictions_have_p_1(self):
    a, _ = _pair()
    self.assertEqual(significance.permutation_test(a, a, metric="top1").p_value, 1.0)

  def test_is_seeded(self):
    a, b = _pair()
    first = significance.permutation_test(a, b, metric="top1", seed=3)
    self.assertEqual(significance.permutation_test(a, b, metric="top1", seed=3), first)
    self.assertEqual(first.samples, 10_000)

  def test_refuses_too_few_samples_and_unpaired_predictions(self):
    a, b = _pair()
    with self.assertRaisesRegex(ValueError, "at least 10000"):
      significance.permutation_test(a, b, metric="top1", samples=999)
    with self.assertRaisesRegex(ValueError, "same test split"):
      significance.permutation_test(a, _single(b.labels[:-1], b.predicted[:-1]),
                                    metric="top1")


class CompareToBestTest(absltest.TestCase):

  def test_marks_the_best_and_those_not_different(self):
    labels = np.arange(300) % 5
    rng = np.random.default_rng(2)

    def model(accuracy):
      return _single(labels, np.where(rng.random(300) < accuracy, labels, (labels + 1) % 5))

    preds = {"best": model(0.9), "close": model(0.89), "far": model(0.6)}
    preds["close"] = _single(labels, np.where(np.arange(300) < 4, (labels + 1) % 5,
                                              preds["best"].predicted))  # 4 more errors.
    scores = {m: float(np.mean(p.correct())) for m, p in preds.items()}
    scores["absent"] = 0.5  # Without stored predictions.
    result = significance.compare_to_best("logreg", "cifar10", "top1", scores, preds.get)
    self.assertEqual(result.best, "best")
    self.assertEqual(result.not_different, ("best", "close"))
    self.assertGreater(result.p_values["close"], 0.05)
    self.assertLess(result.p_values["far"], 0.001)
    self.assertEqual(result.untested, {"absent": "no stored test predictions"})
    rows = significance.significance_rows([result], {("logreg", "far", "cifar10"): 60.0})
    self.assertIn(["logreg", "cifar10", "far", 60.0, "best", result.p_values["far"], False,
                   None], rows)

  def test_nothing_is_marked_when_the_best_has_no_predictions(self):
    labels = np.arange(10) % 2
    stored = {"a": _single(labels, labels), "b": _single(labels, 1 - labels)}
    result = significance.compare_to_best("logreg", "dtd", "top1",
                                          {"a": 1.0, "b": 0.0, "top": 1.0}, stored.get)
    self.assertIsNone(result.best)
    self.assertEqual(result.not_different, ())
    self.assertEqual(result.reason, "too few results: the best model, top, has no stored "
                                    "test predictions")

  def test_too_few_results(self):
    labels = np.arange(10) % 2
    result = significance.compare_to_best(
        "finetune", "dtd", "top1", {"a": 0.5, "b": 0.4},
        {"a": _single(labels, labels)}.get)
    self.assertIsNone(result.best)
    self.assertEqual(result.reason, "too few results: 1 model(s) with stored test "
                                    "predictions (need at least 2)")


if __name__ == "__main__":
  absltest.main()
