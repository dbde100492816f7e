"""The report: a table per regime, ours vs the paper, the correlations and Figures 1 and 2.

The numbers (average log-odds, Pearson r and its CI) come from `correlation`, the paper's
other statistics from `analyses` and `significance`, the figures from `plots`, the new
report sections from `sections`; this module orders and formats them as Markdown and writes
report.md, table_<regime>.csv, summary.csv, significance.csv, imagenet_top1.csv,
figure1.png and figure2.png (`write_report`). The sections of the paper's other experiments
(Figures 4, 6, 8, 9) follow, from `study_sections`; low-data cells, and a step-budget study's
budgets below its largest, appear only there, not in the main tables.

ImageNet top-1 is, by default, the published top-1 of the checkpoint each model loads
(`backbones.BackboneSpec.checkpoint_top1`): what our results measure. The comparison with the
paper keeps the paper's own values, labelled as such.
"""

import csv
import dataclasses
import os
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np

from tfhub_transfer import backbones
from tfhub_transfer import metrics
from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer.report import analyses
from tfhub_transfer.report import correlation
from tfhub_transfer.report import plots
from tfhub_transfer.report import reference
from tfhub_transfer.report import sections
from tfhub_transfer.report import significance
from tfhub_transfer.report import studies
from tfhub_transfer.report import study_sections
from tfhub_transfer.report import transferability_check
from tfhub_transfer.report import variants
from tfhub_transfer.results import merged
from tfhub_transfer.results import storage
from tfhub_transfer.results import store as store_lib
from tfhub_transfer.results.records import ResultRecord
from tfhub_transfer.results.workdir import Workdir

SUMMARY_FIELDS = ("regime", "model", "imagenet_top1", "n_datasets", "avg_logodds",
                  "n_common_datasets", "avg_logodds_common", "paper_avg_logodds",
                  "avg_logodds_common_ci95", "avg_logodds_common_se", "p_vs_best_average")
SIGNIFICANCE_FIELDS = ("regime", "dataset", "model", "test_metric", "best_model", "p_value",
                       "not_different_from_best", "note")
TOP1_FIELDS = ("model", "imagenet_top1", "source", "paper_imagenet_top1")


@dataclasses.dataclass(frozen=True)
class ReportPaths:
  """What `write_report` wrote, and the Markdown text of report.md."""
  out_dir: str
  report_md: str
  tables: dict[str, str]
  summary_csv: str
  figure_png: str
  markdown: str
  exports: tuple[str, ...] = ()
  figure2_png: str = ""
  significance_csv: str = ""
  top1_csv: str = ""
  transferability_png: Optional[str] = None
  study_files: tuple[str, ...] = ()

  def names(self) -> list[str]:
    """The files written, by name (tables as table_<regime>.csv)."""
    return ([os.path.basename(self.report_md), "table_<regime>.csv",
             os.path.basename(self.summary_csv), os.path.basename(self.figure_png)]
            + [os.path.basename(p) for p in (self.figure2_png, self.significance_csv,
                                             self.top1_csv) if p]
            + [os.path.basename(p) for p in self.study_files + self.exports]
            + ([os.path.basename(self.transferability_png)] if self.transferability_png
               else []))


@dataclasses.dataclass(frozen=True)
class _Report:
  cells: dict[tuple[str, str, str], correlation.Cell]
  top1: dict[str, float]
  correlations: dict[str, correlation.Correlation]
  failed: list[dict[str, Any]]
  n_ok: int
  samples: int
  seed: int
  top1_sources: dict[str, str]
  error_bars: dict[str, analyses.ErrorBars]
  significance: dict[tuple[str, str], significance.DatasetSignificance]
  average_significance: dict[str, analyses.AverageSignificance]
  by_size: dict[str, dict[str, correlation.Correlation]]
  sizes: dict[str, tuple[int, str]]
  finetune_wins: analyses.FinetuneWins
  unconverged: list[dict[str, Any]]
  permutation_samples: int
  weights: dict[str, set]
  everything: tuple[dict[str, Any], ...] = ()
  superseded: tuple[dict[str, Any], ...] = ()


# What `write_report` reads results (and prediction files and scores) from, besides records.
_STORES = (store_lib.ResultsStore, merged.WorkdirResults)


def _load(store_or_records) -> list[ResultRecord]:
  if isinstance(store_or_records, _STORES):
    return store_or_records.records()
  if isinstance(store_or_records, (str, os.PathLike)):
    raise TypeError(f"Got the path {store_or_records!r}; pass "
                    f"merged.read_workdir({store_or_records!r}) or a list of records.")
  return [ResultRecord.from_json(r) for r in store_or_records]


def imagenet_top1_used(overrides: Optional[Mapping[str, float]] = None
                       ) -> tuple[dict[str, float], dict[str, str]]:
  """The ImageNet top-1 (%) the report pairs with each model, and where each comes from.

  By default the published top-1 of the checkpoint a zoo model loads; `overrides`
  (`--imagenet_top1`) replace or add values.
  """
  top1, sources = {}, {}
  for name, spec in backbones.BACKBONES.items():
    if spec.checkpoint_top1 is not None:
      top1[name], sources[name] = spec.checkpoint_top1, spec.checkpoint_top1_source
  for name, value in (overrides or {}).items():
    top1[name], sources[name] = float(value), "--imagenet_top1"
  return top1, sources


def _build(display: variants.Display, imagenet_top1, samples, seed, store_dir,
           permutation_samples) -> _Report:
  everything = display.current
  loaded = variants.label_protocol_variants(studies.main_table_records(everything))
  cells = correlation.average_cells(loaded)
  top1, sources = imagenet_top1_used(imagenet_top1)
  correlations = {regime: correlation.correlate(cells, regime, top1, samples=samples,
                                                seed=seed) for regime in regimes.REGIMES}
  sizes = analyses.train_sizes(loaded, {d: p.train_size
                                        for d, p in reference.paper_datasets().items()})
  return _Report(
      cells, top1, correlations, [r for r in everything if r["status"] == "failed"],
      sum(r["status"] == "ok" for r in everything), samples, seed, top1_sources=sources,
      error_bars={regime: analyses.error_bars(cells, corr)
                  for regime, corr in correlations.items()},
      significance=significance.per_dataset(loaded, cells, store_dir,
                                            samples=permutation_samples, seed=seed),
      average_significance={regime: analyses.average_significance(cells, corr)
                            for regime, corr in correlations.items()},
      by_size={regime: analyses.correlation_by_size(cells, regime, top1, sizes,
                                                    samples=samples, seed=seed)
               for regime in regimes.REGIMES},
      sizes=sizes, finetune_wins=analyses.finetune_beats_logreg(cells),
      unconverged=variants.unconverged(loaded), permutation_samples=permutation_samples,
      weights={regime: correlation.weights_used(loaded, regime, corr.models + corr.excluded)
               for regime, corr in correlations.items()},
      everything=tuple(everything), superseded=tuple(display.superseded))


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
  for regime in regimes.REGIMES:
    corr = report.correlations[regime]
    common = dict(zip(corr.models, corr.logodds))
    rows = correlation.cells_by_model(report.cells, regime)
    for model in _ordered_models(report, rows):
      out.append({
          "regime": regime, "model": model, "imagenet_top1": report.top1.get(model),
          "n_datasets": len(rows[model]),
          "avg_logodds": float(np.mean(correlation.logodds(
              [c.mean for c in rows[model].values()]))),
          "n_common_datasets": len(corr.datasets) if model in common else None,
          "avg_logodds_common": common.get(model),
          "paper_avg_logodds": (networks[model].avg_logodds(regime)
                                if model in networks else None),
          "avg_logodds_common_ci95": dict(zip(report.error_bars[regime].models,
                                              report.error_bars[regime].half_widths)
                                          ).get(model),
          "avg_logodds_common_se": dict(zip(report.error_bars[regime].models,
                                            report.error_bars[regime].standard_errors)
                                        ).get(model),
          "p_vs_best_average": report.average_significance[regime].p_values.get(model)})
  return out


def _fmt(value, spec=".2f") -> str:
  return "–" if value is None else format(value, spec)


def _markdown(report) -> str:
  eps = correlation.LOGODDS_EPS
  lines = ["# Transfer results", "",
           f"{report.n_ok} successful and {len(report.failed)} failed runs. Cells are test "
           f"accuracy (%) in each dataset's metric; `(k)` marks a mean over k seeds. ImageNet "
           f"top-1 is the published top-1 of the checkpoint each model loads (see "
           f"[ImageNet top-1 used](#imagenet-top-1-used)), not the paper's retrained "
           f"networks'. Average log-odds = mean over the model's datasets of log(p/(1-p)), p "
           f"clipped to [{eps:g}, 1-{eps:g}]; `(n)` = number of datasets."]
  ok = [r for r in report.everything if r["status"] == "ok"]
  low_data = sum(studies.is_low_data(r) for r in ok)
  if low_data:
    lines.append(f"- {low_data} low-data cells (`--examples_per_class`) are not in these "
                 f"tables: see \"Accuracy vs examples per class\" below.")
  smaller = len(studies.smaller_budgets([r for r in ok if not studies.is_low_data(r)]))
  if smaller:
    lines.append(f"- {smaller} cells of step-budget studies below their largest budget are "
                 f"not in these tables (each study shows here at its largest budget): see "
                 f"\"Accuracy vs training steps\" below.")
  paper = reference.paper_datasets()
  for d in _ordered_datasets({d for (_, _, d) in report.cells}):
    used = "/".join(sorted({c.metric for (_, _, cd), c in report.cells.items() if cd == d}))
    if "/" in used:
      lines.append(f"- Note: {d} mixes metrics ({used}); its cells are not comparable.")
    elif d in paper and paper[d].metric != used:
      lines.append(f"- Note: {d} is in {used}; the paper reports {paper[d].metric}.")
  summary = {(r["regime"], r["model"]): r for r in _summary_rows(report)}
  for regime in regimes.REGIMES:
    lines += ["", f"## {regimes.REGIMES[regime].title} (`{regime}`)", ""]
    lines += _regime_section(report, regime, summary)
  lines += ["", "## Ours vs the paper (average log-odds)", ""] + _comparison(report, summary)
  lines += ["", "## The paper's statistics", ""] + sections.statistics_lines(
      report.error_bars, report.by_size, report.sizes, report.finetune_wins,
      report.correlations, _ordered_datasets({d for (_, _, d) in report.cells}),
      samples=report.samples, seed=report.seed)
  lines += ["", "## ImageNet top-1 used", ""] + sections.top1_lines(
      _top1_rows(report, {m for (_, m, _) in report.cells}))
  if report.failed:
    lines += ["", f"## Failed runs ({len(report.failed)})", ""]
    for r in report.failed[:20]:
      error = (r.get("error") or "no error message").strip().splitlines() or [""]
      lines.append(f"- {r['model']} / {r['dataset']} / {r['regime']} / seed {r['seed']}: "
                   f"{error[-1][:160]}")
    if len(report.failed) > 20:
      lines.append(f"- ... and {len(report.failed) - 20} more.")
  if report.superseded:
    lines += ["", f"## Superseded results ({len(report.superseded)})", ""]
    lines += variants.superseded_lines(report.superseded)
  return "\n".join(lines) + "\n"


def _regime_section(report, regime, summary) -> list[str]:
  """The models x datasets table of one regime, and its correlation."""
  rows = correlation.cells_by_model(report.cells, regime)
  if not rows:
    return ["No results in this regime."]
  datasets = _ordered_datasets({d for row in rows.values() for d in row})
  used = {d: c.metric for row in rows.values() for d, c in row.items()}
  lines = ["Metrics: " + ", ".join(f"{d} {metrics.METRIC_TITLES.get(used[d], used[d])}"
                                   for d in datasets) + ".", "",
           "| model | ImageNet top-1 | " + " | ".join(datasets) + " | avg log-odds |",
           "|---" * (len(datasets) + 3) + "|"]
  tested = {d: report.significance.get((regime, d)) for d in datasets}
  unconverged = {(r["model"], r["dataset"]) for r in report.unconverged
                 if r["regime"] == regime}
  referenced = False
  for model in _ordered_models(report, rows):
    cells = []
    for d in datasets:
      c = rows[model].get(d)
      text = (_fmt(100 * c.mean, ".1f") + ("†" if (model, d) in unconverged else "")
              + (f" ({c.n_seeds})" if c.n_seeds > 1 else "")) if c else "–"
      cells.append(f"**{text}**" if c and tested[d] and model in tested[d].not_different
                   else text)
    s = summary[(regime, model)]
    average = f"{s['avg_logodds']:.2f}"
    if model in report.average_significance[regime].not_different:
      average = f"**{average}**"
    lines.append(f"| {model} | {_fmt(report.top1.get(model))} | " + " | ".join(cells)
                 + f" | {average} ({s['n_datasets']}) |")
    if not referenced and sections.is_reference_network(model):
      lines.append(sections.reference_row(regime, datasets))
      referenced = True
  lines += ["", sections.significance_note(list(tested.values()),
                                           samples=report.permutation_samples,
                                           seed=report.seed),
            "", sections.average_significance_note(report.average_significance[regime])]
  if referenced:
    lines += ["", sections.reference_note(sections.eval_preprocessings(
        report.everything, regime=regime, reference_only=True))]
  if unconverged:
    lines += [""] + sections.convergence_lines(
        [r for r in report.unconverged if r["regime"] == regime])
  return lines + ["", _correlation_line(report.correlations[regime], report)]


def _correlation_line(corr: correlation.Correlation, report) -> str:
  head = "Pearson r (ImageNet top-1 vs average log-odds)"
  paper = sections.correlation_references(corr.regime, report.weights[corr.regime])
  if corr.r is None:
    text = f"{head}: not computed, {corr.reason}. {paper}"
  else:
    text = (f"{head}: {corr.r:.2f}, 95% CI [{corr.ci_low:.2f}, {corr.ci_high:.2f}] "
            f"(bootstrap over models, {report.samples} resamples, seed {report.seed}); "
            f"{len(corr.models)} models on the {len(corr.datasets)} dataset(s) all of them "
            f"have. {paper}")
  if corr.excluded:
    text += (f" Excluded, ImageNet top-1 unknown: {', '.join(corr.excluded)} "
             f"(give them with --imagenet_top1=NAME=TOP1,... or imagenet_top1={{name: top1}} "
             f"to include them).")
  return text


def _comparison(report, summary) -> list[str]:
  """Our average log-odds next to the paper's, per model and regime."""
  if not summary:
    return ["No results yet."]
  networks = reference.paper_networks()
  lines = [f"Paper values are {reference.APPROXIMATE_NOTE}, each over its 12 datasets; ours "
           f"are over `(n)` datasets, so they compare only where n = 12. ImageNet top-1: "
           f"ours is the published top-1 of the checkpoint we load; the paper's is that of "
           f"its own retrained network, the x of its Figure 1.", "",
           "| model | ImageNet top-1 (ours) | ImageNet top-1 (paper) | " + " | ".join(
               f"{regime} ours | {regime} paper" for regime in regimes.REGIMES) + " |",
           "|---" * (3 + 2 * len(regimes.REGIMES)) + "|"]
  for model in _ordered_models(report, {m for (_, m) in summary}):
    parts = []
    for regime in regimes.REGIMES:
      s = summary.get((regime, model))
      parts += [f"{s['avg_logodds']:.2f} ({s['n_datasets']})" if s else "–",
                _fmt(networks[model].avg_logodds(regime) if model in networks else None)]
    paper_top1 = networks[model].imagenet_top1 if model in networks else None
    lines.append(f"| {model} | {_fmt(report.top1.get(model))} | {_fmt(paper_top1)} | "
                 + " | ".join(parts) + " |")
  return lines


def _top1_rows(report, models) -> list[list]:
  """imagenet_top1.csv: each model's top-1 as used, its source, and the paper's value."""
  networks = reference.paper_networks()
  return [[m, report.top1.get(m), report.top1_sources.get(m, ""),
           networks[m].imagenet_top1 if m in networks else None]
          for m in _ordered_models(report, models)]


def write_report(store_or_records: Union[merged.ResultsReader, Iterable[Mapping[str, Any]]],
                 out_dir: str, *, imagenet_top1: Optional[Mapping[str, float]] = None,
                 bootstrap_samples: int = correlation.BOOTSTRAP_SAMPLES,
                 seed: int = 0, store_dir: Optional[str] = None,
                 permutation_samples: int = significance.PERMUTATION_SAMPLES,
                 score_records: Optional[Iterable[dict[str, Any]]] = None,
                 tsne: tuple[str, ...] = (),
                 convergence_threshold: float = protocol.CONVERGENCE_THRESHOLD,
                 features_dir: Optional[str] = None) -> ReportPaths:
  """Writes report.md, the tables, summary.csv, significance.csv, imagenet_top1.csv,
  figure1.png and figure2.png to `out_dir`, and the study sections' tables and figures where
  the store has such results (`study_sections`).

  Where transferability scores exist, report.md gains their check against the measured
  results (`transferability_check`) and transferability.png its plot.

  Args:
    store_or_records: a workdir's results (`merged.read_workdir`), a `ResultsStore`, or
      records (`ResultRecord`s or their JSON forms); only read.
    out_dir: output directory (created if missing).
    imagenet_top1: ImageNet top-1 (%) of models without a published checkpoint top-1, or
      overrides of it (`--imagenet_top1`).
    bootstrap_samples: resamples of the correlation's confidence interval (and Figure 2's
      bands).
    seed: seed of the bootstrap and of the permutation tests.
    store_dir: where the records' prediction files are (default: the store's directory).
    permutation_samples: permutations of each significance test (>= 10,000).
    score_records: `--mode=score` rows (default: the store's, if a store is given).
    tsne: `MODEL/DATASET` pairs (or `all`) to draw t-SNE maps of (Figure 4); empty: none.
    convergence_threshold: Figure 8's convergence rule (`studies.convergence`).
    features_dir: where feature-cache entries are looked for if a recorded path is gone.

  Returns:
    The paths written and the Markdown text.
  """
  if store_dir is None and isinstance(store_or_records, _STORES):
    store_dir = store_or_records.directory
  if score_records is None and isinstance(store_or_records, _STORES):
    score_records = store_or_records.score_records()
  display = variants.for_display(_load(store_or_records), list(score_records or ()))
  report = _build(display, imagenet_top1, bootstrap_samples, seed, store_dir,
                  permutation_samples)
  os.makedirs(out_dir, exist_ok=True)
  studied = study_sections.write_sections(
      list(report.everything), out_dir, convergence_threshold=convergence_threshold,
      tsne=tsne, features_dir=features_dir)
  paths = ReportPaths(out_dir, os.path.join(out_dir, "report.md"),
                      {r: os.path.join(out_dir, f"table_{r}.csv") for r in regimes.REGIMES},
                      os.path.join(out_dir, "summary.csv"),
                      os.path.join(out_dir, "figure1.png"),
                      _markdown(report) + "\n![Figure 1](figure1.png)\n"
                      "\n![Figure 2](figure2.png)\n" + studied.markdown,
                      figure2_png=os.path.join(out_dir, "figure2.png"),
                      significance_csv=os.path.join(out_dir, "significance.csv"),
                      top1_csv=os.path.join(out_dir, "imagenet_top1.csv"),
                      study_files=studied.files)
  for regime, path in paths.tables.items():
    rows = correlation.cells_by_model(report.cells, regime)
    datasets = _ordered_datasets({d for row in rows.values() for d in row})
    header = ["model", "imagenet_top1"] + [f"{d}{s}" for d in datasets for s in ("", "_seeds")]
    table = [[m, report.top1.get(m)] + [v for d in datasets for v in (
        (100 * rows[m][d].mean, rows[m][d].n_seeds) if d in rows[m] else (None, None))]
             for m in _ordered_models(report, rows)]
    _write_csv(path, header, table)
  _write_csv(paths.summary_csv, SUMMARY_FIELDS,
             [[r[k] for k in SUMMARY_FIELDS] for r in _summary_rows(report)])
  _write_csv(paths.significance_csv, SIGNIFICANCE_FIELDS, significance.significance_rows(
      report.significance.values(), {k: 100 * c.mean for k, c in report.cells.items()}))
  _write_csv(paths.top1_csv, TOP1_FIELDS,
             _top1_rows(report, {m for (_, m, _) in report.cells}))
  plots.plot_figure1(report.correlations, paths.figure_png, error_bars=report.error_bars,
                     significance=report.average_significance)
  plots.plot_figure2(analyses.figure2_panels(report.cells, report.top1, seed=seed,
                                             samples=bootstrap_samples), paths.figure2_png)
  if display.scores:
    text, png = transferability_check.write_section(report.cells, display.scores, out_dir)
    paths = dataclasses.replace(paths, markdown=paths.markdown + text, transferability_png=png)
  with storage.atomic_open(paths.report_md) as f:
    f.write(paths.markdown)
  return paths


def _write_csv(path, header, rows):
  # Each file is written beside its old version and renamed over it when complete: a full
  # disk leaves the previous file, not a truncated one.
  with storage.atomic_open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])


def write_workdir_report(workdir: str, *,
                         imagenet_top1: Optional[Mapping[str, float]] = None,
                         out_dir: Optional[str] = None,
                         tsne: tuple[str, ...] = (),
                         convergence_threshold: float = protocol.CONVERGENCE_THRESHOLD
                         ) -> ReportPaths:
  """`--mode=report`: the report of every results store of a workdir, read read-only, in
  `out_dir` (default `<workdir>/report/`), plus every stored record in full (results.csv,
  results.json) for other tools, written last so a failed report keeps the previous ones.
  `tfhub_transfer.write_report`.

  Args:
    workdir: the `--workdir` of the runs (every host's store in it is read).
    imagenet_top1: ImageNet top-1 (%) of models without a published checkpoint top-1, or
      overrides of it, by the name the report shows (`--imagenet_top1`).
    out_dir: where to write (default `<workdir>/report/`).
    tsne: `MODEL/DATASET` pairs (or `all`) to draw t-SNE maps of (Figure 4).
    convergence_threshold: Figure 8's convergence rule (`protocol.CONVERGENCE_THRESHOLD`).

  Returns:
    The paths written and the report's Markdown text (`ReportPaths.markdown`).

  Raises:
    UsageError: a `tsne` pair has no cached features.
    StoreError: the workdir does not exist, a store cannot be read, or the report cannot be
      written (the message names the file and what to do; the stores are never written).
  """
  workdir_results = merged.read_workdir(workdir)
  out_dir = out_dir or Workdir(workdir).report
  exports = (os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "results.json"))
  try:
    paths = write_report(workdir_results, out_dir, imagenet_top1=imagenet_top1, tsne=tsne,
                         convergence_threshold=convergence_threshold,
                         features_dir=Workdir(workdir).features)
    workdir_results.export_csv(exports[0])
    workdir_results.export_json(exports[1])
  except OSError as e:
    raise storage.StoreError(
        e.filename or out_dir, f"cannot write the report ({e.strerror or e})",
        f"Free space or fix permissions there, or pass --report_dir elsewhere, and run "
        f"--mode=report again. The results stores were only read; files already in "
        f"{out_dir} are kept until their new versions are complete") from e
  return dataclasses.replace(paths, exports=exports)
