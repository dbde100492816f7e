"""The paper's other statistics: Morey's error bars by hand, Figure 2's line and band,
r by dataset size, and the fine-tuning vs logistic-regression count."""

import math

from absl.testing import absltest
import numpy as np
from scipy import stats

from tfhub_transfer.report import analyses
from tfhub_transfer.report import correlation


def _cells(table):
  """{(regime, model, dataset): accuracy} -> correlation.Cell's, one seed each."""
  return {key: correlation.Cell(*key, metric="top1", mean=p, n_seeds=1)
          for key, p in table.items()}


class MoreyTest(absltest.TestCase):

  def test_against_a_hand_computation(self):
    # 3 models x 4 datasets of log-odds.
    y = [[1.0, 2.0, 0.5, 1.5],
         [1.2, 2.5, 0.4, 1.9],
         [1.9, 2.6, 1.3, 2.2]]
    m, n = 3, 4
    grand = sum(sum(row) for row in y) / (m * n)
    dataset_means = [sum(y[i][d] for i in range(m)) / m for d in range(n)]
    expected = []
    for i in range(m):
      z = [y[i][d] - dataset_means[d] + grand for d in range(n)]
      mean = sum(z) / n
      sd = math.sqrt(sum((v - mean) ** 2 for v in z) / (n - 1))
      expected.append(3.182446305284263 * math.sqrt(m / (m - 1)) * sd / math.sqrt(n))
    self.assertAlmostEqual(stats.t.ppf(0.975, 3), 3.182446305284263, places=9)  # Tables.
    np.testing.assert_allclose(analyses.morey_half_widths(np.array(y)), expected, rtol=1e-9)
    # The standard error (what the paper draws) is the half-width without the t quantile.
    np.testing.assert_allclose(analyses.morey_standard_errors(np.array(y)),
                               np.array(expected) / 3.182446305284263, rtol=1e-9)

  def test_common_dataset_difficulty_does_not_widen_the_bars(self):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(5, 6)) * 0.1
    harder = y + np.array([3.0, -2.0, 0.0, 5.0, 1.0, -4.0])  # Per-dataset offsets only.
    np.testing.assert_allclose(analyses.morey_half_widths(harder),
                               analyses.morey_half_widths(y), rtol=1e-10)

  def test_error_bars_of_a_correlation_and_too_few_results(self):
    table = {("logreg", m, d): 0.5 + 0.05 * i + 0.02 * j
             for i, m in enumerate(("a", "b", "c")) for j, d in enumerate(("x", "y"))}
    cells = _cells(table)
    corr = correlation.correlate(cells, "logreg", {"a": 70.0, "b": 72.0, "c": 75.0},
                                 samples=50)
    bars = analyses.error_bars(cells, corr)
    self.assertIsNone(bars.reason)
    y = [[float(correlation.logodds(table[("logreg", m, d)])) for d in ("x", "y")]
         for m in ("a", "b", "c")]
    np.testing.assert_allclose(bars.half_widths, analyses.morey_half_widths(np.array(y)))
    np.testing.assert_allclose(bars.standard_errors,
                               analyses.morey_standard_errors(np.array(y)))
    one = correlation.correlate(_cells({("logreg", "a", "x"): 0.5}), "logreg", {"a": 70.0})
    self.assertRegex(analyses.error_bars(cells, one).reason, "^too few results")


class AverageSignificanceTest(absltest.TestCase):

  def test_paired_t_test_against_the_best_by_hand(self):
    # 4 models x 5 datasets: "c" best on average; "b" close to it with noisy gaps, "a" lower
    # on every dataset by a varying amount, "d" lower by exactly 0.2 everywhere.
    p = {"a": [0.60, 0.70, 0.50, 0.80, 0.65], "b": [0.71, 0.80, 0.62, 0.86, 0.70],
         "c": [0.72, 0.78, 0.63, 0.88, 0.74]}
    datasets = ("v", "w", "x", "y", "z")
    table = {("logreg", m, d): v for m, values in p.items() for d, v in zip(datasets, values)}
    c_logodds = [math.log(v / (1 - v)) for v in p["c"]]
    for d, y in zip(datasets, c_logodds):
      table[("logreg", "d", d)] = 1 / (1 + math.exp(-(y - 0.2)))
    cells = _cells(table)
    corr = correlation.correlate(cells, "logreg", {"a": 70.0, "b": 72.0, "c": 75.0, "d": 76.0},
                                 samples=20)
    tested = analyses.average_significance(cells, corr)
    self.assertEqual(tested.best, "c")

    def by_hand(model):
      gaps = [math.log(c / (1 - c)) - math.log(v / (1 - v)) for c, v in zip(p["c"], p[model])]
      mean = sum(gaps) / len(gaps)
      sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1))
      t = mean / (sd / math.sqrt(len(gaps)))
      return 2 * stats.t.sf(abs(t), len(gaps) - 1)  # Two-sided, n - 1 degrees of freedom.

    self.assertAlmostEqual(tested.p_values["a"], by_hand("a"), places=12)
    self.assertAlmostEqual(tested.p_values["b"], by_hand("b"), places=12)
    self.assertLess(tested.p_values["a"], 0.05)
    self.assertGreater(tested.p_values["b"], 0.05)
    self.assertLess(tested.p_values["d"], 1e-10)  # A constant gap on every dataset.
    self.assertEqual(tested.p_values["c"], 1.0)
    self.assertEqual(tested.not_different, ("b", "c"))
    one = correlation.correlate(_cells({("logreg", "a", "x"): 0.5}), "logreg", {"a": 70.0})
    self.assertRegex(analyses.average_significance(cells, one).reason, "^too few results")


class Figure2Test(absltest.TestCase):

  def test_line_is_least_squares_and_band_is_a_bootstrap(self):
    x = np.array([70.0, 72.0, 74.0, 76.0, 78.0, 80.0])
    y = 0.2 * x - 13 + np.array([0.1, -0.2, 0.05, 0.0, 0.15, -0.1])
    line = analyses.regression_band(x, y, samples=300, seed=4, num=5)
    fit = stats.linregress(x, y)
    self.assertAlmostEqual(line.slope, fit.slope, places=10)
    self.assertAlmostEqual(line.intercept, fit.intercept, places=10)
    self.assertEqual(line.xs, tuple(np.linspace(70, 80, 5)))
    fitted = fit.slope * np.array(line.xs) + fit.intercept
    self.assertTrue(np.all(np.array(line.band_low) <= fitted + 1e-9))
    self.assertTrue(np.all(np.array(line.band_high) >= fitted - 1e-9))
    self.assertIsNone(analyses.regression_band(x[:2], y[:2]))  # Too few models.

  def test_panels_per_dataset_and_regime(self):
    cells = _cells({("logreg", "a", "x"): 0.6, ("logreg", "b", "x"): 0.7,
                    ("logreg", "c", "x"): 0.9, ("finetune", "a", "x"): 0.8,
                    ("logreg", "u", "x"): 0.5})
    panels = analyses.figure2_panels(cells, {"a": 70.0, "b": 72.0, "c": 75.0}, samples=100)
    self.assertEqual([(p.dataset, p.regime) for p in panels],
                     [("x", "finetune"), ("x", "logreg")])
    self.assertIsNone(panels[0].line)  # One model.
    self.assertEqual(panels[1].models, ("a", "b", "c"))  # u: top-1 unknown.
    self.assertAlmostEqual(panels[1].line.slope, stats.linregress(
        [70, 72, 75], correlation.logodds([0.6, 0.7, 0.9])).slope)


class SizeSplitAndCountTest(absltest.TestCase):

  def test_r_split_by_dataset_size(self):
    top1 = {"a": 70.0, "b": 72.0, "c": 75.0, "d": 78.0}
    table = {}
    for i, m in enumerate(top1):
      table[("logreg", m, "small1")] = 0.5 + 0.1 * i
      table[("logreg", m, "small2")] = 0.55 + 0.08 * i
      table[("logreg", m, "large")] = 0.9 - 0.05 * i  # Anti-correlated.
    sizes = {"small1": (3000, "paper"), "small2": (9999, "recorded"),
             "large": (10000, "recorded")}
    split = analyses.correlation_by_size(_cells(table), "logreg", top1, sizes, samples=100,
                                         seed=0)
    self.assertEqual(split["small"].datasets, ("small1", "small2"))
    self.assertEqual(split["large"].datasets, ("large",))
    avg = [np.mean(correlation.logodds([table[("logreg", m, "small1")],
                                        table[("logreg", m, "small2")]])) for m in top1]
    self.assertAlmostEqual(split["small"].r, stats.pearsonr(list(top1.values()), avg)[0])
    self.assertLess(split["large"].r, -0.9)
    only_small = analyses.correlation_by_size(
        _cells({k: v for k, v in table.items() if k[2] != "large"}), "logreg", top1, sizes,
        samples=100, seed=0)
    self.assertEqual(only_small["large"].reason, "too few results: no large dataset in this "
                                                 "regime")

  def test_train_sizes_prefer_what_was_run(self):
    records = [{"dataset": "dtd", "status": "ok", "sizes": {"trainval": 120}},
               {"dataset": "dtd", "status": "ok", "sizes": {"trainval": 300}},
               {"dataset": "cifar10", "status": "failed", "sizes": {}}]
    sizes = analyses.train_sizes(records, {"cifar10": 50000, "dtd": 3760})
    self.assertEqual(sizes, {"dtd": (300, "recorded"), "cifar10": (50000, "paper")})

  def test_finetune_beats_logreg_count(self):
    cells = _cells({("finetune", "a", "x"): 0.9, ("logreg", "a", "x"): 0.8,
                    ("finetune", "a", "y"): 0.7, ("logreg", "a", "y"): 0.7,
                    ("finetune", "b", "x"): 0.6, ("logreg", "b", "x"): 0.65,
                    ("finetune", "c", "x"): 0.99})
    wins = analyses.finetune_beats_logreg(cells)
    self.assertEqual((wins.wins, wins.pairs), (1, 3))
    self.assertEqual(wins.losses, (("a", "y"), ("b", "x")))  # A tie is not a win.
    none = analyses.finetune_beats_logreg(_cells({("finetune", "c", "x"): 0.99}))
    self.assertRegex(none.reason, "^too few results")


if __name__ == "__main__":
  absltest.main()
