"""Average log-odds per model and its correlation with ImageNet top-1, as in the paper.

Transfer accuracy p of a cell (a fraction in each dataset's metric, averaged over seeds) is
summarized as log-odds log(p / (1 - p)), as in the paper, with p clipped to
[LOGODDS_EPS, 1 - LOGODDS_EPS] so that a perfect (or zero) score gives a finite +-9.21.
A model's average log-odds is the mean over the datasets it has results for. Pearson r
between ImageNet top-1 and average log-odds uses the models with a known top-1 and, so that
they are compared on equal terms, the datasets every one of them has; its 95% CI is a
percentile bootstrap over models.
"""

import collections
import dataclasses
from typing import Any, Iterable, Mapping, Optional

import numpy as np

LOGODDS_EPS = 1e-4
MIN_MODELS_FOR_CORRELATION = 3
BOOTSTRAP_SAMPLES = 2000


def logodds(p: Any) -> np.ndarray:
  """log(p / (1 - p)), with p clipped to [LOGODDS_EPS, 1 - LOGODDS_EPS]."""
  p = np.clip(np.asarray(p, dtype=np.float64), LOGODDS_EPS, 1 - LOGODDS_EPS)
  return np.log(p) - np.log1p(-p)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Pearson r of each row pair of x, y [B, N]; NaN where a row is constant."""
  xc = x - x.mean(axis=1, keepdims=True)
  yc = y - y.mean(axis=1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    r = (xc * yc).sum(axis=1) / np.sqrt((xc ** 2).sum(axis=1) * (yc ** 2).sum(axis=1))
  # A constant row's mean can be off by rounding; test constancy exactly.
  constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
  return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def pearson_with_ci(x, y, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
  """Pearson r with a percentile-bootstrap CI, resampling (x, y) pairs.

  The resamples are `np.random.default_rng(seed).integers(0, n, size=(samples, n))`;
  those whose x or y is constant (r undefined) are dropped; the CI is
  `np.percentile(rs, [50 * (1 - level), 50 * (1 + level)])`.

  Returns:
    (r, ci_low, ci_high); r is NaN when x or y is constant.
  """
  x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
  r = float(_pearson_rows(x[None], y[None])[0])
  index = np.random.default_rng(seed).integers(0, len(x), size=(samples, len(x)))
  rs = _pearson_rows(x[index], y[index])
  rs = rs[np.isfinite(rs)]
  if not np.isfinite(r) or not rs.size:
    return r, float("nan"), float("nan")
  low, high = np.percentile(rs, [50 * (1 - level), 50 * (1 + level)])
  return r, float(low), float(high)


@dataclasses.dataclass(frozen=True)
class Cell:
  """One (regime, model, dataset): test metric (fraction) averaged over `n_seeds`."""
  regime: str
  model: str
  dataset: str
  metric: str
  mean: float
  n_seeds: int


@dataclasses.dataclass(frozen=True)
class Correlation:
  """Pearson r of ImageNet top-1 vs average log-odds in one regime.

  `r` is None and `reason` says why when it cannot be computed. `logodds` are the models'
  averages over `datasets` (those all the `models` have), as plotted in Figure 1.
  `excluded` are the models without a known ImageNet top-1, and `excluded_logodds` their
  averages over each one's own datasets.
  """
  regime: str
  r: Optional[float]
  ci_low: Optional[float]
  ci_high: Optional[float]
  models: tuple[str, ...]
  top1: tuple[float, ...]
  logodds: tuple[float, ...]
  datasets: tuple[str, ...]
  excluded: tuple[str, ...]
  reason: Optional[str]
  excluded_logodds: tuple[float, ...] = ()


def average_cells(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], Cell]:
  """Averages the `ok` records' test metric over seeds, per (regime, model, dataset)."""
  groups = collections.defaultdict(list)
  for r in records:
    if r["status"] == "ok":
      groups[(r["regime"], r["model"], r["dataset"])].append(r)
  return {key: Cell(*key, metric="/".join(sorted({r["metric"] for r in group})),
                    mean=float(np.mean([r["test_metric"] for r in group])),
                    n_seeds=len(group)) for key, group in groups.items()}


def weights_used(records: Iterable[dict[str, Any]], regime: str,
                 models: Iterable[str]) -> set[Optional[str]]:
  """The `--weights` values of `regime`'s records of `models` (None: the regime's default;
  a record without a config counts as None)."""
  models = set(models)
  return {(r.get("config") or {}).get("weights") for r in records
          if r["regime"] == regime and r["model"] in models}


def cells_by_model(cells: Mapping[tuple[str, str, str], Cell],
                   regime: str) -> dict[str, dict[str, Cell]]:
  """The cells of `regime` as model -> dataset -> Cell."""
  rows = collections.defaultdict(dict)
  for (cell_regime, model, dataset), cell in cells.items():
    if cell_regime == regime:
      rows[model][dataset] = cell
  return rows


def correlate(cells: Mapping[tuple[str, str, str], Cell], regime: str,
              top1: Mapping[str, float], *, samples: int = BOOTSTRAP_SAMPLES,
              seed: int = 0) -> Correlation:
  """Pearson r (with bootstrap CI) of ImageNet top-1 vs average log-odds in `regime`."""
  rows = cells_by_model(cells, regime)
  models = tuple(sorted((m for m in rows if m in top1), key=lambda m: (top1[m], m)))
  excluded = tuple(sorted(m for m in rows if m not in top1))
  datasets = tuple(sorted(set.intersection(*(set(rows[m]) for m in models)))) if models else ()
  avg = tuple(float(np.mean(logodds([rows[m][d].mean for d in datasets])))
              for m in models) if datasets else ()
  x = tuple(top1[m] for m in models)
  excluded_avg = tuple(float(np.mean(logodds([c.mean for c in rows[m].values()])))
                       for m in excluded)
  out = Correlation(regime, None, None, None, models, x, avg, datasets, excluded, None,
                    excluded_logodds=excluded_avg)
  if not rows:
    return dataclasses.replace(out, reason="no results in this regime")
  if len(models) < MIN_MODELS_FOR_CORRELATION:
    return dataclasses.replace(out, reason=(
        f"too few results: {len(models)} model(s) with a known ImageNet top-1 "
        f"(need at least {MIN_MODELS_FOR_CORRELATION})"))
  if not datasets:
    return dataclasses.replace(out, reason=f"no dataset has results for all {len(models)} "
                                           f"models")
  r, low, high = pearson_with_ci(x, avg, samples=samples, seed=seed)
  if not np.isfinite(r):
    return dataclasses.replace(out, reason="ImageNet top-1 or average log-odds is the same "
                                           "for every model, so r is undefined")
  return dataclasses.replace(out, r=r, ci_low=low, ci_high=high)
