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

_PAPER = "0.65"
# The ring around models not significantly below the best (the paper's Figure 2 (right)
# colours them green, a regime's colour here).
_NOT_DIFFERENT = "black"
# Models without a known ImageNet top-1: one colour and marker each, the same in every
# panel; the markers sit at different places along the lines, so equal lines stay apart.
# Never a regime's colour (`RegimeSpec.colour`): a colour means one regime in every figure
# (tests/test_report.py checks both).
_UNPLACED_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
_UNPLACED_MARKERS = ("D", "v", "P", "X", "h", "*", "s", "^")


# What Figure 1's error bars show: `ErrorBars` field -> legend text.
ERROR_BAR_KINDS = {"standard_errors": "error bars: within-subject standard error (Morey)",
                   "half_widths": "error bars: within-subject 95% CI (Morey)"}


def plot_figure1(correlations: Mapping[str, correlation.Correlation], path: str, *,
                 error_bars: Optional[Mapping[str, analyses.ErrorBars]] = None,
                 significance: Optional[Mapping[str, analyses.AverageSignificance]] = None,
                 bars: str = "standard_errors") -> None:
  """Writes `make_figure1(...)` to `path` (PNG)."""
  make_figure1(correlations, error_bars=error_bars, significance=significance,
               bars=bars).savefig(path, dpi=110)


def make_figure1(correlations: Mapping[str, correlation.Correlation], *,
                 error_bars: Optional[Mapping[str, analyses.ErrorBars]] = None,
                 significance: Optional[Mapping[str, analyses.AverageSignificance]] = None,
                 bars: str = "standard_errors"):
  """The paper's Figure 1 (and Figure 2, right): ImageNet top-1 vs average log-odds, one
  panel per regime.

  The paper's 16 networks (approximate) are grey points; ours are labelled points in the
  regime's colour (`RegimeSpec.colour`) with a least-squares line once r is computed, and,
  where given, Morey's within-subject error bars (`bars`: `standard_errors`, as the paper
  draws, or `half_widths`, 95% intervals; the legend says which), and a black ring around
  the models not significantly different from the best on the average (`significance`; the
  paper colours them green, which is a regime's colour here). A model whose ImageNet top-1
  is unknown is a horizontal dashed line at its average log-odds, with its own marker, named
  in the legend; the legend's title says how to place it. Every message sits in a panel's
  title or under the panels, never over the data. Draws on an Agg canvas, leaving pyplot's
  backend alone.

  Returns:
    The matplotlib `Figure`, laid out.
  """
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib import lines  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  names = list(regimes.REGIMES)
  fig = figure.Figure(figsize=(5.0 * len(names), 5.4), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  paper = list(reference.paper_networks().values())
  unplaced = sorted({m for regime in names for m in correlations[regime].excluded})
  styles = {m: (_UNPLACED_COLORS[i % len(_UNPLACED_COLORS)],
                _UNPLACED_MARKERS[i % len(_UNPLACED_MARKERS)], (i + 1) / (len(unplaced) + 1))
            for i, m in enumerate(unplaced)}
  panels = list(zip(fig.subplots(1, len(names), squeeze=False)[0], names))
  if bars not in ERROR_BAR_KINDS:
    raise ValueError(f"bars={bars!r}: expected one of {', '.join(ERROR_BAR_KINDS)}.")
  for ax, regime in panels:
    bar = (error_bars or {}).get(regime)
    _panel(ax, regime, correlations[regime], paper, styles,
           getattr(bar, bars) if bar is not None and bar.models == correlations[regime].models
           else (), (significance or {}).get(regime))
  handles = [lines.Line2D([], [], ls="", marker="o", ms=5, color=_PAPER,
                          label="the paper's 16 networks (approx., read off its Figure 1)")]
  handles += [lines.Line2D([], [], ls="--", marker="o", ms=6, color=regimes.REGIMES[r].colour,
                           label=f"ours, {r} (least-squares line once r is computed)")
              for r in names if correlations[r].logodds]
  if any(getattr(b, bars) for b in (error_bars or {}).values()):
    handles.append(lines.Line2D([], [], ls="", marker="|", ms=10, color=_PAPER,
                                label=ERROR_BAR_KINDS[bars]))
  if any(s.best for s in (significance or {}).values()):
    handles.append(lines.Line2D([], [], ls="", marker="o", ms=9, mfc="none",
                                mec=_NOT_DIFFERENT, label=f"ringed: not significantly below "
                                f"the best on the average (paired t-test over datasets, "
                                f"p > {analyses.ALPHA})"))
  handles += [lines.Line2D([], [], ls="--", lw=1.5, color=styles[m][0], marker=styles[m][1],
                           ms=6, label=f"{m}: ImageNet top-1 unknown") for m in unplaced]
  note = ("A dashed line is a model's average log-odds over its own datasets (its marker only "
          "tells lines apart); place the model with its top-1: --mode=report "
          "--imagenet_top1='NAME=TOP1'." if unplaced else None)
  fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2),
             fontsize=8.5, frameon=False, title=note, title_fontsize=8.5)
  # Names go where they overlap nothing, which needs the final axes: lay out, then freeze.
  fig.draw_without_rendering()
  fig.set_layout_engine("none")
  for ax, regime in panels:
    corr = correlations[regime]
    _label_points(ax, corr.models, corr.top1, corr.logodds)
  return fig


def _panel(ax, regime, corr, paper, styles, bars, tested) -> None:
  """One regime: the paper's points, ours (with error bars `bars` where given, ringed where
  `tested` finds them not significantly below the best), the unplaced models' lines; the
  status as title."""
  paper_x = [n.imagenet_top1 for n in paper]
  paper_y = [n.avg_logodds(regime) for n in paper]
  ax.scatter(paper_x, paper_y, s=22, color=_PAPER, zorder=1)
  ours = regimes.get_regime_spec(regime).colour
  if corr.logodds:
    level = set(tested.not_different) if tested is not None else set()
    ax.scatter(corr.top1, corr.logodds, s=34, color=ours, zorder=3)
    ringed = [(x, y) for m, x, y in zip(corr.models, corr.top1, corr.logodds) if m in level]
    if ringed:
      ax.scatter(*zip(*ringed), s=110, facecolors="none", edgecolors=_NOT_DIFFERENT,
                 linewidths=1.2, zorder=4)
    if bars:
      ax.errorbar(corr.top1, corr.logodds, yerr=bars, fmt="none", ecolor=ours,
                  elinewidth=1, capsize=2, zorder=3)
  if corr.r is not None:
    slope, intercept = np.polyfit(corr.top1, corr.logodds, 1)
    xs = np.array([min(corr.top1), max(corr.top1)])
    ax.plot(xs, slope * xs + intercept, "--", color=ours, lw=1, zorder=2)
  ys = paper_y + list(corr.logodds) + list(corr.excluded_logodds)
  if bars:
    ys += [y + s * h for y, h in zip(corr.logodds, bars) for s in (-1, 1)]
  low, high = min(ys), max(ys)
  pad = max(0.08 * (high - low), 0.15)
  ax.set_ylim(low - pad, high + pad)
  ax.margins(x=0.08)
  left, right = ax.get_xlim()
  ax.set_xlim(left, right)
  for model, value in zip(corr.excluded, corr.excluded_logodds):
    color, marker, where = styles[model]
    ax.axhline(value, ls="--", lw=1.5, color=color, zorder=2)
    ax.plot([left + where * (right - left)], [value], ls="", marker=marker, ms=7, color=color,
            zorder=3)
  paper_r = f"paper, retrained: r = {regimes.get_regime_spec(regime).paper_correlation:.2f}"
  if regime in reference.PUBLIC_CHECKPOINT_R2:
    paper_r += (f"; v1, public checkpoints: r² = "
                f"{reference.PUBLIC_CHECKPOINT_R2[regime]:.2f}")
  if corr.r is not None:
    status = (f"ours: r = {corr.r:.2f} [{corr.ci_low:.2f}, {corr.ci_high:.2f}] over "
              f"{len(corr.models)} models, {len(corr.datasets)} dataset(s); {paper_r}")
  elif not corr.models and not corr.excluded:
    status = f"no results of ours in this regime; {paper_r}"
  elif len(corr.models) < correlation.MIN_MODELS_FOR_CORRELATION:
    unknown = f" ({len(corr.excluded)} without: dashed)" if corr.excluded else ""
    status = (f"ours: r needs {correlation.MIN_MODELS_FOR_CORRELATION} models with a known "
              f"ImageNet top-1, has {len(corr.models)}{unknown}; {paper_r}")
  else:
    status = f"ours: r not computed: {corr.reason}; {paper_r}"
  ax.set_title(regimes.REGIMES[regime].title + "\n" + textwrap.fill(status, 58),
               fontsize=9.5)
  ax.set_xlabel("ImageNet top-1 accuracy (%)", fontsize=9)
  ax.set_ylabel("average transfer accuracy (log-odds)", fontsize=9)
  ax.tick_params(labelsize=8.5)
  ax.grid(alpha=0.3)


def _label_points(ax, models, xs, ys) -> None:
  """Names next to points, each at the nearby spot that covers the fewest points and names
  placed before (inside the axes; nearer is better); a name set off gets a leader line."""
  if not models:
    return
  renderer = ax.figure.canvas.get_renderer()
  frame = ax.get_window_extent(renderer)
  points = ax.transData.transform(np.column_stack([xs, ys]))
  taken = []
  # (dx, dy) offsets in points, nearest first; the text grows away from its point.
  directions = ((6, 3), (-6, 3), (6, -5), (-6, -5), (0, 8), (0, -10), (10, 10), (-10, 10),
                (10, -12), (-10, -12))
  spots = [(dx * r, dy * r) for r in (1, 1.8, 2.8, 4) for dx, dy in directions]
  for i in np.argsort(xs):
    best = None
    for rank, (dx, dy) in enumerate(spots):
      text = _annotate(ax, models[i], (xs[i], ys[i]), dx, dy, leader=rank >= len(directions))
      box = _text_box(text, renderer).expanded(1.04, 1.15)
      text.remove()
      outside = not (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                     and box.y1 <= frame.y1)
      covered = sum(box.x0 - 3 <= px <= box.x1 + 3 and box.y0 - 3 <= py <= box.y1 + 3
                    for j, (px, py) in enumerate(points) if j != i)
      cost = (1000 * outside + 100 * sum(box.overlaps(b) for b in taken) + 10 * covered
              + rank)
      if best is None or cost < best[0]:
        best = (cost, dx, dy, rank, box)
      if cost == rank:  # Nothing covered: the nearest such spot.
        break
    _, dx, dy, rank, box = best
    _annotate(ax, models[i], (xs[i], ys[i]), dx, dy, leader=rank >= len(directions))
    taken.append(box)


def _text_box(annotation, renderer):
  """The window extent of an annotation's text alone (an Annotation's own includes its
  leader line)."""
  from matplotlib import text as text_lib  # pylint: disable=g-import-not-at-top
  annotation.update_positions(renderer)
  return text_lib.Text.get_window_extent(annotation, renderer)


def _annotate(ax, name, xy, dx, dy, *, leader):
  return ax.annotate(
      name, xy, xytext=(dx, dy), textcoords="offset points", fontsize=7.5, color="0.15",
      zorder=4, ha="left" if dx > 0 else "right" if dx < 0 else "center",
      va="bottom" if dy > 0 else "top",
      arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6, shrinkA=0, shrinkB=3)
      if leader else None)


_LOGIT_TICKS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)


def plot_figure2(panels: Sequence[analyses.Panel], path: str, *, columns: int = 4) -> None:
  """The paper's Figure 2: one panel per dataset, test accuracy (logit axis) vs ImageNet
  top-1, a color per regime, each with its least-squares line (fitted in log-odds) and 95%
  bootstrap band. Draws on an Agg canvas."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
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
    if not any(p.models for p in panels if p.dataset == dataset):
      # Nothing to place (no model has a known ImageNet top-1): a note, not an empty logit
      # axis, whose default range would print a tick label per decade of (0, 1).
      ax.set_title(dataset, fontsize=10)
      ax.text(0.5, 0.5, textwrap.fill("no model with a known ImageNet top-1 here; place "
                                      "models with --imagenet_top1=NAME=TOP1", 30),
              transform=ax.transAxes, ha="center", va="center", fontsize=8, color="tab:red")
      ax.set_xticks([])
      ax.set_yticks([])
      continue
    for panel in sorted((p for p in panels if p.dataset == dataset),
                        key=lambda p: list(regimes.REGIMES).index(p.regime)):
      color = regimes.get_regime_spec(panel.regime).colour
      if panel.models:
        ax.scatter(panel.top1, np.clip(panel.accuracy, correlation.LOGODDS_EPS,
                                       1 - correlation.LOGODDS_EPS),
                   s=22, color=color, marker=regimes.get_regime_spec(panel.regime).marker,
                   zorder=3, label=panel.regime)
      if panel.line is None:
        notes.append(f"{panel.regime}: {len(panel.models)} model(s), too few for a line")
        continue
      xs = np.array(panel.line.xs)
      ax.plot(xs, _sigmoid(panel.line.slope * xs + panel.line.intercept), color=color, lw=1)
      ax.fill_between(xs, _sigmoid(np.array(panel.line.band_low)),
                      _sigmoid(np.array(panel.line.band_high)), color=color, alpha=0.2,
                      lw=0)
    ax.set_yscale("logit")
    # Labels at fixed accuracies only: logit's own minor labels pile up near 0% and 100%.
    ax.yaxis.set_major_locator(ticker.FixedLocator(_LOGIT_TICKS))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{100 * v:.4g}%"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
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
