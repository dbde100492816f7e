"""The report's sections for the paper's other experiments: Markdown, CSV tables, figures.

`write_sections` adds, after the main tables, a section per study the store has results for:
per-dataset bars (Figure 6, from the main tables' cells), accuracy vs examples per class
(Figure 9, low-data cells), accuracy vs training steps with the speed-up of fine-tuning
(Figure 8, two or more budgets of a finetune/scratch cell), and, when asked for, t-SNE maps
of cached features (Figure 4). Numbers come from `studies` and `feature_maps`, figures from
`study_plots`.
"""

import csv
import dataclasses
import math
import os
from typing import Any, Optional, Sequence

from tfhub_transfer import protocol
from tfhub_transfer.data import crops
from tfhub_transfer.report import feature_maps
from tfhub_transfer.report import reference
from tfhub_transfer.report import sections
from tfhub_transfer.report import studies
from tfhub_transfer.report import study_plots


@dataclasses.dataclass(frozen=True)
class Sections:
  """What `write_sections` wrote: the Markdown to append and the files, by path."""
  markdown: str
  files: tuple[str, ...]


def _pct(value: Optional[float], spec: str = ".1f") -> str:
  return "–" if value is None else format(100 * value, spec)


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
  return path


def write_sections(loaded: list[dict[str, Any]], out_dir: str, *,
                   convergence_threshold: float = protocol.CONVERGENCE_THRESHOLD,
                   tsne: Sequence[str] = (), features_dir: Optional[str] = None) -> Sections:
  """Writes the study sections' tables and figures to `out_dir`.

  Args:
    loaded: every checked record of the store (low-data cells included).
    out_dir: the report directory.
    convergence_threshold: Figure 8's rule (see `studies.convergence`).
    tsne: `MODEL/DATASET` pairs (or `all`) to map (Figure 4); empty: none.
    features_dir: where cache entries are looked for when a recorded path is gone.

  Returns:
    The Markdown of the sections and the files written.

  Raises:
    ValueError: a bad threshold, or a requested t-SNE pair without cached features.
  """
  protocol.check_convergence_threshold(convergence_threshold)
  maps = {}
  if tsne:
    maps = feature_maps.select(
        feature_maps.cached_test_features(loaded, features_dir=features_dir), tsne)
  lines, files = [], []
  for section in (_per_dataset(loaded, out_dir), _low_data(loaded, out_dir),
                  _budgets(loaded, out_dir, convergence_threshold),
                  _feature_maps(maps, out_dir, requested=bool(tsne))):
    if section:
      lines += [""] + section[0]
      files += section[1]
  return Sections("\n".join(lines) + ("\n" if lines else ""), tuple(files))


def _per_dataset(loaded, out_dir):
  bars = studies.per_dataset_bars(studies.main_table_records(loaded))
  if not bars:
    return None
  present = [r for r in ("logreg", "finetune", "scratch") if any(b.regime == r for b in bars)]
  by_key = {(b.dataset, b.regime): b for b in bars}
  simclr = studies.simclr_resnet50()
  lines = ["## Per-dataset accuracy by regime (Figure 6)", "",
           "Per dataset and regime: the mean over the main tables' models of their test "
           "accuracy (%, each model's mean over seeds), ± the standard deviation over models, "
           "[min, max] and `(n)` models; a row the main tables label with its settings counts "
           f"as a model. SimCLR ResNet-50: {reference.SIMCLR_SOURCE}; "
           f"{reference.SIMCLR_CAVEAT}. Evaluation preprocessing: SimCLR's "
           f"{crops.EVAL_PREPROCESSINGS['simclr'].describe()}; ours "
           f"{sections.eval_preprocessings(studies.main_table_records(loaded))}.", "",
           "| dataset | " + " | ".join(present) + " | SimCLR ResNet-50 ("
           + " / ".join(present) + ") |", "|---" * (len(present) + 2) + "|"]
  for dataset in studies.ordered_datasets({b.dataset for b in bars}):
    cells = [(f"{_pct(b.mean)} ± {_pct(b.std)} [{_pct(b.low)}, {_pct(b.high)}] ({b.n_models})"
              if (b := by_key.get((dataset, r))) else "–") for r in present]
    refs = " / ".join(_pct(simclr.get((dataset, r))) for r in present)
    lines.append(f"| {dataset} | " + " | ".join(cells) + f" | {refs} |")
  figure = os.path.join(out_dir, "figure6.png")
  study_plots.plot_per_dataset(bars, figure)
  table = _write_csv(os.path.join(out_dir, "per_dataset.csv"),
                     ("dataset", "regime", "metric", "mean", "std", "min", "max", "n_models",
                      "simclr_resnet50"),
                     [(b.dataset, b.regime, b.metric, 100 * b.mean, 100 * b.std, 100 * b.low,
                       100 * b.high, b.n_models,
                       None if b.reference is None else 100 * b.reference) for b in bars])
  return lines + ["", "![Figure 6](figure6.png)"], [table, figure]


def _points_table(points, x_name, x_format):
  lines = [f"| dataset | model | regime | {x_name} | seeds | accuracy (%) | ± s.e. | "
           "train images |", "|---" * 8 + "|"]
  for p in points:
    lines.append(f"| {p.dataset} | {p.model} | {p.regime} | {x_format(p.x)} | {p.n} | "
                 f"{_pct(p.mean, '.2f')} | {_pct(p.stderr, '.2f')} | "
                 f"{'–' if p.train_size is None else f'{p.train_size:,.0f}'} |")
  return lines


def _points_csv(path, points, x_name):
  return _write_csv(path, ("dataset", "model", "regime", x_name, "seeds", "metric",
                           "accuracy", "stderr", "train_images"),
                    [(p.dataset, p.model, p.regime, p.x, p.n, p.metric, 100 * p.mean,
                      None if p.stderr is None else 100 * p.stderr, p.train_size)
                     for p in points])


def _low_data(loaded, out_dir):
  points = studies.low_data_points(loaded)
  if not points:
    return None
  n_cells = sum(r["status"] == "ok" and studies.is_low_data(r) for r in loaded)
  lines = ["## Accuracy vs examples per class (Figure 9)", "",
           f"{n_cells} low-data cells (`--examples_per_class=K`), not in the tables above. A "
           "cell trains on K images per class of the training part (fewer where a class has "
           "fewer; multi-label: every class in at least K picked images), a random subset "
           "drawn with the cell's seed, so each seed is an independent subset. "
           "Hyperparameters are chosen on the whole validation split; the final model is "
           "trained on the subset alone (no refit on validation) and tested once on the "
           "whole test split. Accuracy: mean over seeds ± standard error (std / sqrt(n)), "
           "the figure's error bars as in the paper's (\"standard error over 3 subsets\"); "
           "K = all is the same line's full-data cell.", ""]
  lines += _paper_k_coverage(points)
  lines += _points_table(points, "examples/class", lambda x: str(x) if x else "all")
  figure = os.path.join(out_dir, "figure9.png")
  study_plots.plot_low_data(points, figure)
  table = _points_csv(os.path.join(out_dir, "low_data.csv"), points, "examples_per_class")
  return lines + ["", "![Figure 9](figure9.png)"], [table, figure]


def _paper_k_coverage(points):
  """Per dataset of the paper's Figure 9, its K values and those of them measured."""
  shown = [d for d in studies.ordered_datasets({p.dataset for p in points})
           if d in protocol.PAPER_LOW_DATA_MAX_EXAMPLES]
  if not shown:
    return []
  lines = ["The paper's K per dataset (1, 2, 4, ... up to the maximum on its Figure 9; "
           "`--examples_per_class=paper`) and how many of them each line has:", "",
           "| dataset | paper's K | model (regime): paper's K measured, seeds |",
           "|---|---|---|"]
  for dataset in shown:
    paper_k = protocol.paper_examples_per_class(dataset)
    lines_of = sorted({(p.model, p.regime) for p in points if p.dataset == dataset})
    have = []
    for model, regime in lines_of:
      measured = [p for p in points if (p.dataset, p.model, p.regime) == (dataset, model, regime)
                  and p.x in paper_k]
      seeds = sorted({p.n for p in measured})
      have.append(f"{model} ({regime}): {len(measured)}/{len(paper_k)}"
                  + (f", {'/'.join(map(str, seeds))} seeds" if seeds else ""))
    lines.append(f"| {dataset} | 1 … {paper_k[-1]:,} ({len(paper_k)}) | {'; '.join(have)} |")
  return lines + [""]


def _budgets(loaded, out_dir, threshold):
  points = studies.budget_points(loaded)
  if not points:
    return None
  converged = studies.convergence(points, threshold=threshold)
  speedups = studies.speedups(converged)
  lines = ["## Accuracy vs training steps (Figure 8)", "",
           "Each step budget is its own cell with its own hyperparameter search; the tables "
           "above show each curve at its largest budget. Accuracy: mean over seeds ± standard "
           f"error. A curve has converged at the smallest budget whose odds p/(1-p) reach "
           f"{threshold:g} of its best budget's odds (log-odds within "
           f"{-math.log(threshold):.3f} of the best; `--convergence_threshold`). Speed-up = "
           "scratch's converged budget / fine-tuning's, for curves of one network (its weights "
           "aside) on one dataset; budgets are discrete, so it is known only to the spacing "
           "of the budgets tried.", ""]
  lines += _points_table(points, "steps", lambda x: f"{x:,}")
  lines += ["", "| dataset | model | regime | best budget | best (%) | converged at | "
            "there (%) |", "|---" * 7 + "|"]
  lines += [f"| {c.dataset} | {c.model} | {c.regime} | {c.best_steps:,} | "
            f"{_pct(c.best_mean, '.2f')} | {c.steps:,} | {_pct(c.mean, '.2f')} |"
            for c in converged]
  lines += ["", "| dataset | network | finetune converged | scratch converged | speed-up |",
            "|---" * 5 + "|"]
  lines += [f"| {s.dataset} | {s.network} | {_steps(s.finetune_steps)} | "
            f"{_steps(s.scratch_steps)} | "
            f"{'–' if s.ratio is None else f'{s.ratio:.3g}x'} |" for s in speedups]
  average_lines, averages = _convergence_average(converged, threshold)
  lines += average_lines
  figure = os.path.join(out_dir, "figure8.png")
  study_plots.plot_budgets(points, converged, speedups, figure)
  table = _points_csv(os.path.join(out_dir, "budgets.csv"), points, "train_steps")
  summary = _write_csv(
      os.path.join(out_dir, "convergence.csv"),
      ("dataset", "model", "regime", "best_steps", "best_accuracy", "converged_steps",
       "converged_accuracy", "threshold"),
      [(c.dataset, c.model, c.regime, c.best_steps, 100 * c.best_mean, c.steps, 100 * c.mean,
        threshold) for c in converged])
  average = _write_csv(
      os.path.join(out_dir, "convergence_average.csv"),
      ("network", "datasets", "finetune_steps", "scratch_steps", "ratio_steps",
       "finetune_epochs", "scratch_epochs", "ratio_epochs", "threshold"),
      [(a.network, " ".join(a.datasets), a.steps["finetune"], a.steps["scratch"],
        a.ratio_steps, a.epochs and a.epochs["finetune"], a.epochs and a.epochs["scratch"],
        a.ratio_epochs, threshold) for a in averages])
  return lines + ["", "![Figure 8](figure8.png)"], [table, summary, average, figure]


def _convergence_average(converged, threshold):
  """Figure 8's headline: per network, the geometric means over datasets, beside the
  paper's."""
  averages = studies.convergence_averages(converged)
  paper = reference.PAPER_CONVERGENCE
  lines = ["", "**Over datasets (the paper's headline).** Per network, over the datasets "
           "where both regimes have a curve: the geometric mean of each regime's converged "
           "budget, in steps and in epochs (steps x batch / the final model's training "
           "images), and scratch's mean / fine-tuning's. The paper (Inception v4, 12 "
           f"datasets): fine-tuning {paper['finetune']['steps']:,} steps "
           f"({paper['finetune']['epochs']} epochs), random init "
           f"{paper['scratch']['steps']:,} steps ({paper['scratch']['epochs']} epochs), about "
           f"{reference.PAPER_CONVERGENCE_RATIO}x. Threshold: odds reaching {threshold:g} x the "
           f"best budget's, {studies.THRESHOLD_RULE}.", ""]
  if not averages:
    return lines + ["No network has both a finetune and a scratch curve yet."], averages
  lines += ["| network | datasets | finetune steps | scratch steps | ratio | finetune epochs "
            "| scratch epochs | ratio |", "|---" * 8 + "|"]
  for a in averages:
    epochs = ([f"{a.epochs['finetune']:.3g}", f"{a.epochs['scratch']:.3g}",
               f"{a.ratio_epochs:.3g}x"] if a.epochs else ["–", "–", "–"])
    lines.append(f"| {a.network} | {len(a.datasets)}: {', '.join(a.datasets)} | "
                 f"{a.steps['finetune']:,.0f} | {a.steps['scratch']:,.0f} | "
                 f"{a.ratio_steps:.3g}x | " + " | ".join(epochs) + " |")
  ratio = paper["scratch"]["steps"] / paper["finetune"]["steps"]
  ratio_epochs = paper["scratch"]["epochs"] / paper["finetune"]["epochs"]
  lines.append(f"| paper: inception_v4 | 12 | {paper['finetune']['steps']:,} | "
               f"{paper['scratch']['steps']:,} | {ratio:.3g}x | {paper['finetune']['epochs']} "
               f"| {paper['scratch']['epochs']} | {ratio_epochs:.3g}x |")
  return lines, averages


def _steps(steps):
  return "–" if steps is None else f"{steps:,}"


def _feature_maps(maps, out_dir, *, requested):
  if not requested:
    return None
  lines = ["## Feature maps (Figure 4)", ""]
  if not maps:
    return lines + ["No cached test features yet: run `logreg` cells first."], []
  lines += [f"t-SNE of each model's penultimate test features (up to "
            f"{feature_maps.MAX_IMAGES:,} random test images), coloured by class. Class "
            f"separation: leave-one-out {feature_maps.KNN_K}-NN accuracy in feature space "
            "(Euclidean, majority vote) on the same images: the share of images whose "
            f"{feature_maps.KNN_K} nearest other images mostly share their class.", ""]
  files, rows = [], []
  for i, (name, pair) in enumerate(sorted(maps.items()), 1):
    fmap = feature_maps.make_feature_map(pair)
    filename = f"figure4_{i}.png"
    study_plots.plot_feature_map(fmap, os.path.join(out_dir, filename))
    files.append(os.path.join(out_dir, filename))
    rows.append((fmap.model, fmap.dataset, len(fmap.labels), fmap.total_images,
                 100 * fmap.knn_accuracy, filename, fmap.path))
    lines += [f"- {name}: {feature_maps.KNN_K}-NN accuracy {100 * fmap.knn_accuracy:.1f}% "
              f"({len(fmap.labels):,} of {fmap.total_images:,} test images)", "",
              f"  ![Figure 4: {name}]({filename})", ""]
  table = _write_csv(os.path.join(out_dir, "feature_maps.csv"),
                     ("model", "dataset", "images", "test_images", "knn_accuracy", "figure",
                      "cache"),
                     rows)
  return lines[:-1], [table] + files
