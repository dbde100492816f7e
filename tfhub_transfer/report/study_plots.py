"""Figures of the paper's other experiments (numbers from `studies` and `feature_maps`).

  plot_low_data     Figure 9: accuracy vs examples per class, a panel per dataset;
  plot_budgets      Figure 8: accuracy vs training steps, a panel per (model, dataset);
  plot_per_dataset  Figure 6: per-dataset bars of each regime over models;
  plot_feature_map  Figure 4: a t-SNE map coloured by class.

Each draws on its own Agg canvas, leaving pyplot's backend alone.
"""

import collections
import math
import textwrap

import numpy as np

from tfhub_transfer import regimes
from tfhub_transfer.report import feature_maps
from tfhub_transfer.report import studies

# A regime's colour, line style and marker are its `RegimeSpec`'s, as in every figure; lines
# of several models in one regime are told apart by these markers.
_MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "*")


def _figure(panels: int, *, columns: int = 3, size=(4.6, 3.6)):
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  columns = min(columns, max(panels, 1))
  rows = max(1, math.ceil(panels / columns))
  fig = figure.Figure(figsize=(size[0] * columns, size[1] * rows), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
  for ax in axes[panels:]:
    ax.set_visible(False)
  return fig, axes


def _wrap(text, width=50):
  """Wrapped at `width` columns; long names without spaces are broken too."""
  return textwrap.fill(text, width)


def _legend_below(ax):
  """The legend under the axes, so that it never hides a curve."""
  ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=1)


def _log_ticks(ax, values):
  """A log x axis labelled at the values measured (at most about 12 of them)."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  ax.set_xscale("log")
  step = max(1, math.ceil(len(values) / 12))
  ax.set_xticks(values[::step], [f"{v:,}" for v in values[::step]], fontsize=7)
  ax.xaxis.set_minor_locator(ticker.NullLocator())


def plot_low_data(points: list[studies.Point], path: str) -> None:
  """Figure 9: test accuracy vs examples per class (log x), one panel per dataset, one line
  per (model, regime): mean over subsets with standard-error bars, in the regime's colour and
  line style, a marker per model; the full-data cell, where stored, is a thin dotted
  horizontal line of the same colour."""
  by_dataset = collections.defaultdict(lambda: collections.defaultdict(list))
  for p in points:
    by_dataset[p.dataset][(p.model, p.regime)].append(p)
  fig, axes = _figure(len(by_dataset), size=(5.0, 5.4))
  models = sorted({p.model for p in points})
  markers = {m: _MODEL_MARKERS[i % len(_MODEL_MARKERS)] for i, m in enumerate(models)}
  for ax, (dataset, lines) in zip(axes, sorted(by_dataset.items())):
    for (model, regime), line in sorted(lines.items()):
      subset = sorted((p for p in line if p.x), key=lambda p: p.x)
      spec = regimes.get_regime_spec(regime)
      label = _wrap(f"{model} ({regime})")
      colour = spec.colour
      ax.errorbar([p.x for p in subset], [100 * p.mean for p in subset],
                  yerr=[100 * (p.stderr or 0.0) for p in subset], color=colour,
                  ls=spec.line_style, marker=markers[model], ms=4, capsize=3, label=label)
      for p in line:
        if not p.x:
          ax.axhline(100 * p.mean, color=colour, ls=":", lw=1, label=f"{label}, all data")
    _log_ticks(ax, sorted({p.x for line in lines.values() for p in line if p.x}))
    subsets = sorted({p.n for line in lines.values() for p in line if p.x})
    ax.set_title(f"{dataset}: accuracy vs examples per class\nerror bars: standard error "
                 f"over {'/'.join(map(str, subsets))} subsets", fontsize=9)
    ax.set_xlabel("training examples per class (log scale)")
    ax.set_ylabel(f"test {next(iter(lines.values()))[0].metric} (%)")
    ax.grid(alpha=0.3, which="both")
    _legend_below(ax)
  fig.savefig(path, dpi=110)


def plot_budgets(points: list[studies.Point], converged: list[studies.Convergence],
                 speedups: list[studies.Speedup], path: str) -> None:
  """Figure 8: test accuracy vs training steps (log x), one panel per (network, dataset), a
  line per regime (and model, where weights files tell them apart); a ring marks each
  curve's converged budget."""
  panels = collections.defaultdict(list)
  for p in points:
    panels[(p.network, p.dataset)].append(p)
  done = {(c.dataset, c.model, c.regime): c for c in converged}
  ratios = {(s.dataset, s.network): s.ratio for s in speedups}
  fig, axes = _figure(len(panels), size=(5.0, 5.0))
  for ax, ((network, dataset), line_points) in zip(axes, sorted(panels.items())):
    for regime in regimes.REGIMES:
      for model in sorted({p.model for p in line_points if p.regime == regime}):
        line = sorted((p for p in line_points if (p.regime, p.model) == (regime, model)),
                      key=lambda p: p.x)
        spec = regimes.get_regime_spec(regime)
        colour, style, marker = spec.colour, spec.line_style, spec.marker
        label = regime if model == network else _wrap(f"{regime}: {model}")
        ax.errorbar([p.x for p in line], [100 * p.mean for p in line],
                    yerr=[100 * (p.stderr or 0.0) for p in line], color=colour, ls=style,
                    marker=marker, ms=4, capsize=3, label=label)
        c = done.get((dataset, model, regime))
        if c:
          ax.plot([c.steps], [100 * c.mean], marker="o", ms=12, mfc="none", color=colour,
                  label=f"{regime} converged: {c.steps:,} steps")
    ratio = ratios.get((dataset, network))
    title = _wrap(f"{network} on {dataset}: accuracy vs training steps", 55)
    if ratio is not None:
      title += (f"\nfine-tuning converges {ratio:.3g}x sooner" if ratio >= 1 else
                f"\nscratch converges {1 / ratio:.3g}x sooner")
    ax.set_title(title, fontsize=9)
    _log_ticks(ax, sorted({p.x for p in line_points}))
    ax.set_xlabel("training steps (log scale)")
    ax.set_ylabel(f"test {line_points[0].metric} (%)")
    ax.grid(alpha=0.3, which="both")
    _legend_below(ax)
  fig.savefig(path, dpi=110)


def plot_per_dataset(bars: list[studies.Bar], path: str) -> None:
  """Figure 6: per dataset, each regime's mean accuracy over models (bars), the range over
  models (whiskers: min to max), and SimCLR's ResNet-50 (black diamonds)."""
  datasets = studies.ordered_datasets({b.dataset for b in bars})
  present = [r for r in regimes.REGIMES if any(b.regime == r for b in bars)]
  fig, axes = _figure(1, columns=1, size=(max(6.0, 1.1 * len(datasets) * len(present)), 4.4))
  ax = axes[0]
  width = 0.8 / max(len(present), 1)
  by_key = {(b.dataset, b.regime): b for b in bars}
  reference_shown = False
  for i, regime in enumerate(present):
    xs, heights, low, high = [], [], [], []
    for j, dataset in enumerate(datasets):
      b = by_key.get((dataset, regime))
      if b is None:
        continue
      x = j + (i - (len(present) - 1) / 2) * width
      xs.append(x)
      heights.append(100 * b.mean)
      low.append(100 * (b.mean - b.low))
      high.append(100 * (b.high - b.mean))
      ax.annotate(f"n={b.n_models}", (x, 100 * b.high), xytext=(0, 2), fontsize=6,
                  textcoords="offset points", ha="center")
      if b.reference is not None:
        ax.plot([x], [100 * b.reference], "D", color="black", ms=5,
                label=None if reference_shown else "SimCLR ResNet-50 (reference)")
        reference_shown = True
    ax.bar(xs, heights, width, yerr=[low, high], capsize=3,
           color=regimes.get_regime_spec(regime).colour,
           label=f"{regime}: mean over models (whiskers: min-max)")
  ax.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right", fontsize=8)
  ax.set_ylim(0, 105)
  ax.set_ylabel("test accuracy in each dataset's metric (%)")
  ax.set_title("Per-dataset accuracy by regime, over models", fontsize=10)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.savefig(path, dpi=110)


def plot_feature_map(fmap: feature_maps.FeatureMap, path: str) -> None:
  """Figure 4: the t-SNE map of one model's test features, one colour per class."""
  fig, axes = _figure(1, columns=1, size=(5.6, 5.2))
  ax = axes[0]
  import matplotlib  # pylint: disable=g-import-not-at-top
  classes = np.unique(fmap.labels)
  # One colour per class by index (a listed palette up to 20 classes), drawn class by class
  # so that the legend shows the very colours of the points.
  palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
  if len(classes) > 20:
    palette = matplotlib.colormaps["hsv"].resampled(len(classes))
  for index, label in enumerate(classes):
    at = fmap.labels == label
    ax.scatter(fmap.embedding[at, 0], fmap.embedding[at, 1], color=palette(index), s=6,
               alpha=0.8, linewidths=0, label=str(label))
  if len(classes) <= 20:
    ax.legend(title="class", fontsize=6, title_fontsize=7, loc="upper right", markerscale=2,
              ncols=2 if len(classes) > 10 else 1)
  ax.set_title(textwrap.fill(
      f"t-SNE of {fmap.model} features, {fmap.dataset} test ({len(fmap.labels):,} of "
      f"{fmap.total_images:,} images); {feature_maps.KNN_K}-NN accuracy "
      f"{100 * fmap.knn_accuracy:.1f}%", 60), fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.savefig(path, dpi=110)
