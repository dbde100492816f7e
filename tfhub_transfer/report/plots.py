"""The paper's figures: Figure 1 (ImageNet top-1 vs average transfer log-odds, one panel per
regime) and Figure 2 (per dataset, transfer accuracy vs ImageNet top-1 in each regime)."""

import math
import textwrap
from typing import Mapping, Optional, Sequence

import numpy as np

from tfhub_transfer import regimes
from tfhub_transfer.report import analyses
from tfhub_transfer.report import correlation
from tfhub_transfer.report import reference

_REGIME_COLORS = {"logreg": "tab:blue", "finetune": "tab:orange", "scratch": "tab:green"}


def plot_figure1(correlations: Mapping[str, correlation.Correlation], path: str, *,
                 error_bars: Optional[Mapping[str, analyses.ErrorBars]] = None) -> None:
  """The paper's Figure 1: ImageNet top-1 vs average log-odds, one panel per regime.

  Our models are labelled points with a least-squares line (and, where given, Morey's
  within-subject 95% error bars); the paper's 16 networks (approximate) are grey. Draws on
  an Agg canvas, leaving pyplot's backend alone.
  """
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(5.2 * len(regimes.REGIMES), 4.8), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  paper = list(reference.paper_networks().values())
  for ax, regime in zip(fig.subplots(1, len(regimes.REGIMES)), regimes.REGIMES):
    corr = correlations[regime]
    ax.scatter([n.imagenet_top1 for n in paper], [n.avg_logodds(regime) for n in paper],
               s=18, color="0.7", label="paper, 16 networks (approx.)", zorder=1)
    if corr.logodds:
      ax.scatter(corr.top1, corr.logodds, s=30, color="tab:blue", label="ours", zorder=3)
      bars = (error_bars or {}).get(regime)
      if bars is not None and bars.half_widths and bars.models == corr.models:
        ax.errorbar(corr.top1, corr.logodds, yerr=bars.half_widths, fmt="none",
                    ecolor="tab:blue", elinewidth=1, capsize=2, zorder=3)
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
    ax.set_title(regimes.REGIMES[regime].title + "\n" + textwrap.fill(subtitle, 60), fontsize=9)
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel("ImageNet top-1 (%)")
    ax.set_ylabel("average transfer accuracy (log-odds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
  fig.savefig(path, dpi=110)


def plot_figure2(panels: Sequence[analyses.Panel], path: str, *, columns: int = 4) -> None:
  """The paper's Figure 2: one panel per dataset, test accuracy (logit axis) vs ImageNet
  top-1, a color per regime, each with its least-squares line (fitted in log-odds) and 95%
  bootstrap band. Draws on an Agg canvas."""
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  datasets = sorted({p.dataset for p in panels})
  cols = max(1, min(columns, len(datasets)))
  rows = max(1, math.ceil(len(datasets) / cols))
  fig = figure.Figure(figsize=(4.2 * cols, 3.6 * rows + 0.6), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
  if not datasets:
    axes[0].text(0.5, 0.5, "no results to plot", transform=axes[0].transAxes, ha="center",
                 va="center", color="tab:red")
    axes[0].set_axis_off()
  for ax in axes[max(len(datasets), 1):]:
    ax.set_axis_off()
  for ax, dataset in zip(axes, datasets):
    notes = []
    for panel in (p for p in panels if p.dataset == dataset):
      color = _REGIME_COLORS.get(panel.regime, "tab:gray")
      if panel.models:
        ax.scatter(panel.top1, np.clip(panel.accuracy, correlation.LOGODDS_EPS,
                                       1 - correlation.LOGODDS_EPS),
                   s=22, color=color, zorder=3, label=panel.regime)
      if panel.line is None:
        notes.append(f"{panel.regime}: {len(panel.models)} model(s), too few for a line")
        continue
      xs = np.array(panel.line.xs)
      ax.plot(xs, _sigmoid(panel.line.slope * xs + panel.line.intercept), color=color, lw=1)
      ax.fill_between(xs, _sigmoid(np.array(panel.line.band_low)),
                      _sigmoid(np.array(panel.line.band_high)), color=color, alpha=0.2,
                      lw=0)
    ax.set_yscale("logit")
    percent = ticker.FuncFormatter(lambda v, _: f"{100 * v:.3g}%")
    ax.yaxis.set_major_formatter(percent)
    ax.yaxis.set_minor_formatter(percent)
    ax.set_title(dataset, fontsize=10)
    ax.set_xlabel("ImageNet top-1 (%)", fontsize=8)
    ax.set_ylabel("test metric (logit axis)", fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    ax.grid(alpha=0.3)
    ax.margins(x=0.1)
    if notes:
      ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize=6,
              color="tab:red", va="bottom")
    ax.legend(fontsize=7, loc="best")
  fig.suptitle(textwrap.fill("Transfer accuracy vs ImageNet top-1 per dataset; lines: least "
                             "squares in log-odds, bands: 95% bootstrap over models",
                             45 * cols), fontsize=9)
  fig.savefig(path, dpi=100)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))
