"""The report: tables, average log-odds, correlation with ImageNet and Figure 1 of the paper.

Transfer accuracy p of a cell (a fraction in each dataset's metric, averaged over seeds) is
summarized as log-odds log(p / (1 - p)), as in the paper, with p clipped to
[LOGODDS_EPS, 1 - LOGODDS_EPS] so that a perfect (or zero) score gives a finite +-9.21.
A model's average log-odds is the mean over the datasets it has results for. Pearson r
between ImageNet top-1 and average log-odds uses the models with a known top-1 and, so that
they are compared on equal terms, the datasets every one of them has; its 95% CI is a
percentile bootstrap over models.
"""

import collections
import csv
import dataclasses
import os
import textwrap
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np

from tfhub_transfer import config
from tfhub_transfer import reference
from tfhub_transfer import results

LOGODDS_EPS = 1e-4
MIN_MODELS_FOR_CORRELATION = 3
BOOTSTRAP_SAMPLES = 2000
REGIME_TITLES = {"logreg": "Logistic regression on frozen features",
                 "finetune": "Fine-tuned", "scratch": "Trained from random initialization"}
SUMMARY_FIELDS = ("regime", "model", "imagenet_top1", "n_datasets", "avg_logodds",
                  "n_common_datasets", "avg_logodds_common", "paper_avg_logodds")
METRIC_NAMES = {"top1": "top-1 accuracy", "mean_per_class": "mean per-class accuracy",
                "map_11point": "11-point mAP"}


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


@dataclasses.dataclass(frozen=True)
class ReportPaths:
  """What `write_report` wrote, and the Markdown text of report.md."""
  report_md: str
  tables: dict[str, str]
  summary_csv: str
  figure_png: str
  markdown: str


@dataclasses.dataclass(frozen=True)
class _Report:
  cells: dict[tuple[str, str, str], Cell]
  top1: dict[str, float]
  correlations: dict[str, Correlation]
  failed: list[dict[str, Any]]
  n_ok: int
  samples: int
  seed: int


def _load(store_or_records) -> list[dict[str, Any]]:
  if isinstance(store_or_records, results.ResultsStore):
    return store_or_records.records()
  if isinstance(store_or_records, (str, os.PathLike)):
    raise TypeError(f"Got the path {store_or_records!r}; pass "
                    f"results.ResultsStore({store_or_records!r}) or a list of records.")
  return [results.check_record(r) for r in store_or_records]


def average_cells(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], Cell]:
  """Averages the `ok` records' test metric over seeds, per (regime, model, dataset)."""
  groups = collections.defaultdict(list)
  for r in records:
    if r["status"] == "ok":
      groups[(r["regime"], r["model"], r["dataset"])].append(r)
  return {key: Cell(*key, metric="/".join(sorted({r["metric"] for r in group})),
                    mean=float(np.mean([r["test_metric"] for r in group])),
                    n_seeds=len(group)) for key, group in groups.items()}


def _model_rows(cells, regime) -> dict[str, dict[str, Cell]]:
  rows = collections.defaultdict(dict)
  for (cell_regime, model, dataset), cell in cells.items():
    if cell_regime == regime:
      rows[model][dataset] = cell
  return rows


def correlate(cells: Mapping[tuple[str, str, str], Cell], regime: str,
              top1: Mapping[str, float], *, samples: int = BOOTSTRAP_SAMPLES,
              seed: int = 0) -> Correlation:
  """Pearson r (with bootstrap CI) of ImageNet top-1 vs average log-odds in `regime`."""
  rows = _model_rows(cells, regime)
  models = tuple(sorted((m for m in rows if m in top1), key=lambda m: (top1[m], m)))
  excluded = tuple(sorted(m for m in rows if m not in top1))
  datasets = tuple(sorted(set.intersection(*(set(rows[m]) for m in models)))) if models else ()
  avg = tuple(float(np.mean(logodds([rows[m][d].mean for d in datasets])))
              for m in models) if datasets else ()
  x = tuple(top1[m] for m in models)
  out = Correlation(regime, None, None, None, models, x, avg, datasets, excluded, None)
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


def _build(store_or_records, imagenet_top1, samples, seed) -> _Report:
  records = _load(store_or_records)
  cells = average_cells(records)
  top1 = {name: n.imagenet_top1 for name, n in reference.paper_networks().items()}
  top1.update(imagenet_top1 or {})
  return _Report(cells, top1, {regime: correlate(cells, regime, top1, samples=samples,
                                                 seed=seed) for regime in config.REGIMES},
                 [r for r in records if r["status"] == "failed"],
                 sum(r["status"] == "ok" for r in records), samples, seed)


def _ordered_models(report, models) -> list[str]:
  """Known ImageNet top-1 ascending (as in the paper's legend), then the rest by name."""
  return sorted(models, key=lambda m: (m not in report.top1, report.top1.get(m, 0.0), m))


def _ordered_datasets(datasets) -> list[str]:
  """The paper's Table 1 order, then other datasets by name."""
  paper = {d: i for i, d in enumerate(reference.paper_datasets())}
  return sorted(datasets, key=lambda d: (paper.get(d, len(paper)), d))


def _summary_rows(report) -> list[dict[str, Any]]:
  """Per regime and model: average log-odds over its datasets, over the common ones, paper's."""
  networks = reference.paper_networks()
  out = []
  for regime in config.REGIMES:
    corr = report.correlations[regime]
    common = dict(zip(corr.models, corr.logodds))
    rows = _model_rows(report.cells, regime)
    for model in _ordered_models(report, rows):
      out.append({
          "regime": regime, "model": model, "imagenet_top1": report.top1.get(model),
          "n_datasets": len(rows[model]),
          "avg_logodds": float(np.mean(logodds([c.mean for c in rows[model].values()]))),
          "n_common_datasets": len(corr.datasets) if model in common else None,
          "avg_logodds_common": common.get(model),
          "paper_avg_logodds": (networks[model].avg_logodds(regime)
                                if model in networks else None)})
  return out


def _fmt(value, spec=".2f") -> str:
  return "–" if value is None else format(value, spec)


def _markdown(report) -> str:
  lines = ["# Transfer results", "",
           f"{report.n_ok} successful and {len(report.failed)} failed runs. Cells are test "
           f"accuracy (%) in each dataset's metric; `(k)` marks a mean over k seeds. ImageNet "
           f"top-1 is the paper's for its networks. Average log-odds = mean over the model's "
           f"datasets of log(p/(1-p)), p clipped to [{LOGODDS_EPS:g}, 1-{LOGODDS_EPS:g}]; "
           f"`(n)` = number of datasets."]
  paper = reference.paper_datasets()
  for d in _ordered_datasets({d for (_, _, d) in report.cells}):
    metrics = "/".join(sorted({c.metric for (_, _, cd), c in report.cells.items() if cd == d}))
    if "/" in metrics:
      lines.append(f"- Note: {d} mixes metrics ({metrics}); its cells are not comparable.")
    elif d in paper and paper[d].metric != metrics:
      lines.append(f"- Note: {d} is in {metrics}; the paper reports {paper[d].metric}.")
  summary = {(r["regime"], r["model"]): r for r in _summary_rows(report)}
  for regime in config.REGIMES:
    lines += ["", f"## {REGIME_TITLES[regime]} (`{regime}`)", ""]
    lines += _regime_section(report, regime, summary)
  lines += ["", "## Ours vs the paper (average log-odds)", ""] + _comparison(report, summary)
  if report.failed:
    lines += ["", f"## Failed runs ({len(report.failed)})", ""]
    for r in report.failed[:20]:
      error = (r.get("error") or "no error message").strip().splitlines() or [""]
      lines.append(f"- {r['model']} / {r['dataset']} / {r['regime']} / seed {r['seed']}: "
                   f"{error[-1][:160]}")
    if len(report.failed) > 20:
      lines.append(f"- ... and {len(report.failed) - 20} more.")
  return "\n".join(lines) + "\n"


def _regime_section(report, regime, summary) -> list[str]:
  """The models x datasets table of one regime, and its correlation."""
  rows = _model_rows(report.cells, regime)
  if not rows:
    return ["No results in this regime."]
  datasets = _ordered_datasets({d for row in rows.values() for d in row})
  metrics = {d: c.metric for row in rows.values() for d, c in row.items()}
  lines = ["Metrics: " + ", ".join(f"{d} {METRIC_NAMES.get(metrics[d], metrics[d])}"
                                   for d in datasets) + ".", "",
           "| model | ImageNet top-1 | " + " | ".join(datasets) + " | avg log-odds |",
           "|---" * (len(datasets) + 3) + "|"]
  for model in _ordered_models(report, rows):
    cells = [_fmt(100 * c.mean, ".1f") + (f" ({c.n_seeds})" if c.n_seeds > 1 else "")
             if (c := rows[model].get(d)) else "–" for d in datasets]
    s = summary[(regime, model)]
    lines.append(f"| {model} | {_fmt(report.top1.get(model))} | " + " | ".join(cells)
                 + f" | {s['avg_logodds']:.2f} ({s['n_datasets']}) |")
  return lines + ["", _correlation_line(report.correlations[regime], report)]


def _correlation_line(corr: Correlation, report) -> str:
  head = "Pearson r (ImageNet top-1 vs average log-odds)"
  paper = f"paper: {reference.PAPER_CORRELATIONS[corr.regime]:.2f}"
  if corr.r is None:
    text = f"{head}: not computed, {corr.reason} ({paper})."
  else:
    text = (f"{head}: {corr.r:.2f}, 95% CI [{corr.ci_low:.2f}, {corr.ci_high:.2f}] "
            f"(bootstrap over models, {report.samples} resamples, seed {report.seed}); "
            f"{len(corr.models)} models on the {len(corr.datasets)} dataset(s) all of them "
            f"have ({paper}).")
  if corr.excluded:
    text += (f" Excluded, ImageNet top-1 unknown: {', '.join(corr.excluded)} "
             f"(give them with --imagenet_top1=NAME=TOP1,... or imagenet_top1={{name: top1}} to include them).")
  return text


def _comparison(report, summary) -> list[str]:
  """Our average log-odds next to the paper's, per model and regime."""
  if not summary:
    return ["No results yet."]
  networks = reference.paper_networks()
  lines = [f"Paper values are {reference.APPROXIMATE_NOTE}, each over its 12 datasets; ours "
           f"are over `(n)` datasets, so they compare only where n = 12.", "",
           "| model | ImageNet top-1 | " + " | ".join(
               f"{regime} ours | {regime} paper" for regime in config.REGIMES) + " |",
           "|---" * (2 + 2 * len(config.REGIMES)) + "|"]
  for model in _ordered_models(report, {m for (_, m) in summary}):
    parts = []
    for regime in config.REGIMES:
      s = summary.get((regime, model))
      parts += [f"{s['avg_logodds']:.2f} ({s['n_datasets']})" if s else "–",
                _fmt(networks[model].avg_logodds(regime) if model in networks else None)]
    lines.append(f"| {model} | {_fmt(report.top1.get(model))} | " + " | ".join(parts) + " |")
  return lines


def format_report(store_or_records, *, imagenet_top1: Optional[Mapping[str, float]] = None,
                  bootstrap_samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> str:
  """The report as Markdown text (see `write_report` for the arguments)."""
  return _markdown(_build(store_or_records, imagenet_top1, bootstrap_samples, seed))


def write_report(store_or_records: Union[results.ResultsStore, Iterable[dict[str, Any]]],
                 out_dir: str, *, imagenet_top1: Optional[Mapping[str, float]] = None,
                 bootstrap_samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> ReportPaths:
  """Writes report.md, table_<regime>.csv, summary.csv and figure1.png to `out_dir`.

  Args:
    store_or_records: a `ResultsStore`, or records as `run_experiment` returns them.
    out_dir: output directory (created if missing).
    imagenet_top1: ImageNet top-1 (%) of models outside the paper's 16 (or overrides).
    bootstrap_samples: resamples of the correlation's confidence interval.
    seed: seed of the bootstrap.

  Returns:
    The paths written and the Markdown text.
  """
  report = _build(store_or_records, imagenet_top1, bootstrap_samples, seed)
  os.makedirs(out_dir, exist_ok=True)
  paths = ReportPaths(os.path.join(out_dir, "report.md"),
                      {r: os.path.join(out_dir, f"table_{r}.csv") for r in config.REGIMES},
                      os.path.join(out_dir, "summary.csv"),
                      os.path.join(out_dir, "figure1.png"),
                      _markdown(report) + "\n![Figure 1](figure1.png)\n")
  for regime, path in paths.tables.items():
    rows = _model_rows(report.cells, regime)
    datasets = _ordered_datasets({d for row in rows.values() for d in row})
    header = ["model", "imagenet_top1"] + [f"{d}{s}" for d in datasets for s in ("", "_seeds")]
    table = [[m, report.top1.get(m)] + [v for d in datasets for v in (
        (100 * rows[m][d].mean, rows[m][d].n_seeds) if d in rows[m] else (None, None))]
             for m in _ordered_models(report, rows)]
    _write_csv(path, header, table)
  _write_csv(paths.summary_csv, SUMMARY_FIELDS,
             [[r[k] for k in SUMMARY_FIELDS] for r in _summary_rows(report)])
  plot_figure1(report.correlations, paths.figure_png)
  with open(paths.report_md, "w") as f:
    f.write(paths.markdown)
  return paths


def _write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])


def plot_figure1(correlations: Mapping[str, Correlation], path: str) -> None:
  """The paper's Figure 1: ImageNet top-1 vs average log-odds, one panel per regime.

  Our models are labelled points with a least-squares line; the paper's 16 networks
  (approximate) are grey. Draws on an Agg canvas, leaving pyplot's backend alone.
  """
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(5.2 * len(config.REGIMES), 4.8), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  paper = list(reference.paper_networks().values())
  for ax, regime in zip(fig.subplots(1, len(config.REGIMES)), config.REGIMES):
    corr = correlations[regime]
    ax.scatter([n.imagenet_top1 for n in paper], [n.avg_logodds(regime) for n in paper],
               s=18, color="0.7", label="paper, 16 networks (approx.)", zorder=1)
    if corr.logodds:
      ax.scatter(corr.top1, corr.logodds, s=30, color="tab:blue", label="ours", zorder=3)
      right = min(corr.top1) + 0.7 * (max(corr.top1) - min(corr.top1))
      for name, x, y in zip(corr.models, corr.top1, corr.logodds):
        ax.annotate(name, (x, y), xytext=(-4 if x > right else 4, 3), fontsize=7,
                    textcoords="offset points", ha="right" if x > right else "left")
    if corr.r is not None:
      slope, intercept = np.polyfit(corr.top1, corr.logodds, 1)
      xs = np.array([min(corr.top1), max(corr.top1)])
      ax.plot(xs, slope * xs + intercept, "--", color="tab:blue", lw=1, zorder=2)
      subtitle = (f"r = {corr.r:.2f} [{corr.ci_low:.2f}, {corr.ci_high:.2f}], "
                  f"{len(corr.models)} models, {len(corr.datasets)} datasets")
    else:
      subtitle = f"r not computed: {corr.reason}"
      if not corr.logodds:
        ax.text(0.5, 0.5, "no results to plot" if corr.reason == "no results in this regime"
                else corr.reason, transform=ax.transAxes, ha="center", va="center",
                wrap=True, fontsize=9, color="tab:red")
    ax.set_title(REGIME_TITLES[regime] + "\n" + textwrap.fill(subtitle, 60), fontsize=9)
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel("ImageNet top-1 (%)")
    ax.set_ylabel("average transfer accuracy (log-odds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
  fig.savefig(path, dpi=110)
