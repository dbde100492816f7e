"""How well each transferability score predicted the measured transfer (the report's check).

For each dataset and regime, the models that have both a stored score (`--mode=score`, seeds
averaged) and a measured test metric (seeds averaged, `correlation.average_cells`) are
compared: Kendall's weighted tau (`scipy.stats.weightedtau`, its default hyperbolic weights
over both rankings, as the estimator papers report it) between the score and the test
metric, and Pearson r between the score and the test metric's log-odds (the report's
scale). With fewer than `correlation.MIN_MODELS_FOR_CORRELATION` models the check says so.
"""

import collections
import dataclasses
import os
import textwrap
from typing import Any, Iterable, Mapping, Optional

import numpy as np
from scipy import stats

from tfhub_transfer import regimes
from tfhub_transfer import transferability
from tfhub_transfer.report import correlation

MAX_FIGURE_ROWS = 8


@dataclasses.dataclass(frozen=True)
class Agreement:
  """One estimator's agreement with the measured metric in one (dataset, regime).

  `tau`/`r` are None and `reason` says why when they cannot be computed.
  """
  estimator: str
  scores: tuple[Optional[float], ...]
  tau: Optional[float]
  r: Optional[float]
  reason: Optional[str]


@dataclasses.dataclass(frozen=True)
class Group:
  """The models of one (dataset, regime) with both a score and a measured test metric."""
  dataset: str
  regime: str
  metric: str
  models: tuple[str, ...]
  measured: tuple[float, ...]  # Test metric (fraction), seeds averaged.
  agreements: tuple[Agreement, ...]  # Empty when there are too few models.

  @property
  def checked(self) -> bool:
    return len(self.models) >= correlation.MIN_MODELS_FOR_CORRELATION


def average_scores(score_records: Iterable[Mapping[str, Any]]
                   ) -> dict[tuple[str, str], dict[str, Optional[float]]]:
  """(model, dataset) -> estimator -> score averaged over seeds.

  Where a (model, dataset) was scored under several score protocols, the most recently
  created protocol's rows are used, so settings are never mixed.
  """
  groups = collections.defaultdict(list)
  for row in score_records:
    groups[(row["model"], row["dataset"])].append(row)
  out = {}
  for key, rows in groups.items():
    latest = max(rows, key=lambda r: r.get("created_at") or "")["protocol"]
    rows = [r for r in rows if r["protocol"] == latest]
    names = sorted({n for r in rows for n in r["scores"]})
    out[key] = {n: (float(np.mean(values)) if (values := [
        r["scores"][n] for r in rows if r["scores"].get(n) is not None]) else None)
                for n in names}
  return out


def _agreement(name: str, scores: list[Optional[float]], measured: np.ndarray) -> Agreement:
  values = tuple(scores)
  if any(v is None for v in scores):
    return Agreement(name, values, None, None, "not computed for every model (refused, e.g. "
                                               "multi-label, or not stored)")
  x = np.asarray(scores, dtype=np.float64)
  if np.ptp(x) == 0 or np.ptp(measured) == 0:
    return Agreement(name, values, None, None, "the score or the measured metric is the same "
                                               "for every model")
  tau = float(stats.weightedtau(x, measured)[0])
  r = float(np.corrcoef(x, correlation.logodds(measured))[0, 1])
  return Agreement(name, values, tau, r, None)


def check(cells: Mapping[tuple[str, str, str], correlation.Cell],
          score_records: Iterable[Mapping[str, Any]]) -> list[Group]:
  """Every (dataset, regime) with at least one model both scored and measured.

  Args:
    cells: measured results, as `correlation.average_cells` returns them.
    score_records: stored score rows (`ResultsStore.score_records`).

  Returns:
    The groups, by dataset then regime (registry order); `Group.checked` tells which have
    enough models for the correlations.
  """
  scores = average_scores(score_records)
  names = [n for n in transferability.ESTIMATORS
           if any(n in s for s in scores.values())]
  out = []
  for dataset in sorted({d for (_, d) in scores}):
    for regime in regimes.REGIMES:
      models = sorted(m for (r, m, d) in cells
                      if r == regime and d == dataset and (m, dataset) in scores)
      if not models:
        continue
      measured = np.array([cells[(regime, m, dataset)].mean for m in models])
      group = Group(dataset, regime, cells[(regime, models[0], dataset)].metric,
                    tuple(models), tuple(measured.tolist()), ())
      if group.checked:
        group = dataclasses.replace(group, agreements=tuple(
            _agreement(n, [scores[(m, dataset)].get(n) for m in models], measured)
            for n in names))
      out.append(group)
  return out


def _fmt(value: Optional[float]) -> str:
  return "–" if value is None else f"{value:.2f}"


def markdown(groups: list[Group], *, num_scored: int) -> list[str]:
  """The report section's lines."""
  lines = ["## Transferability scores vs measured transfer", "",
           f"{num_scored} (model, dataset) pairs scored by `--mode=score` (train + validation "
           f"features; higher predicts better transfer). For each dataset and regime, the "
           f"models with both a score and a measured test metric (both averaged over seeds): "
           f"Kendall's weighted tau between score and test metric (`scipy.stats.weightedtau`, "
           f"hyperbolic weights, as the estimator papers report it; 1 = same ranking, "
           f"top models weighing most) and Pearson r between score and the test metric's "
           f"log-odds. Needs at least {correlation.MIN_MODELS_FOR_CORRELATION} models.", ""]
  if not groups:
    return lines + ["No scored (model, dataset) pair has a measured result yet: run the same "
                    "models on the same datasets (`--mode=run`), then report again."]
  checked = [g for g in groups if g.checked]
  if checked:
    names = [a.estimator for a in checked[0].agreements]
    titles = [transferability.ESTIMATORS[n].title if n in transferability.ESTIMATORS else n
              for n in names]
    lines += ["| dataset | regime | models | " + " | ".join(
        f"{t} τw | {t} r" for t in titles) + " |", "|---" * (3 + 2 * len(names)) + "|"]
    for g in checked:
      cells = [f"{_fmt(a.tau)} | {_fmt(a.r)}" for a in g.agreements]
      lines.append(f"| {g.dataset} | {g.regime} | {len(g.models)} | " + " | ".join(cells) + " |")
    notes = [f"- {g.dataset} / {g.regime} / {a.estimator}: {a.reason}."
             for g in checked for a in g.agreements if a.reason]
    lines += ([""] + notes if notes else [])
  too_few = [g for g in groups if not g.checked]
  if too_few:
    lines += [""] + [f"- {g.dataset} / {g.regime}: too few models to check, {len(g.models)} "
                     f"with both a score and a result (need at least "
                     f"{correlation.MIN_MODELS_FOR_CORRELATION})." for g in too_few]
  for g in checked:
    names = [a.estimator for a in g.agreements]
    lines += ["", f"{g.dataset} / {g.regime}, test {g.metric} (`#`: the point's number in "
                  f"the figure):", "",
              "| # | model | test (%) | " + " | ".join(names) + " |",
              "|---" * (3 + len(names)) + "|"]
    for i, model in enumerate(g.models):
      lines.append(f"| {i + 1} | {model} | {100 * g.measured[i]:.1f} | " + " | ".join(
          "–" if a.scores[i] is None else f"{a.scores[i]:.4g}" for a in g.agreements) + " |")
  return lines


def plot(groups: list[Group], path: str) -> bool:
  """Score vs measured test metric, a row per checked (dataset, regime), a column per score.

  Returns:
    Whether a figure was written (False: no group has enough models).
  """
  checked = [g for g in groups if g.checked][:MAX_FIGURE_ROWS]
  if not checked:
    return False
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  columns = max(len(g.agreements) for g in checked)
  fig = figure.Figure(figsize=(4.4 * columns, 3.8 * len(checked)), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.subplots(len(checked), columns, squeeze=False)
  for row, g in zip(axes, checked):
    for ax, a in zip(row, g.agreements):
      # Points are numbered as the models in the report's table of this group.
      points = [(s, 100 * m, str(i)) for i, (s, m) in enumerate(zip(a.scores, g.measured), 1)
                if s is not None]
      if points:
        xs, ys, labels = zip(*points)
        ax.scatter(xs, ys, s=28, color=regimes.get_regime_spec(g.regime).colour, zorder=3)
        for x, y, label in zip(xs, ys, labels):
          ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
      title = (f"τw = {a.tau:.2f}, r = {a.r:.2f} ({len(g.models)} models)" if a.reason is None
               else textwrap.fill(a.reason, 50))
      ax.set_title(f"{g.dataset} / {g.regime}: {a.estimator}\n{title}", fontsize=9)
      ax.set_xlabel(f"{a.estimator} score (trainval features)")
      ax.set_ylabel(f"measured test {g.metric} (%)")
      ax.margins(x=0.25, y=0.12)
      ax.grid(alpha=0.3)
    for ax in row[len(g.agreements):]:
      ax.set_visible(False)
  fig.savefig(path, dpi=100)
  return True


def write_section(cells: Mapping[tuple[str, str, str], correlation.Cell],
                  score_records: list[Mapping[str, Any]],
                  out_dir: str) -> tuple[str, Optional[str]]:
  """The report's section (Markdown, to append) and `<out_dir>/transferability.png`.

  Returns:
    (the section's text, the figure's path or None when no group could be checked).
  """
  groups = check(cells, score_records)
  png = os.path.join(out_dir, "transferability.png")
  drawn = plot(groups, png)
  text = "\n" + "\n".join(markdown(groups, num_scored=len(score_records))) + "\n"
  if drawn:
    text += "\n![Transferability check](transferability.png)\n"
  elif os.path.exists(png):
    os.remove(png)  # An earlier report's figure would no longer match the text.
  return text, png if drawn else None
