"""Figure 1 of the paper: ImageNet top-1 vs average transfer log-odds, one panel per regime."""

import textwrap
from typing import Mapping

import numpy as np

from tfhub_transfer import regimes
from tfhub_transfer.report import correlation
from tfhub_transfer.report import reference


def plot_figure1(correlations: Mapping[str, correlation.Correlation], path: str) -> None:
  """The paper's Figure 1: ImageNet top-1 vs average log-odds, one panel per regime.

  Our models are labelled points with a least-squares line; the paper's 16 networks
  (approximate) are grey. Draws on an Agg canvas, leaving pyplot's backend alone.
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
