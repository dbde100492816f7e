"""The paper's main analysis beyond r: Figure 1's error bars, Figure 2's panels, r by dataset
size, and how often fine-tuning beats logistic regression. Each returns its number with the
reason it could not be computed ("too few results: ...") instead of a number from too little.

- Figure 1 error bars (the paper's Figure 2, right: "Error bars are standard error"),
  within-subject (Morey 2008, correcting Cousineau 2005), datasets as the subjects and models
  as the conditions: with y_md the log-odds of model m on dataset d (M models x N datasets,
  the datasets every model has), normalise z_md = y_md - mean_m'(y_m'd) + mean_m'd'(y_m'd'),
  take each model's standard error sd_d(z_md) / sqrt(N) and multiply by sqrt(M / (M - 1))
  (Morey's correction): the standard error of the model's average log-odds with the
  datasets' common difficulty removed, drawn by default; times the Student t quantile
  t_{0.975, N - 1}, a 95% confidence interval.
- Figure 1's markers (the paper's Figure 2, right, green points): the models not
  significantly different from the best on the average, by a paired t-test of their
  per-dataset log-odds against the best model's (two-sided p > 0.05, `average_significance`).
- Figure 2: per dataset and regime, transfer accuracy vs ImageNet top-1 with a least-squares
  line fitted in log-odds and a 95% percentile-bootstrap band (resampling models).
- r split by dataset size (the paper's appendix): the Figure-1 correlation over the datasets
  with fewer than 10,000 training images (train + validation, as run), and over the rest.
- Fine-tuning vs logistic regression: the (model, dataset) pairs with both results where
  fine-tuning's test metric is higher (the paper: 179 of 192).
"""

import dataclasses
import math
from typing import Mapping, Optional

import numpy as np
from scipy import stats

from tfhub_transfer.report import correlation

SMALL_DATASET = 10_000  # Training images (train + validation) below which a dataset is small.
BAND_SAMPLES = 2000
MIN_MODELS_FOR_LINE = 3
PAPER_FINETUNE_WINS = (179, 192)


ALPHA = 0.05  # Two-sided level of the average test (as the paper's "p > 0.05").


@dataclasses.dataclass(frozen=True)
class ErrorBars:
  """Morey's within-subject error bars of each model's average log-odds.

  Attributes:
    standard_errors: the standard errors (what the paper draws, and Figure 1 by default).
    half_widths: 95% confidence-interval half-widths (t_{0.975, N-1} x the standard error).
  """
  regime: str
  models: tuple[str, ...]
  half_widths: tuple[float, ...]
  reason: Optional[str]
  standard_errors: tuple[float, ...] = ()


def morey_standard_errors(logodds: np.ndarray) -> np.ndarray:
  """Within-subject standard errors per row of `logodds` [M models, N datasets] (module doc).

  Raises:
    ValueError: fewer than 2 models or 2 datasets.
  """
  y = np.asarray(logodds, dtype=np.float64)
  if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
    raise ValueError(f"Need at least 2 models x 2 datasets, got shape {y.shape}.")
  num_models, num_datasets = y.shape
  normalised = y - y.mean(axis=0, keepdims=True) + y.mean()
  standard_error = normalised.std(axis=1, ddof=1) / math.sqrt(num_datasets)
  return standard_error * math.sqrt(num_models / (num_models - 1))


def morey_half_widths(logodds: np.ndarray, level: float = 0.95) -> np.ndarray:
  """Within-subject CI half-widths per row of `logodds` [M models, N datasets] (module doc).

  Raises:
    ValueError: fewer than 2 models or 2 datasets.
  """
  num_datasets = np.shape(logodds)[1] if np.ndim(logodds) == 2 else 0
  corrected = morey_standard_errors(logodds)
  return corrected * stats.t.ppf(0.5 + level / 2, num_datasets - 1)


def error_bars(cells, corr: correlation.Correlation) -> ErrorBars:
  """Figure 1's error bars for the models and datasets of one regime's correlation."""
  models, datasets = corr.models, corr.datasets
  if len(models) < 2 or len(datasets) < 2:
    return ErrorBars(corr.regime, models, (), (
        f"too few results: {len(models)} model(s) on {len(datasets)} common dataset(s) "
        f"(within-subject error bars need at least 2 of each)"))
  matrix = _logodds_matrix(cells, corr)
  return ErrorBars(corr.regime, models, tuple(morey_half_widths(matrix)), None,
                   tuple(morey_standard_errors(matrix)))


def _logodds_matrix(cells, corr: correlation.Correlation) -> np.ndarray:
  """[models, datasets] log-odds of the correlation's models on its common datasets."""
  rows = correlation.cells_by_model(cells, corr.regime)
  return np.array([[float(correlation.logodds(rows[m][d].mean)) for d in corr.datasets]
                   for m in corr.models])


@dataclasses.dataclass(frozen=True)
class AverageSignificance:
  """Which models are not significantly worse than the best on the average (Figure 2,
  right, of the paper): paired t-tests of per-dataset log-odds across the common datasets.

  Attributes:
    best: the model with the highest average log-odds over the common datasets.
    p_values: model -> two-sided p of the paired t-test against `best` (the best: 1.0).
    not_different: `best` and the models with p > ALPHA.
    reason: why nothing was tested, or None.
  """
  regime: str
  best: Optional[str]
  p_values: dict[str, float]
  not_different: tuple[str, ...]
  reason: Optional[str]


def average_significance(cells, corr: correlation.Correlation) -> AverageSignificance:
  """Paired t-tests (`scipy.stats.ttest_rel`) of each model's log-odds on the correlation's
  common datasets against the best model's. The paper tests on its 12 datasets; with N
  datasets the test has N - 1 degrees of freedom."""
  models, datasets = corr.models, corr.datasets
  if len(models) < 2 or len(datasets) < 2:
    return AverageSignificance(corr.regime, None, {}, (), (
        f"too few results: {len(models)} model(s) on {len(datasets)} common dataset(s) (a "
        f"paired t-test across datasets needs at least 2 of each)"))
  matrix = _logodds_matrix(cells, corr)
  best = int(np.argmax(matrix.mean(axis=1)))
  p_values = {}
  for i, model in enumerate(models):
    differences = matrix[best] - matrix[i]
    if i == best or not np.any(differences != differences[0]):
      # The best itself, or a constant gap (t undefined): equal means are not different,
      # a constant nonzero gap on every dataset is.
      p_values[model] = 1.0 if not differences[0] else 0.0
    else:
      p_values[model] = float(stats.ttest_rel(matrix[best], matrix[i]).pvalue)
  not_different = tuple(m for m in models if p_values[m] > ALPHA)
  return AverageSignificance(corr.regime, models[best], p_values, not_different, None)


@dataclasses.dataclass(frozen=True)
class Line:
  """A least-squares line y = slope * x + intercept with a bootstrap band at `xs`."""
  slope: float
  intercept: float
  xs: tuple[float, ...]
  band_low: tuple[float, ...]
  band_high: tuple[float, ...]


def regression_band(x, y, *, samples: int = BAND_SAMPLES, seed: int = 0,
                    level: float = 0.95, num: int = 50) -> Optional[Line]:
  """Least-squares line of y on x and its percentile-bootstrap band (resampling points).

  Returns:
    None with fewer than `MIN_MODELS_FOR_LINE` points or a constant x.
  """
  x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
  if len(x) < MIN_MODELS_FOR_LINE or np.ptp(x) == 0:
    return None
  slope, intercept = np.polyfit(x, y, 1)
  xs = np.linspace(x.min(), x.max(), num)
  index = np.random.default_rng(seed).integers(0, len(x), size=(samples, len(x)))
  lines = []
  for i in index:
    if np.ptp(x[i]) > 0:  # A resample with one distinct x has no line.
      lines.append(np.polyval(np.polyfit(x[i], y[i], 1), xs))
  low, high = np.percentile(np.array(lines), [50 * (1 - level), 50 * (1 + level)], axis=0)
  return Line(float(slope), float(intercept), tuple(xs), tuple(low), tuple(high))


@dataclasses.dataclass(frozen=True)
class Panel:
  """One dataset x regime of Figure 2: accuracies (fractions) vs ImageNet top-1."""
  dataset: str
  regime: str
  models: tuple[str, ...]
  top1: tuple[float, ...]
  accuracy: tuple[float, ...]
  line: Optional[Line]  # Fitted in log-odds; None: too few models.


def figure2_panels(cells, top1: Mapping[str, float], *, seed: int = 0,
                   samples: int = BAND_SAMPLES) -> list[Panel]:
  """Figure 2's panels: per (dataset, regime), the models with a known ImageNet top-1."""
  panels = []
  for dataset, regime in sorted({(d, r) for (r, _, d) in cells}):
    rows = {m: c.mean for (r, m, d), c in cells.items() if (r, d) == (regime, dataset)
            and m in top1}
    models = tuple(sorted(rows, key=lambda m: (top1[m], m)))
    x, y = [top1[m] for m in models], [rows[m] for m in models]
    line = regression_band(x, correlation.logodds(y), seed=seed, samples=samples)
    panels.append(Panel(dataset, regime, models, tuple(x), tuple(y), line))
  return panels


def train_sizes(records, paper_sizes: Mapping[str, int]) -> dict[str, tuple[int, str]]:
  """Dataset -> (training images, where the number comes from): the largest train + val
  size recorded for it (what was run), else the paper's Table 1 size."""
  out = {}
  for r in records:
    size = (r.get("sizes") or {}).get("trainval")
    if r["status"] == "ok" and size:
      out[r["dataset"]] = (max(size, out.get(r["dataset"], (0, ""))[0]), "recorded")
  for dataset, size in paper_sizes.items():
    out.setdefault(dataset, (size, "paper"))
  return out


def correlation_by_size(cells, regime: str, top1: Mapping[str, float],
                        sizes: Mapping[str, tuple[int, str]], *, samples: int,
                        seed: int) -> dict[str, correlation.Correlation]:
  """The Figure-1 correlation over small (< SMALL_DATASET images) and over large datasets."""
  out = {}
  for group, is_small in (("small", True), ("large", False)):
    chosen = {d for (_, _, d) in cells if d in sizes and (sizes[d][0] < SMALL_DATASET)
              == is_small}
    subset = {k: c for k, c in cells.items() if k[2] in chosen}
    corr = correlation.correlate(subset, regime, top1, samples=samples, seed=seed)
    if not subset or not any(k[0] == regime for k in subset):
      corr = dataclasses.replace(corr, reason=f"too few results: no {group} dataset "
                                              f"in this regime")
    out[group] = corr
  return out


@dataclasses.dataclass(frozen=True)
class FinetuneWins:
  """(model, dataset) pairs with both a fine-tuned and a logistic-regression result."""
  wins: int
  pairs: int
  losses: tuple[tuple[str, str], ...]
  reason: Optional[str]


def finetune_beats_logreg(cells) -> FinetuneWins:
  """How many pairs fine-tuning wins (strictly higher test metric), and which it does not."""
  pairs = sorted((m, d) for (r, m, d) in cells if r == "finetune"
                 and ("logreg", m, d) in cells)
  if not pairs:
    return FinetuneWins(0, 0, (), "too few results: no (model, dataset) pair has both a "
                                  "finetune and a logreg result")
  losses = tuple((m, d) for m, d in pairs
                 if cells[("finetune", m, d)].mean <= cells[("logreg", m, d)].mean)
  return FinetuneWins(len(pairs) - len(losses), len(pairs), losses, None)
