"""Which models are significantly worse than the best on a dataset: a paired permutation test.

The test of this line of work (Kornblith et al. 2019; SimCLR's Appendix B.8): the two models'
predictions on each test example are exchanged at random, and the p-value is the share of
exchanges whose difference in the dataset's metric is at least as large (two-sided) as the
observed one. For top-1 accuracy this is the exact McNemar test; it stays valid for mean
per-class accuracy; on VOC2007 it is done on accuracy (each non-ignored image x class entry
is right when its logit's sign matches the label), not on mAP. It ignores run-to-run
training variance.

How it is computed: both metrics are a weighted sum over test examples, m = sum_i w_i s_i
(top-1: w_i = 1/N, s_i = 1 if right; mean per-class: w_i = 1 / (K n_{class(i)}); VOC: w_i =
1 / (number of non-ignored entries), s_i = right entries of image i). Exchanging example i's
predictions flips the sign of its term u_i = w_i (s_A,i - s_B,i) in the difference, so a
permutation's difference is sum_i e_i u_i with independent fair signs e_i. Examples with the
same |u_i| are exchangeable, so the number of flipped signs in such a group is
Binomial(n, 1/2): each of the `samples` permutations is drawn exactly, group by group, with
`numpy.random.default_rng(seed)`.
"""

import dataclasses
from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results.predictions import Predictions

PERMUTATION_SAMPLES = 10_000  # The minimum; SimCLR used 100,000.
ALPHA = 0.05
MIN_MODELS = 2


@dataclasses.dataclass(frozen=True)
class PermutationTest:
  """A paired permutation test of model A vs model B on one test set.

  Attributes:
    difference: metric of A minus metric of B (accuracy for multi-label sets).
    p_value: two-sided, (1 + #{|permuted| >= |observed|}) / (1 + samples).
    samples: permutations drawn.
    discordant: test examples where the two models' terms differ.
  """
  difference: float
  p_value: float
  samples: int
  discordant: int


def example_terms(predictions: Predictions, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-example weights w_i and scores s_i with metric = sum_i w_i s_i (see module doc)."""
  correct = predictions.correct()
  if predictions.multi_label:
    counted = (predictions.labels != -1).sum()
    return np.full(len(predictions), 1.0 / max(counted, 1)), correct.sum(axis=1)
  if metric == "mean_per_class":
    counts = np.bincount(predictions.labels)
    present = np.count_nonzero(counts)
    return 1.0 / (present * counts[predictions.labels]), correct.astype(np.float64)
  return np.full(len(predictions), 1.0 / len(predictions)), correct.astype(np.float64)


def permutation_test(a: Predictions, b: Predictions, *, metric: str,
                     samples: int = PERMUTATION_SAMPLES, seed: int = 0) -> PermutationTest:
  """The paired permutation test of two models' predictions on the same test examples.

  Args:
    a, b: the two models' test predictions.
    metric: the dataset's metric (`top1`, `mean_per_class`; `map_11point` is tested on
      accuracy).
    samples: permutations to draw (at least `PERMUTATION_SAMPLES`).
    seed: seed of the draws.

  Raises:
    ValueError: fewer samples than `PERMUTATION_SAMPLES`, or the predictions are not of the
      same test examples (labels differ).
  """
  if samples < PERMUTATION_SAMPLES:
    raise ValueError(f"samples={samples}: the test needs at least {PERMUTATION_SAMPLES}.")
  if a.labels.shape != b.labels.shape or not np.array_equal(a.labels, b.labels):
    raise ValueError(f"The two models' predictions are not of the same test examples "
                     f"(labels of shape {a.labels.shape} and {b.labels.shape}, or different "
                     f"labels); a paired test needs the same test split.")
  weights, score_a = example_terms(a, metric)
  _, score_b = example_terms(b, metric)
  terms = weights * (score_a - score_b)
  observed = float(terms.sum())
  magnitudes = np.abs(terms[terms != 0])
  values, counts = np.unique(magnitudes, return_counts=True)
  rng = np.random.default_rng(seed)
  # Per permutation: sum over groups of |u| * (kept - flipped) = |u| * (2 * kept - n).
  kept = rng.binomial(counts, 0.5, size=(samples, len(counts)))
  permuted = (2 * kept - counts) @ values
  tolerance = 1e-9 * max(float(magnitudes.sum()), 1e-300)
  extreme = int(np.count_nonzero(np.abs(permuted) >= abs(observed) - tolerance))
  return PermutationTest(difference=observed, p_value=(1 + extreme) / (1 + samples),
                         samples=samples, discordant=int(magnitudes.size))


@dataclasses.dataclass(frozen=True)
class DatasetSignificance:
  """Each model vs the best on one (regime, dataset).

  Attributes:
    regime, dataset: the table cell group.
    best: the model with the best metric (None if it has no stored predictions).
    p_values: model -> p-value of its test against `best` (`best` itself absent).
    not_different: `best` and every model with p > ALPHA.
    untested: model -> why it was not tested (no predictions, another test split).
    reason: why nothing was tested ("too few results: ..."), else None.
  """
  regime: str
  dataset: str
  best: Optional[str]
  p_values: Mapping[str, float]
  not_different: tuple[str, ...]
  untested: Mapping[str, str]
  reason: Optional[str]


def compare_to_best(regime: str, dataset: str, metric: str, scores: Mapping[str, float],
                    load_fn: Callable[[str], Optional[Predictions]], *,
                    samples: int = PERMUTATION_SAMPLES, seed: int = 0,
                    alpha: float = ALPHA) -> DatasetSignificance:
  """Tests every model against the best one on a dataset.

  Args:
    regime, dataset, metric: what is compared.
    scores: model -> its test metric as the table shows it (the best is the highest).
    load_fn: model -> its test predictions (None: not stored).
    samples, seed: of each permutation test.
    alpha: significance level; models with p > alpha are "not different" from the best.
  """
  loaded = {m: load_fn(m) for m in scores}
  untested = {m: "no stored test predictions" for m, p in loaded.items() if p is None}
  tested = {m: p for m, p in loaded.items() if p is not None}
  if len(tested) < MIN_MODELS:
    return DatasetSignificance(regime, dataset, None, {}, (), untested, (
        f"too few results: {len(tested)} model(s) with stored test predictions (need at "
        f"least {MIN_MODELS})"))
  best = max(scores, key=lambda m: (scores[m], m))
  if best not in tested:
    return DatasetSignificance(regime, dataset, None, {}, (), untested, (
        f"too few results: the best model, {best}, has no stored test predictions"))
  p_values = {}
  for model, predictions in tested.items():
    if model == best:
      continue
    try:
      p_values[model] = permutation_test(tested[best], predictions, metric=metric,
                                         samples=samples, seed=seed).p_value
    except ValueError:
      untested[model] = "predictions on another test split than the best model's"
  not_different = (best,) + tuple(sorted(m for m, p in p_values.items() if p > alpha))
  return DatasetSignificance(regime, dataset, best, p_values, not_different, untested, None)


def per_dataset(records: Iterable[Mapping], cells: Mapping, store_dir: Optional[str], *,
                samples: int = PERMUTATION_SAMPLES,
                seed: int = 0) -> dict[tuple[str, str], DatasetSignificance]:
  """`compare_to_best` for every (regime, dataset) of `cells` (`correlation.average_cells`).

  The best model is the one with the best seed-averaged test metric; each model is tested
  with the predictions of its lowest seed that stored them (under `store_dir`).
  """
  first = {}
  for r in sorted(records, key=lambda r: r["seed"]):
    if r["status"] == "ok" and r.get("predictions"):
      first.setdefault((r["regime"], r["model"], r["dataset"]), r)

  def load_fn(regime, dataset):
    def load(model):
      record = first.get((regime, model, dataset))
      return (predictions_lib.load_for_record(store_dir, record)
              if record is not None and store_dir else None)
    return load

  out = {}
  for regime, dataset in sorted({(r, d) for (r, _, d) in cells}):
    scores = {m: c.mean for (r, m, d), c in cells.items() if (r, d) == (regime, dataset)}
    metric = cells[(regime, next(iter(scores)), dataset)].metric
    if "/" in metric:
      out[(regime, dataset)] = DatasetSignificance(regime, dataset, None, {}, (), {},
                                                   f"mixes metrics ({metric})")
    else:
      out[(regime, dataset)] = compare_to_best(regime, dataset, metric, scores,
                                               load_fn(regime, dataset), samples=samples,
                                               seed=seed)
  return out


def significance_rows(results: Iterable[DatasetSignificance],
                      scores: Mapping[tuple[str, str, str], float]) -> list[list]:
  """significance.csv rows: regime, dataset, model, test metric, best, p, not different."""
  rows = []
  for s in results:
    for model in sorted({*s.p_values, *s.untested, *([s.best] if s.best else [])}):
      rows.append([s.regime, s.dataset, model, scores.get((s.regime, model, s.dataset)),
                   s.best, s.p_values.get(model), model in s.not_different,
                   s.untested.get(model) or s.reason])
  return rows
