"""Tests for tfhub_transfer.logreg against scikit-learn's lbfgs LogisticRegression."""

import warnings

from absl.testing import parameterized
import numpy as np
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
import tensorflow as tf
from threadpoolctl import threadpool_limits

from tfhub_transfer import logreg
from tfhub_transfer import metrics
from tfhub_transfer import protocol

_TIGHT = dict(max_iter=2000, tol=1e-6)


def _digits():
  x, y = datasets.load_digits(return_X_y=True)
  return (x / 16.0).astype(np.float32), y


def _blobs(seed, n=240, d=12, c=4):
  """Class means + noise, overlapping enough that regularisation matters."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % c
  x = rng.normal(size=(c, d))[y] + 1.5 * rng.normal(size=(n, d))
  return x.astype(np.float32), y


def _sklearn(x, y, l2, **kwargs):
  kwargs = {"max_iter": 2000, "tol": 1e-6, **kwargs}
  # One thread: on a shared machine sklearn's OpenMP loss is many times slower with more.
  with threadpool_limits(limits=1):
    return LogisticRegression(C=1.0 / l2, **kwargs).fit(x.astype(np.float64), y)


def _centered(bias):
  # Softmax is unchanged by a shift of all biases; compare their sum-zero versions.
  return bias - bias.mean(axis=-1, keepdims=True)


def _softmax(z):
  z = z - z.max(1, keepdims=True)
  return np.exp(z) / np.exp(z).sum(1, keepdims=True)


class L2GridTest(tf.test.TestCase):

  def test_paper_grid(self):
    grid = protocol.l2_grid()
    self.assertLen(grid, 45)
    self.assertAllClose(grid[[0, -1]], [1e-6, 1e5], rtol=1e-12)
    self.assertAllClose(grid[1:] / grid[:-1], np.full(44, 10 ** (11 / 44)), rtol=1e-12)

  def test_size(self):
    self.assertAllClose(protocol.l2_grid(12), 10.0 ** np.arange(-6, 6), rtol=1e-12)


class FitTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(1.0, 30.0)
  def test_digits_matches_sklearn(self, l2):
    x, y = _digits()
    model = logreg.fit(x, y, l2=l2, multi_label=False, num_classes=10, **_TIGHT)
    reference = _sklearn(x, y, l2)
    self.assertTrue(model.converged)
    scale = np.abs(reference.coef_).max()
    self.assertAllClose(model.weights, reference.coef_.T, atol=2e-3 * scale)
    self.assertAllClose(_centered(model.bias), _centered(reference.intercept_),
                        atol=2e-3 * scale)
    scores = logreg.predict_scores(model, x)
    self.assertAllClose(_softmax(scores), reference.predict_proba(x), atol=1e-3)
    self.assertEqual(metrics.top1_accuracy(y, scores), reference.score(x, y))

  def test_synthetic_matches_sklearn_and_reg_shrinks_weights(self):
    x, y = _blobs(0)
    norms = []
    for l2 in (0.5, 50.0):
      model = logreg.fit(x, y, l2=l2, multi_label=False, num_classes=4, **_TIGHT)
      reference = _sklearn(x, y, l2)
      self.assertAllClose(model.weights, reference.coef_.T, atol=1e-4)
      self.assertAllClose(_centered(model.bias), _centered(reference.intercept_), atol=1e-4)
      norms.append(np.linalg.norm(model.weights))
    self.assertLess(norms[1], 0.5 * norms[0])

  def test_offset_and_badly_scaled_features_match_sklearn(self):
    # Features far from zero mean, with scales over three decades: the solver's centring
    # and diagonal preconditioning must not change the solution, bias included.
    x, y = _blobs(6)
    x = (x * np.logspace(-1.5, 1.5, 12) + 4.0).astype(np.float32)
    model = logreg.fit(x, y, l2=3.0, multi_label=False, num_classes=4, **_TIGHT)
    reference = _sklearn(x, y, 3.0, max_iter=20000)
    self.assertTrue(model.converged)
    self.assertAllClose(model.weights, reference.coef_.T, atol=3e-4)
    self.assertAllClose(_centered(model.bias), _centered(reference.intercept_), atol=3e-3)
    self.assertAllClose(_softmax(logreg.predict_scores(model, x)), reference.predict_proba(x),
                        atol=5e-5)

  def test_multi_label_matches_sklearn_per_class(self):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    true_w = rng.normal(size=(8, 3))
    labels = (x @ true_w + rng.logistic(size=(300, 3)) > 0.5).astype(np.int64)
    l2 = 2.0
    model = logreg.fit(x, labels, l2=l2, multi_label=True, num_classes=3, **_TIGHT)
    self.assertTrue(model.converged)
    for c in range(3):
      reference = _sklearn(x, labels[:, c], l2)
      self.assertAllClose(model.weights[:, c], reference.coef_[0], atol=1e-4)
      self.assertAllClose(model.bias[c], reference.intercept_[0], atol=1e-4)

  def test_float16_features(self):
    x, y = _blobs(2)
    x16 = x.astype(np.float16)
    model = logreg.fit(x16, y, l2=1.0, multi_label=False, num_classes=4, **_TIGHT)
    reference = _sklearn(x16, y, 1.0)
    self.assertAllClose(model.weights, reference.coef_.T, atol=1e-4)

  def test_warm_start_reaches_cold_start_solution(self):
    x, y = _digits()
    cold = logreg.fit(x, y, l2=0.3, multi_label=False, num_classes=10, **_TIGHT)
    previous = logreg.fit(x, y, l2=3.0, multi_label=False, num_classes=10, **_TIGHT)
    warm = logreg.fit(x, y, l2=0.3, multi_label=False, num_classes=10, init=previous, **_TIGHT)
    scale = np.abs(cold.weights).max()
    self.assertAllClose(warm.weights, cold.weights, atol=2e-3 * scale)
    self.assertAllClose(_centered(warm.bias), _centered(cold.bias), atol=2e-3 * scale)
    self.assertLess(warm.iterations, cold.iterations)

  def test_max_iter_zero_returns_init(self):
    x, y = _blobs(3)
    model = logreg.fit(x, y, l2=1.0, multi_label=False, num_classes=4, max_iter=0)
    self.assertEqual(model.iterations, 0)
    self.assertFalse(model.converged)
    self.assertAllEqual(model.weights, np.zeros((12, 4)))
    # Gradient at zero: mean of (1/C - onehot) x; the bias part is 0 (balanced classes).
    expected = np.abs(x.T @ (0.25 - np.eye(4)[y]) / len(y)).max()
    self.assertAllClose(model.max_abs_grad, expected, rtol=1e-5)

  def test_bad_inputs_are_named(self):
    x, y = _blobs(4)
    with self.assertRaisesRegex(ValueError, r"\[0, 3\).*max 3.*num_classes"):
      logreg.fit(x, y, l2=1.0, multi_label=False, num_classes=3)
    bad = x.copy()
    bad[3, 2] = np.nan
    with self.assertRaisesRegex(ValueError, "1 NaN or infinite"):
      logreg.fit(bad, y, l2=1.0, multi_label=False, num_classes=4)
    with self.assertRaisesRegex(ValueError, "l2 must be.*-1"):
      logreg.fit(x, y, l2=-1.0, multi_label=False, num_classes=4)
    with self.assertRaisesRegex(ValueError, r"shape \(240, 4\)"):
      logreg.fit(x, y, l2=1.0, multi_label=True, num_classes=4)


class SelectAndRefitTest(tf.test.TestCase):

  def test_matches_sklearn_warm_started_path(self):
    x, y = _digits()
    rng = np.random.default_rng(0)
    x = x + rng.normal(scale=0.25, size=x.shape).astype(np.float32)  # Make l2 matter.
    train_x, train_y, val_x, val_y = x[:1000], y[:1000], x[1000:], y[1000:]
    grid = protocol.l2_grid(12)
    result = logreg.select_and_refit(train_x, train_y, val_x, val_y, multi_label=False,
                                     num_classes=10, metric_fn=metrics.top1_accuracy,
                                     l2_values=rng.permutation(grid))
    self.assertEqual(result.l2_values, tuple(sorted(grid.tolist(), reverse=True)))

    reference = LogisticRegression(warm_start=True, max_iter=1000, tol=1e-4)
    reference_scores = []
    for l2 in result.l2_values:
      with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.set_params(C=1.0 / l2).fit(train_x.astype(np.float64), train_y)
      reference_scores.append(reference.score(val_x, val_y))
    # Where the problem is well conditioned both solvers reach the same models; below,
    # tol=1e-4 leaves near-flat objectives loosely solved and scores may drift by a point.
    conditioned = np.array(result.l2_values) >= 1.0
    self.assertAllClose(np.array(result.val_scores)[conditioned],
                        np.array(reference_scores)[conditioned], atol=0.005)
    self.assertAllClose(max(result.val_scores), max(reference_scores), atol=0.005)
    self.assertBetween(max(result.val_scores), 0.8, 0.9)

    # The refit solves train + validation at best_l2 (to the default tol=1e-4): its gradient,
    # written out here, is within tol, and it predicts as sklearn's tight solution does.
    model = result.model
    residual = _softmax(x.astype(np.float64) @ model.weights + model.bias) - np.eye(10)[y]
    gradient = np.concatenate([x.T @ residual + result.best_l2 * model.weights,
                               residual.sum(0, keepdims=True)]) / len(y)
    self.assertLess(np.abs(gradient).max(), 1.05e-4)
    refit = _sklearn(x, y, result.best_l2)
    self.assertAllClose(_softmax(logreg.predict_scores(model, x)), refit.predict_proba(x),
                        atol=5e-3)
    self.assertLen(result.val_scores, 12)

  def test_multi_label_path_matches_sklearn_per_class(self):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 10)).astype(np.float32)
    labels = (x @ rng.normal(size=(10, 3)) + 2.0 * rng.logistic(size=(400, 3)) > 1.0)
    labels = labels.astype(np.int64)
    result = logreg.select_and_refit(x[:300], labels[:300], x[300:], labels[300:],
                                     multi_label=True, num_classes=3,
                                     metric_fn=metrics.map_11point,
                                     l2_values=[0.1, 30.0, 3000.0], tol=1e-6)
    expected = []
    for l2 in result.l2_values:
      scores = [_sklearn(x[:300], labels[:300, c], l2).decision_function(x[300:])
                for c in range(3)]
      expected.append(metrics.map_11point(labels[300:], np.stack(scores, 1)))
    self.assertAllClose(result.val_scores, expected, atol=1e-3)
    self.assertEqual(result.best_l2, result.l2_values[int(np.argmax(expected))])
    for c in range(3):
      refit = _sklearn(x, labels[:, c], result.best_l2)
      self.assertAllClose(result.model.weights[:, c], refit.coef_[0], atol=1e-5)

  def test_ignored_multi_label_entries_fit_as_negatives_and_score_as_ignored(self):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    labels = (x @ rng.normal(size=(6, 2)) + rng.logistic(size=(200, 2)) > 0.5).astype(int)
    with_ignored = np.where(rng.random(labels.shape) < 0.15, -1, labels)
    fitted = logreg.fit(x, with_ignored, l2=1.0, multi_label=True, num_classes=2, **_TIGHT)
    as_negatives = logreg.fit(x, np.maximum(with_ignored, 0), l2=1.0, multi_label=True,
                              num_classes=2, **_TIGHT)
    self.assertAllClose(fitted.weights, as_negatives.weights, atol=1e-6)
    result = logreg.select_and_refit(x[:150], with_ignored[:150], x[150:], with_ignored[150:],
                                     multi_label=True, num_classes=2,
                                     metric_fn=metrics.map_11point, l2_values=[1.0])
    scores = logreg.predict_scores(result.chosen_fit, x[150:])
    self.assertEqual(result.val_scores[0], metrics.map_11point(with_ignored[150:], scores))

  def test_convergence_of_the_chosen_fit_and_the_refit(self):
    x, y = _blobs(6)
    done = logreg.select_and_refit(x[:200], y[:200], x[200:], y[200:], multi_label=False,
                                   num_classes=4, metric_fn=metrics.top1_accuracy,
                                   l2_values=[1.0, 10.0])
    self.assertTrue(done.chosen_fit.converged)
    self.assertTrue(done.model.converged)
    self.assertEqual(done.chosen_fit.l2, done.best_l2)
    cut = logreg.select_and_refit(x[:200], y[:200], x[200:], y[200:], multi_label=False,
                                  num_classes=4, metric_fn=metrics.top1_accuracy,
                                  l2_values=[1e-4], max_iter=2)
    self.assertFalse(cut.chosen_fit.converged)
    self.assertEqual(cut.chosen_fit.iterations, 2)
    self.assertFalse(cut.model.converged)
    self.assertGreater(cut.model.max_abs_grad, logreg.DEFAULT_TOL)

  def test_ties_go_to_stronger_regularisation(self):
    x, y = _blobs(5)
    result = logreg.select_and_refit(x[:200], y[:200], x[200:], y[200:], multi_label=False,
                                     num_classes=4, metric_fn=lambda labels, scores: 0.5,
                                     l2_values=[1.0, 100.0, 10.0])
    self.assertEqual(result.best_l2, 100.0)
    self.assertEqual(result.val_scores, (0.5, 0.5, 0.5))


if __name__ == "__main__":
  tf.test.main()
