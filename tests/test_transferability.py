"""Transferability estimators against independent references: LogME against a brute-force
scipy maximisation of the same evidence, Ledoit-Wolf against scikit-learn, H-score and k-NN
against dense formulas written here; rankings on constructed cases; the papers' invariances."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import linalg
from scipy import optimize
from sklearn import covariance
from sklearn import neighbors

from tfhub_transfer import transferability as tr


def _data(x, y, *, num_classes, multi_label=False, **kwargs):
  return tr.LabelledFeatures(x, y, num_classes=num_classes, multi_label=multi_label, **kwargs)


def _dense_log_evidence(f, y, log_alpha, log_beta):
  """log p(y | F, alpha, beta) of y = F w + e, w ~ N(0, I/alpha), e ~ N(0, I/beta), written
  as the marginal Gaussian y ~ N(0, F F^T / alpha + I / beta) (no eigendecomposition)."""
  alpha, beta = np.exp(log_alpha), np.exp(log_beta)
  chol = linalg.cho_factor(f @ f.T / alpha + np.eye(len(y)) / beta, lower=True)
  return (-0.5 * y @ linalg.cho_solve(chol, y) - np.sum(np.log(np.diag(chol[0])))
          - len(y) / 2 * np.log(2 * np.pi))


def _brute_force_max(f, y):
  """max over (alpha, beta) of the evidence, by Nelder-Mead from several starts."""
  best = -np.inf
  for start in [(0.0, 0.0), (3.0, -2.0), (-3.0, 2.0)]:
    found = optimize.minimize(lambda p: -_dense_log_evidence(f, y, *p), start,
                              method="Nelder-Mead",
                              options={"xatol": 1e-8, "fatol": 1e-11, "maxiter": 2000})
    best = max(best, -found.fun)
  return best


def _separable(rng, n=240, dim=16, classes=4, spread=3.0):
  labels = rng.integers(0, classes, n)
  centres = rng.normal(size=(classes, dim)) * spread
  return centres[labels] + rng.normal(size=(n, dim)), labels


class LogMETest(parameterized.TestCase):

  @parameterized.parameters((40, 5, 3, 0), (30, 50, 4, 1), (120, 12, 2, 2))
  def test_fixed_point_reaches_the_brute_force_maximum(self, n, dim, classes, seed):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, dim)) + rng.normal(size=dim)
    labels = rng.integers(0, classes, n)
    labels[:classes] = np.arange(classes)  # Every class present.
    per_class = [_brute_force_max(f, (labels == c).astype(float)) / n for c in range(classes)]
    ours = tr.logme(_data(f, labels, num_classes=classes))
    self.assertAlmostEqual(ours, float(np.mean(per_class)), delta=1e-7 * abs(ours))

  def test_multi_label_is_the_mean_over_label_columns(self):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(50, 6))
    y = (rng.random((50, 3)) < 0.4).astype(np.float32)
    want = np.mean([_brute_force_max(f, y[:, c].astype(float)) / 50 for c in range(3)])
    self.assertAlmostEqual(tr.logme(_data(f, y, num_classes=3, multi_label=True)), want,
                           delta=1e-7 * abs(want))

  def test_float32_features_with_fewer_examples_than_dimensions(self):
    # The case of issue 22: float32 products left F^T F's null space with positive rounding
    # eigenvalues, which made beta negative (NaN). 0.46628 is the float64 value (issue 22).
    rng = np.random.default_rng(612)
    y = rng.integers(0, 5, 100)
    y[:5] = range(5)
    f = (rng.normal(size=(5, 512))[y] * 0.7 + rng.normal(size=(100, 512))).astype(np.float32)
    score = tr.logme(_data(f, y, num_classes=5))
    self.assertTrue(np.isfinite(score))
    self.assertAlmostEqual(score, 0.46628, delta=1e-4)

  @parameterized.parameters((40, 120, 0), (120, 16, 1))  # N < D, N > D.
  def test_float32_features_score_as_their_float64_values(self, n, dim, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    labels[:3] = np.arange(3)
    f = (rng.normal(size=(3, dim))[labels] * 0.7 + rng.normal(size=(n, dim)) + 2.0
         ).astype(np.float32)
    f64 = f.astype(np.float64)  # The same numbers, maximised densely in float64.
    want = np.mean([_brute_force_max(f64, (labels == c).astype(float)) / n for c in range(3)])
    self.assertAlmostEqual(tr.logme(_data(f, labels, num_classes=3)), want,
                           delta=1e-6 * abs(want))

  def test_multi_label_ignored_entries_are_negatives(self):
    # As the logreg and fine-tune fits read VOC's -1 ("difficult", ignored by the metric):
    # a 0 target. Column 0 has more -1 than 1 entries (sum(y) < 0 dropped it before);
    # column 2 has no positive, only -1 and 0, and is left out of the mean.
    rng = np.random.default_rng(5)
    f = rng.normal(size=(60, 6))
    y = np.zeros((60, 3), np.float32)
    y[:6, 0], y[6:20, 0] = 1, -1
    y[:, 1] = np.where(rng.random(60) < 0.4, 1, np.where(rng.random(60) < 0.2, -1, 0))
    y[10:15, 2] = -1
    want = np.mean([_brute_force_max(f, np.maximum(y[:, c], 0).astype(float)) / 60
                    for c in (0, 1)])
    self.assertAlmostEqual(tr.logme(_data(f, y, num_classes=3, multi_label=True)), want,
                           delta=1e-7 * abs(want))
    scores = tr.score_features(_data(f, y, num_classes=3, multi_label=True), ["logme"])
    self.assertEqual(scores.sizes["classes_present"], 2)

  def test_absent_classes_are_left_out(self):
    rng = np.random.default_rng(4)
    f, labels = _separable(rng, classes=3)
    self.assertAlmostEqual(tr.logme(_data(f, labels, num_classes=3)),
                           tr.logme(_data(f, labels, num_classes=7)), places=12)


class HScoreTest(parameterized.TestCase):

  @parameterized.parameters((200, 10, 0), (60, 80, 1), (500, 3, 2))
  def test_ledoit_wolf_shrinkage_matches_scikit_learn(self, n, dim, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + 5.0
    data = _data(x, np.zeros(n, int), num_classes=1)
    self.assertAlmostEqual(tr.ledoit_wolf_shrinkage(data.stats),
                           covariance.ledoit_wolf_shrinkage(x), places=10)

  @parameterized.parameters((200, 10, 3, 0), (60, 80, 5, 1))
  def test_matches_the_dense_formula_with_scikit_learns_covariance(self, n, dim, classes, seed):
    rng = np.random.default_rng(seed)
    x, labels = _separable(rng, n=n, dim=dim, classes=classes, spread=0.7)
    lw = covariance.LedoitWolf().fit(x)  # (1 - a) cov + a mu I, 1/N covariance.
    class_mean = np.stack([x[labels == c].mean(axis=0) for c in range(classes)])
    cov_g = np.cov(class_mean[labels], rowvar=False, bias=True)  # cov(E[f | y]).
    want = np.trace(np.linalg.pinv(lw.covariance_) @ ((1 - lw.shrinkage_) * cov_g))
    self.assertAlmostEqual(tr.hscore(_data(x, labels, num_classes=classes)), want,
                           delta=1e-8 * want)

  def test_refuses_multi_label(self):
    data = _data(np.ones((4, 2)), np.ones((4, 3)), num_classes=3, multi_label=True)
    with self.assertRaisesRegex(ValueError, "not defined for multi-label.*logme"):
      tr.hscore(data)


def _brute_force_knn(x, labels, k, queries):
  """Cosine similarities of all pairs; each query's k most similar others vote; ties go to
  the tied class holding the most similar neighbour."""
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  correct = 0
  for q in queries:
    sims = unit @ unit[q]
    sims[q] = -np.inf
    nearest = np.argsort(-sims, kind="stable")[:k]
    votes = labels[nearest]
    counts = {c: int(np.sum(votes == c)) for c in votes}
    top = max(counts.values())
    predicted = next(c for c in votes if counts[c] == top)
    correct += predicted == labels[q]
  return correct / len(queries)


class KnnTest(parameterized.TestCase):

  @parameterized.parameters((1,), (4,), (5,))
  def test_matches_brute_force(self, k):
    rng = np.random.default_rng(k)
    x, labels = _separable(rng, n=150, dim=8, classes=5, spread=0.8)
    got = tr.knn_loo_accuracy(_data(x, labels, num_classes=5), k=k)
    self.assertEqual(got, _brute_force_knn(x, labels, k, range(150)))

  def test_matches_scikit_learn_leave_one_out_without_ties(self):
    rng = np.random.default_rng(7)
    x, labels = _separable(rng, n=120, dim=6, classes=2, spread=0.6)
    model = neighbors.KNeighborsClassifier(n_neighbors=5, metric="cosine")
    predicted = [model.fit(np.delete(x, i, 0), np.delete(labels, i)).predict(x[i:i + 1])[0]
                 for i in range(len(x))]
    self.assertEqual(tr.knn_loo_accuracy(_data(x, labels, num_classes=2), k=5),
                     np.mean(np.array(predicted) == labels))

  def test_subsampled_queries_and_chunks(self):
    rng = np.random.default_rng(8)
    x, labels = _separable(rng, n=300, dim=8, classes=6, spread=0.8)
    # The documented rule: max_queries rows drawn uniformly without replacement from `seed`.
    queries = np.sort(np.random.default_rng(11).choice(300, 40, replace=False))
    want = _brute_force_knn(x, labels, 5, queries)
    chunked = _data([x[:97], x[97:]], [labels[:97], labels[97:]], num_classes=6, chunk_size=13)
    self.assertEqual(tr.knn_loo_accuracy(chunked, max_queries=40, seed=11), want)

  def test_refuses_multi_label_and_too_few_examples(self):
    with self.assertRaisesRegex(ValueError, "multi-label"):
      tr.knn_loo_accuracy(_data(np.ones((9, 2)), np.ones((9, 3)), num_classes=3,
                                multi_label=True))
    with self.assertRaisesRegex(ValueError, "k=5 needs more than 5"):
      tr.knn_loo_accuracy(_data(np.eye(5), np.arange(5), num_classes=5))


class AllEstimatorsTest(parameterized.TestCase):

  @parameterized.parameters(*tr.ESTIMATORS)
  def test_separating_features_score_above_non_separating_ones(self, name):
    rng = np.random.default_rng(0)
    x, labels = _separable(rng, n=400, dim=32, classes=5, spread=1.0)
    noise = rng.normal(size=x.shape) * x.std(axis=0)  # Same scale, unrelated to labels.
    half = np.concatenate([x[:, :16], noise[:, 16:]], axis=1)  # Half the signal.
    fn = tr.get_estimator_spec(name).fn
    scores = [fn(_data(f, labels, num_classes=5)) for f in (x, half, noise)]
    self.assertGreater(scores[0], scores[1], scores)
    self.assertGreater(scores[1], scores[2], scores)

  @parameterized.parameters(*tr.ESTIMATORS)
  def test_invariances(self, name):
    """Label permutation (all); orthogonal rotation and scale (all: LogME's prior and
    H-score's shrinkage target are isotropic, cosine k-NN is angular); translation
    (H-score: covariances are centred); positive per-example scale (cosine k-NN)."""
    rng = np.random.default_rng(1)
    x, labels = _separable(rng, n=200, dim=12, classes=4, spread=0.8)
    fn = tr.get_estimator_spec(name).fn
    score = fn(_data(x, labels, num_classes=4))
    permutation = np.array([2, 0, 3, 1])
    rotation, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    variants = {"labels permuted": (x, permutation[labels]),
                "rotated and scaled": (3.7 * x @ rotation, labels)}
    if name == "hscore":
      variants["translated"] = (x + 10.0, labels)
    if name == "knn":
      variants["rows scaled"] = (x * rng.uniform(0.1, 10.0, size=(200, 1)), labels)
    for what, (xv, yv) in variants.items():
      self.assertAlmostEqual(fn(_data(xv, yv, num_classes=4)), score, delta=1e-9 * abs(score),
                             msg=what)

  def test_chunked_parts_give_the_same_statistics(self):
    rng = np.random.default_rng(2)
    x, labels = _separable(rng, n=100, dim=7, classes=3)
    whole = _data(x, labels, num_classes=3).stats
    parts = _data([x[:31], x[31:]], [labels[:31], labels[31:]], num_classes=3,
                  chunk_size=9).stats
    centred = x - x.mean(axis=0)
    np.testing.assert_allclose(whole.scatter, centred.T @ centred, rtol=1e-12)
    for field in ("mean", "scatter", "target_sums", "target_counts", "fourth_moment"):
      np.testing.assert_allclose(getattr(parts, field), getattr(whole, field), rtol=1e-12,
                                 err_msg=field)

  def test_registry_and_score_features(self):
    for spec in tr.ESTIMATORS.values():  # Each names its paper's first author in its doc.
      self.assertIn(spec.paper.split()[0].strip(","), spec.fn.__doc__, spec.name)
    with self.assertRaisesRegex(ValueError, r"'logmee'.*logme, hscore, knn"):
      tr.get_estimator_spec("logmee")
    rng = np.random.default_rng(3)
    y = (rng.random((30, 4)) < 0.5).astype(np.float32)
    scores = tr.score_features(_data(rng.normal(size=(30, 5)), y, num_classes=4,
                                     multi_label=True))
    self.assertIsNotNone(scores.values["logme"])
    self.assertEqual({n for n, v in scores.values.items() if v is None}, {"hscore", "knn"})
    self.assertIn("multi-label", scores.skipped["knn"])
    self.assertEqual(scores.sizes, {"examples": 30, "dim": 5, "classes_present": 4})
    self.assertSetEqual(set(scores.seconds), {"stats_s", "logme_s"})

  def test_scale_benchmark_times_what_score_features_computes(self):
    from bench import score_scale  # pylint: disable=g-import-not-at-top
    workdir = self.create_tempdir().full_path
    out = score_scale.run(n=300, dim=8, classes=3, workdir=workdir)
    self.assertEqual(set(out["wall"]), {"stats", *tr.ESTIMATORS})
    labels = score_scale.write_features(os.path.join(workdir, "again.f32"), n=300, dim=8,
                                        classes=3)
    features = np.fromfile(os.path.join(workdir, "again.f32"), np.float32).reshape(300, 8)
    self.assertEqual(out["values"],
                     tr.score_features(_data(features, labels, num_classes=3)).values)

  def test_bad_inputs_say_what_is_expected(self):
    with self.assertRaisesRegex(ValueError, r"expected \(3,\) \(class ids\)"):
      _data(np.ones((3, 2)), np.zeros(4, int), num_classes=2)
    with self.assertRaisesRegex(ValueError, r"\[0, 2\)"):
      _data(np.ones((3, 2)), np.array([0, 1, 2]), num_classes=2)
    with self.assertRaisesRegex(ValueError,
                                r"1 \(positive\), 0 \(negative\) or -1.*\[0.0, 1.0, 2.0\]"):
      _data(np.ones((3, 2)), np.array([[0, 2.0], [1, 0], [0, 0]]), num_classes=2,
            multi_label=True)


if __name__ == "__main__":
  absltest.main()
