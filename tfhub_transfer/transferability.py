"""Transferability estimators: score (frozen features, target labels) before any training.

Each score says, from one pass or two over the features, how well a backbone's frozen
features fit a target task; higher is better. `ESTIMATORS` is the registry (name -> spec:
the function, its paper, what it does with multi-label targets); `score_features` runs some
of them on one `LabelledFeatures`.

  logme   maximum log evidence of a Bayesian linear model, per class, averaged.
  hscore  H-score with a Ledoit-Wolf shrinkage covariance.
  knn     leave-one-out k-nearest-neighbour accuracy (cosine similarity).

Memory does not grow with N: features are read in chunks (a memory map stays on disk);
LogME and H-score need only D x D sums (shared: `FeatureStats`, one float64 D x D matrix),
k-NN keeps the queries' running top-k. NumPy only (no TensorFlow), so the report reads the
registry cheaply.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import threadpoolctl

CHUNK_SIZE = 4096
KNN_K = 5
# Leave-one-out over at most this many query examples (drawn uniformly, seed KNN_SEED; every
# example remains a neighbour): LOO over all of a 50k-example set is 50k^2 similarities.
KNN_MAX_QUERIES = 10_000
KNN_SEED = 0
# Where the maximum lies near a boundary (alpha or beta -> inf) the fixed point converges
# linearly: a 60-example case took 300 iterations to within 1e-12 (100 left it 2.5e-7 low).
LOGME_MAX_ITERATIONS = 1000
LOGME_TOLERANCE = 1e-10
# Eigenvalues of F^T F (float64 sums) below this x D x the largest are taken as 0: float64
# rounding leaves the null space near 1e-16 x D x the largest, which moves the score by ~1e-7.
LOGME_RANK_RTOL = float(np.finfo(np.float64).eps)
LOGME_MIN_RESIDUAL = 1e-30  # x |y|^2: a floor that keeps beta finite where F interpolates y.
# BLAS threads of the D x D factorisations (LogME's eigendecomposition, H-score's solve).
# OpenBLAS's threaded factorisations synchronise at every step: measured on 2 shared cores
# (D = 2048), the eigendecomposition took 1.8 CPU s on 1 thread, 10 CPU s and 5x the wall
# time on 2; the solve 2x. The matrix products elsewhere use every thread.
FACTOR_THREADS = 1


class LabelledFeatures:
  """Features [N, D] of a target set and its labels, read in chunks.

  Args:
    features: one [N, D] array, or several (e.g. the train and val memory maps of the
      feature cache) holding the examples in order; never concatenated in memory.
    labels: [N] int class ids, or [N, C] multi-label entries 1 (positive), 0 (negative) or
      -1 (ignored by the metric, VOC's "difficult"), matching `features`; or one array per
      features array. The estimators read -1 as a negative, as the logistic-regression and
      fine-tuning fits do (`logreg._to_problem`, `TransferHead`).
    num_classes: C.
    multi_label: whether labels are multi-hot.
    chunk_size: rows read at a time.

  Raises:
    ValueError: shapes or labels that do not match, or fewer than 2 examples.
  """

  def __init__(self, features: Union[np.ndarray, Sequence[np.ndarray]],
               labels: Union[np.ndarray, Sequence[np.ndarray]], *, num_classes: int,
               multi_label: bool, chunk_size: int = CHUNK_SIZE):
    self.parts = [features] if isinstance(features, np.ndarray) else list(features)
    if not isinstance(labels, np.ndarray):
      labels = np.concatenate([np.asarray(y) for y in labels])
    dims = {p.shape[1] for p in self.parts if p.ndim == 2}
    if len(dims) != 1 or any(p.ndim != 2 for p in self.parts):
      raise ValueError(f"Features must be [N, D] arrays of one D; got shapes "
                       f"{[p.shape for p in self.parts]}.")
    self.num_examples = sum(p.shape[0] for p in self.parts)
    self.dim = dims.pop()
    self.num_classes, self.multi_label, self.chunk_size = num_classes, multi_label, chunk_size
    expected = (self.num_examples, num_classes) if multi_label else (self.num_examples,)
    if labels.shape != expected:
      raise ValueError(f"Labels of shape {labels.shape} for {self.num_examples} examples; "
                       f"expected {expected} ({'multi-hot' if multi_label else 'class ids'}).")
    if multi_label and not np.isin(labels, (-1, 0, 1)).all():
      raise ValueError(f"Multi-label entries must be 1 (positive), 0 (negative) or -1 "
                       f"(ignored); got values {np.unique(labels)[:10].tolist()}.")
    if not multi_label and (labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes):
      raise ValueError(f"Class ids must lie in [0, {num_classes}); got "
                       f"[{labels.min()}, {labels.max()}].")
    if self.num_examples < 2:
      raise ValueError(f"Need at least 2 examples to score features, got {self.num_examples}.")
    self.labels = labels if multi_label else labels.astype(np.int64)

  def chunks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, features [n, D] float32/64, targets [n, C] one-hot or multi-hot)."""
    start = 0
    for part in self.parts:
      for i in range(0, part.shape[0], self.chunk_size):
        x = np.asarray(part[i:i + self.chunk_size])
        if x.dtype not in (np.float32, np.float64):
          x = x.astype(np.float32)
        yield start + i, x, self.targets(slice(start + i, start + i + len(x)), x.dtype)
      start += part.shape[0]

  def targets(self, rows, dtype=np.float64) -> np.ndarray:
    """The 0/1 target matrix [n, C] of `rows`: one-vs-rest for single-label classes.

    Multi-label -1 (an entry the metric ignores) is a 0, a negative, as in the regimes' fits;
    kept as -1 it would make sum(y_c) differ from |y_c|^2 and inflate LogME.
    """
    if self.multi_label:
      return np.asarray(np.asarray(self.labels[rows]) > 0, dtype=dtype)
    return np.eye(self.num_classes, dtype=dtype)[self.labels[rows]]

  def rows(self, index: np.ndarray) -> np.ndarray:
    """Features of the sorted row indices `index`, gathered part by part."""
    out, start = [], 0
    for part in self.parts:
      inside = index[(index >= start) & (index < start + part.shape[0])]
      out.append(np.asarray(part[inside - start]))
      start += part.shape[0]
    return np.concatenate(out)

  @functools.cached_property
  def stats(self) -> "FeatureStats":
    """The sums LogME and H-score share (computed on first use, then kept)."""
    return FeatureStats.compute(self)


@dataclasses.dataclass(frozen=True)
class FeatureStats:
  """Sufficient statistics of (features x, 0/1 targets y) from two chunked passes.

  Products are taken and summed in float64 (features from the cache are float32), on
  centred features (x - mean), so no large mean cancels in the covariance. Float32 products
  leave the null space of F^T F (N < D) with eigenvalues of float32 rounding size, enough to
  drive LogME's fixed point to a negative beta (NaN); float64 products cost
  about 1.6x (measured: a [4096, 2048] chunk's X^T X, 0.19 s float32, 0.31 s float64).

  Attributes:
    num_examples: N.
    mean: [D] feature mean.
    scatter: [D, D] sum over examples of (x - mean)(x - mean)^T.
    target_sums: [D, C] sum over examples of (x - mean) y_c.
    target_counts: [C] sum of y_c (= |y_c|^2 for 0/1 targets).
    fourth_moment: sum over examples of |x - mean|^4 (Ledoit-Wolf's shrinkage needs it).
    seconds: wall time of the two passes.
  """
  num_examples: int
  mean: np.ndarray
  scatter: np.ndarray
  target_sums: np.ndarray
  target_counts: np.ndarray
  fourth_moment: float
  seconds: float

  @classmethod
  def compute(cls, data: LabelledFeatures) -> "FeatureStats":
    start = time.perf_counter()
    total = np.zeros(data.dim)
    for _, x, _ in data.chunks():
      total += x.sum(axis=0, dtype=np.float64)
    mean = total / data.num_examples
    scatter = np.zeros((data.dim, data.dim))
    target_sums = np.zeros((data.dim, data.num_classes))
    counts = np.zeros(data.num_classes)
    fourth = 0.0
    for _, x, y in data.chunks():
      xc = x.astype(np.float64) - mean
      scatter += xc.T @ xc
      target_sums += xc.T @ y
      counts += y.sum(axis=0)
      fourth += float(np.sum(np.square(np.einsum("ij,ij->i", xc, xc))))
    return cls(data.num_examples, mean, scatter, target_sums, counts, fourth,
               time.perf_counter() - start)


def logme_evidence(eigenvalues: np.ndarray, projections: np.ndarray,
                   target_norms: np.ndarray, num_examples: int) -> np.ndarray:
  """Maximum log evidence / N of y_c = F w + noise, w ~ N(0, I / alpha), noise ~ N(0, 1 / beta).

  MacKay's fixed point, as in You et al. (ICML 2021, Algorithm 1), on the eigendecomposition
  F^T F = V diag(sigma) V^T: with t = alpha / beta and z = V^T F^T y_c,
  gamma = sum sigma / (sigma + t), |m|^2 = sum z^2 / (sigma + t)^2,
  |F m - y|^2 = sum_{sigma > 0} (z^2 / sigma) t^2 / (sigma + t)^2 + r, with
  r = |y|^2 - sum_{sigma > 0} z^2 / sigma the part of |y|^2 outside F's column space,
  alpha <- gamma / |m|^2, beta <- (N - gamma) / |F m - y|^2, until t settles.

  The residual is summed term by term, not as |y|^2 minus the fit: where N <= D, F
  interpolates y (r = 0) and the evidence rises towards beta -> inf; the difference form
  cancels there and stopped beta, and the score, early (by 2.5e-6 at N = 40, D = 300). The
  residual's floor, `LOGME_MIN_RESIDUAL` |y|^2, bounds beta.

  Args:
    eigenvalues: sigma [D], the eigenvalues of F^T F (all D of them, zeros included:
      directions with sigma = 0 hold no part of y).
    projections: z [D, C], one column per target.
    target_norms: |y_c|^2 [C].
    num_examples: N.

  Returns:
    [C]: each target's log evidence at its maximising (alpha, beta), divided by N.
  """
  sigma = np.clip(eigenvalues, 0.0, None)[:, None]
  z2 = np.where(sigma > 0, np.square(projections), 0.0)
  in_span = np.divide(z2, sigma, out=np.zeros_like(z2), where=sigma > 0)  # (U^T y)^2.
  outside = np.maximum(target_norms - np.sum(in_span, axis=0), 0.0)
  n, dim = float(num_examples), sigma.shape[0]
  alpha, beta = np.ones(z2.shape[1]), np.ones(z2.shape[1])

  def terms(alpha, beta, cols=slice(None)):
    t = alpha / beta
    d = sigma + t
    gamma = np.sum(sigma / d, axis=0)
    m2 = np.maximum(np.sum(z2[:, cols] / d ** 2, axis=0), 1e-300)
    res2 = np.maximum(np.sum(in_span[:, cols] * (t / d) ** 2, axis=0) + outside[cols],
                      LOGME_MIN_RESIDUAL * target_norms[cols])
    return gamma, m2, res2

  active = np.arange(z2.shape[1])  # Targets whose t has not settled yet.
  for _ in range(LOGME_MAX_ITERATIONS):
    a, b = alpha[active], beta[active]
    gamma, m2, res2 = terms(a, b, active)
    new_alpha, new_beta = gamma / m2, (n - gamma) / res2
    change = np.abs(np.log(new_alpha / new_beta) - np.log(a / b))
    alpha[active], beta[active] = new_alpha, new_beta
    active = active[change >= LOGME_TOLERANCE]
    if not active.size:
      break
  _, m2, res2 = terms(alpha, beta)
  evidence = (dim / 2 * np.log(alpha) + n / 2 * np.log(beta)
              - 0.5 * np.sum(np.log(alpha + beta * sigma), axis=0)
              - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
  return evidence / n


def logme(data: LabelledFeatures) -> float:
  """LogME (You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning", ICML 2021): mean over classes of the maximum log evidence / N.

  Single-label: one-vs-rest 0/1 targets per class, as the paper's code; multi-label: each
  label's 0/1 column, -1 (ignored by the metric) counted as 0, as the regimes' fits count it.
  Classes (labels) with no positive example are left out of the mean. Eigenvalues of F^T F
  below `LOGME_RANK_RTOL` x D x the largest are rounding error of the null space (N < D, or
  dependent features) and are set to 0, as the rank of F is taken by SVD-based LogME code.
  """
  s = data.stats
  gram = s.scatter + s.num_examples * np.outer(s.mean, s.mean)  # F^T F, uncentred.
  cross = s.target_sums + np.outer(s.mean, s.target_counts)  # F^T Y.
  with threadpoolctl.threadpool_limits(FACTOR_THREADS):
    eigenvalues, vectors = np.linalg.eigh(gram)
  cutoff = LOGME_RANK_RTOL * data.dim * max(float(eigenvalues[-1]), 0.0)
  eigenvalues = np.where(eigenvalues > cutoff, eigenvalues, 0.0)
  present = s.target_counts > 0
  evidence = logme_evidence(eigenvalues, vectors.T @ cross[:, present],
                            s.target_counts[present], s.num_examples)
  return float(np.mean(evidence))


def ledoit_wolf_shrinkage(stats: FeatureStats) -> float:
  """Ledoit & Wolf's (2004) shrinkage intensity of the covariance, from `stats`.

  The same estimate as `sklearn.covariance.ledoit_wolf_shrinkage` (centred, 1/N covariance).
  """
  n, dim = stats.num_examples, stats.scatter.shape[0]
  cov = stats.scatter / n
  mu = np.trace(cov) / dim
  frobenius2 = float(np.sum(np.square(cov)))
  beta = (stats.fourth_moment / n - frobenius2) / (dim * n)
  delta = (frobenius2 - dim * mu ** 2) / dim
  beta = min(beta, delta)
  return 0.0 if beta <= 0 else float(beta / delta)


def hscore(data: LabelledFeatures) -> float:
  """Shrinkage H-score: H-score (Bao et al., ICIP 2019) with Ibrahim, Ponomareva & Mazumder's
  (arXiv:2110.06893, 2021) Ledoit-Wolf covariance, (1 - a) tr(cov_a(f)^-1 cov(E[f|y])).

  cov_a = (1 - a) cov(f) + a (tr cov(f) / D) I with a the Ledoit-Wolf shrinkage; covariances
  are the 1/N (maximum-likelihood) ones. Refuses multi-label targets: E[f|y] needs one class.
  """
  if data.multi_label:
    raise ValueError("H-score conditions on one class per example; it is not defined for "
                     "multi-label datasets. Use logme there.")
  s = data.stats
  n, dim = s.num_examples, s.scatter.shape[0]
  a = ledoit_wolf_shrinkage(s)
  cov = (1 - a) * s.scatter / n + a * np.trace(s.scatter) / (n * dim) * np.eye(dim)
  present = s.target_counts > 0
  class_means = s.target_sums[:, present] / s.target_counts[present]  # Centred E[f | y = c].
  try:
    with threadpoolctl.threadpool_limits(FACTOR_THREADS):
      solved = np.linalg.solve(cov, class_means)
  except np.linalg.LinAlgError:
    raise ValueError("The features' covariance is singular (constant features?): H-score is "
                     "undefined. Check the extracted features.") from None
  weights = s.target_counts[present] / n
  return float((1 - a) * np.sum(weights * np.sum(class_means * solved, axis=0)))


def knn_loo_accuracy(data: LabelledFeatures, *, k: int = KNN_K,
                     max_queries: int = KNN_MAX_QUERIES, seed: int = KNN_SEED) -> float:
  """Leave-one-out k-NN accuracy: the k-NN rule (Cover & Hart, IEEE Trans. Inf. Theory 1967)
  with cosine similarity and a majority vote, ties going to the nearest.

  Each query's k most similar other examples vote; among tied classes the one with the most
  similar member wins. With more than `max_queries` examples, the queries are
  `max_queries` examples drawn uniformly without replacement (`seed`), each still searched
  against all N.
  """
  if data.multi_label:
    raise ValueError("k-NN accuracy needs one class per example; it is not defined for "
                     "multi-label datasets. Use logme there.")
  n = data.num_examples
  if n <= k:
    raise ValueError(f"k-NN with k={k} needs more than {k} examples, got {n}.")
  queries = (np.arange(n) if n <= max_queries else
             np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False)))
  q = _unit_rows(data.rows(queries).astype(np.float32))
  best_sim = np.full((len(queries), k), -np.inf, dtype=np.float32)
  best_idx = np.zeros((len(queries), k), dtype=np.int64)
  block = CHUNK_SIZE // 4  # Queries per similarity block: [block, CHUNK_SIZE] at a time.
  for start, x, _ in data.chunks():
    refs = _unit_rows(x.astype(np.float32))
    for qs in range(0, len(queries), block):
      rows = slice(qs, qs + block)
      sim = q[rows] @ refs.T
      self_pos = queries[rows] - start
      inside = (self_pos >= 0) & (self_pos < len(refs))
      sim[np.flatnonzero(inside), self_pos[inside]] = -np.inf  # Leave the query out.
      # This chunk's k best per query, merged with the k best so far.
      top = np.argpartition(sim, -min(k, len(refs)), axis=1)[:, -min(k, len(refs)):]
      cand_sim = np.concatenate([best_sim[rows], np.take_along_axis(sim, top, axis=1)], axis=1)
      cand_idx = np.concatenate([best_idx[rows], top + start], axis=1)
      keep = np.argpartition(cand_sim, -k, axis=1)[:, -k:]
      best_sim[rows] = np.take_along_axis(cand_sim, keep, axis=1)
      best_idx[rows] = np.take_along_axis(cand_idx, keep, axis=1)
  order = np.argsort(-best_sim, axis=1, kind="stable")
  votes = data.labels[np.take_along_axis(best_idx, order, axis=1)]  # Nearest first.
  counts = np.zeros((len(queries), data.num_classes), dtype=np.int64)
  for j in range(k):
    counts[np.arange(len(queries)), votes[:, j]] += 1
  votes_of = np.take_along_axis(counts, votes, axis=1)
  nearest_winner = np.argmax(votes_of == votes_of.max(axis=1, keepdims=True), axis=1)
  predicted = votes[np.arange(len(queries)), nearest_winner]
  return float(np.mean(predicted == data.labels[queries]))


def _unit_rows(x: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norms > 0, norms, 1)


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
  """One transferability estimator.

  Attributes:
    name: registry name (the score's name in results and summary lines).
    title: how the report titles it.
    paper: the paper it implements.
    multi_label: what it does with multi-label targets; None: it refuses them.
    settings: its fixed settings, part of a stored score's protocol.
    fn: (LabelledFeatures) -> score; higher means better expected transfer.
    uses_stats: whether it reads the shared `FeatureStats` (their time is counted apart).
  """
  name: str
  title: str
  paper: str
  multi_label: Optional[str]
  settings: Mapping[str, Any]
  fn: Callable[[LabelledFeatures], float]
  uses_stats: bool


ESTIMATORS: dict[str, EstimatorSpec] = {s.name: s for s in [
    EstimatorSpec("logme", "LogME", "You et al., ICML 2021",
                  "mean over labels of each label's 0/1 evidence (-1, ignored, as 0)",
                  {"max_iterations": LOGME_MAX_ITERATIONS, "tolerance": LOGME_TOLERANCE,
                   "rank_rtol": LOGME_RANK_RTOL, "min_residual": LOGME_MIN_RESIDUAL},
                  logme, uses_stats=True),
    EstimatorSpec("hscore", "H-score (shrinkage)",
                  "Bao et al., ICIP 2019; shrinkage: Ibrahim et al., arXiv:2110.06893", None,
                  {"covariance": "ledoit_wolf"}, hscore, uses_stats=True),
    EstimatorSpec("knn", f"{KNN_K}-NN LOO accuracy",
                  "Cover & Hart, IEEE Trans. Inf. Theory 1967 (leave-one-out, cosine)", None,
                  {"k": KNN_K, "similarity": "cosine", "max_queries": KNN_MAX_QUERIES,
                   "seed": KNN_SEED}, knn_loo_accuracy, uses_stats=False),
]}


def get_estimator_spec(name: str) -> EstimatorSpec:
  """The spec of estimator `name`.

  Raises:
    ValueError: unknown name (the message lists the valid ones).
  """
  if name not in ESTIMATORS:
    raise ValueError(f"Unknown transferability estimator {name!r}. Valid choices: "
                     f"{', '.join(ESTIMATORS)}.")
  return ESTIMATORS[name]


@dataclasses.dataclass(frozen=True)
class Scores:
  """What `score_features` measured.

  Attributes:
    values: estimator name -> score (None where the estimator refuses the targets).
    seconds: estimator name -> its wall time, plus `stats_s`: the pass LogME and H-score
      share (counted once, not in theirs).
    skipped: estimator name -> why it was not computed.
    sizes: examples, feature dim, classes with examples, k-NN queries.
  """
  values: dict[str, Optional[float]]
  seconds: dict[str, float]
  skipped: dict[str, str]
  sizes: dict[str, int]


def score_features(data: LabelledFeatures,
                   names: Sequence[str] = tuple(ESTIMATORS)) -> Scores:
  """Runs the estimators `names` on `data`; refused ones get None and a reason."""
  specs = [get_estimator_spec(name) for name in names]
  runnable = [s for s in specs if not (data.multi_label and s.multi_label is None)]
  values = {s.name: None for s in specs}
  skipped = {s.name: f"{s.title} is not defined for multi-label targets"
             for s in specs if s not in runnable}
  seconds = {}
  if any(s.uses_stats for s in runnable):
    seconds["stats_s"] = data.stats.seconds
  for spec in runnable:
    start = time.perf_counter()
    values[spec.name] = spec.fn(data)
    seconds[f"{spec.name}_s"] = time.perf_counter() - start
  counts = (data.labels > 0).sum(axis=0) if data.multi_label else np.bincount(
      data.labels, minlength=data.num_classes)
  sizes = {"examples": data.num_examples, "dim": data.dim,
           "classes_present": int(np.sum(counts > 0))}
  if values.get("knn") is not None:
    sizes["knn_queries"] = min(data.num_examples, KNN_MAX_QUERIES)
  return Scores(values, seconds, skipped, sizes)
