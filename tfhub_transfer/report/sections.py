"""The report's Markdown for the paper's statistics, the ImageNet top-1 used, the per-dataset
reference rows, the significance marks and the convergence warnings (`document` places
them). Each statistic that could not be computed says why ("too few results: ...").
"""

import re
from typing import Any, Iterable, Mapping, Optional, Sequence

from tfhub_transfer import regimes
from tfhub_transfer.data import crops
from tfhub_transfer.report import analyses
from tfhub_transfer.report import correlation
from tfhub_transfer.report import reference
from tfhub_transfer.report import significance

REFERENCE_NETWORK = "resnet_50"
REFERENCE_LABEL = "SimCLR 2020 ResNet-50 (reference)"

MOREY_FORMULA = (
    "Error bars in Figure 1: within-subject standard errors (Cousineau 2005 with Morey's "
    "2008 correction), as the paper's Figure 2 (right) draws (\"Error bars are standard "
    "error\"), datasets as subjects and models as conditions. With y_md the log-odds of "
    "model m on dataset d (M models x N datasets, those every model has): "
    "z_md = y_md - mean_m'(y_m'd) + mean_m'd'(y_m'd'); se_m = sqrt(M / (M - 1)) x "
    "sd_d(z_md) / sqrt(N). The 95% confidence interval is t_{0.975, N-1} x se_m (both in "
    "summary.csv).")


def is_reference_network(model: str) -> bool:
  """Whether a model label is a ResNet-50 (the registry's, at any weights or resolution)."""
  return re.split(r"[@{ \[]", model, maxsplit=1)[0] == REFERENCE_NETWORK


def reference_row(regime: str, datasets: Sequence[str]) -> str:
  """A table row of SimCLR's per-dataset ResNet-50 numbers for the table's datasets."""
  cells = reference.simclr_reference()
  values = [f"{cells[key].value_percent:.1f}" if (key := (REFERENCE_NETWORK, regime, d))
            in cells else "–" for d in datasets]
  return f"| *{REFERENCE_LABEL}* | – | " + " | ".join(f"*{v}*" if v != "–" else v
                                                    for v in values) + " | – |"


def eval_preprocessings(records: Iterable[Mapping[str, Any]], *, regime: Optional[str] = None,
                        reference_only: bool = False) -> str:
  """How the evaluation images of `records` (ok; of `regime`; of ResNet-50 only if
  `reference_only`) were resized and cropped (`crops.EvalPreprocessing.describe`), each
  convention once. Records older than the option used the default."""
  names = sorted({(r.get("config") or {}).get("eval_preprocessing",
                                              crops.DEFAULT_EVAL_PREPROCESSING)
                  for r in records if r.get("status") == "ok"
                  and (regime is None or r.get("regime") == regime)
                  and (not reference_only or is_reference_network(r.get("model", "")))})
  return "; ".join(crops.EVAL_PREPROCESSINGS[n].describe() if n in crops.EVAL_PREPROCESSINGS
                   else n for n in names) or "none"


def reference_note(ours: str) -> str:
  """The reference rows' source and caveat, and each side's evaluation preprocessing
  (`ours`: `eval_preprocessings` of our ResNet-50 rows)."""
  return (f"*{REFERENCE_LABEL}*: {reference.SIMCLR_SOURCE}. Caveat: "
          f"{reference.SIMCLR_CAVEAT}. Not our result; not in any statistic. Evaluation "
          f"preprocessing: SimCLR's {crops.EVAL_PREPROCESSINGS['simclr'].describe()}; our "
          f"{REFERENCE_NETWORK} rows' {ours} (`--eval_preprocessing`).")


def significance_note(tested: Iterable[Optional[significance.DatasetSignificance]], *,
                      samples: int, seed: int) -> str:
  """Says what the bold cells mean, and where nothing could be tested and why."""
  text = (f"**Bold**: the best model on each dataset and every model not significantly "
          f"different from it (paired permutation test of per-example test predictions, "
          f"two-sided p > {significance.ALPHA}, {samples:,} permutations, seed {seed}; "
          f"VOC2007 on accuracy, not mAP; run-to-run variance ignored).")
  notes = []
  for s in tested:
    if s is None:
      continue
    if s.reason:
      notes.append(f"{s.dataset}: {s.reason}")
    for model, why in sorted(s.untested.items()):
      if not s.reason:
        notes.append(f"{s.dataset} / {model}: {why}")
  if notes:
    text += " Not tested: " + "; ".join(notes) + "."
  return text


def average_significance_note(tested: analyses.AverageSignificance) -> str:
  """Says what the bold average means, with each model's p, or why nothing was tested."""
  head = ("**Bold average**: the best model on the average log-odds and every model not "
          "significantly below it (paired t-test of per-dataset log-odds over the datasets "
          f"all models have, two-sided p > {analyses.ALPHA}; the green points of Figure 1, "
          "as the paper's Figure 2, right)")
  if tested.reason:
    return f"{head}: not tested, {tested.reason}."
  others = ", ".join(f"{m} p = {p:.3g}" for m, p in tested.p_values.items()
                     if m != tested.best)
  return f"{head}. Best: {tested.best}; {others}."


def correlation_references(regime: str, weights: set) -> str:
  """The paper's correlations to set beside ours, each labelled with the checkpoints it
  used, and which one a run with `weights` (`correlation.weights_used`) compares with."""
  retrained = (f"{reference.RETRAINED_SOURCE}: r = "
               f"{regimes.get_regime_spec(regime).paper_correlation:.2f}")
  if regime not in reference.PUBLIC_CHECKPOINT_R2:
    return (f"Reference: {retrained}. Random init loads no checkpoint, so this is the "
            f"comparable reference (its x axis is the retrained networks' top-1).")
  r2 = reference.PUBLIC_CHECKPOINT_R2[regime]
  public = f"{reference.PUBLIC_CHECKPOINT_SOURCE}: r² = {r2:.2f} (r = {r2 ** 0.5:.2f})"
  if not weights:
    which = ""
  elif weights <= {None, "imagenet"}:
    which = ("Ours pairs public ImageNet checkpoints with their published top-1: compare "
             "with the public-checkpoint reference; the retrained one needs networks "
             "trained under one setup.")
  elif "random" in weights:
    which = "Some of ours use random weights: neither reference applies to them."
  else:
    which = ("Ours loads weights files: the retrained reference applies only if they were "
             "trained under one common setup, as the paper's; otherwise the "
             "public-checkpoint one.")
  return f"References: {retrained}; {public}." + (f" {which}" if which else "")


def convergence_lines(unconverged: Sequence[Mapping[str, Any]]) -> list[str]:
  """`†` marks: logreg cells whose L-BFGS fit did not converge, with the iterations run."""
  lines = ["†: L-BFGS did not converge (largest gradient entry above tol within max_iter) "
           "at a fit the result rests on:"]
  for r in unconverged:
    conv = r["convergence"]
    fits = [f"{name} fit ({fit['iterations']} iterations, max |gradient| "
            f"{fit['max_abs_grad']:.2g})" for name, fit in conv.items()
            if isinstance(fit, dict) and not fit.get("converged", True)]
    lines.append(f"- {r['model']} / {r['dataset']} / seed {r['seed']}: " + ", ".join(fits)
                 + f" (tol {conv.get('tol')}, max_iter {conv.get('max_iter')}).")
  return lines


def _r_text(corr: correlation.Correlation) -> str:
  if corr.r is None:
    return corr.reason
  n = len(corr.datasets)
  return (f"{corr.r:.2f} [{corr.ci_low:.2f}, {corr.ci_high:.2f}] ({len(corr.models)} models, "
          f"{n} dataset{'s' if n != 1 else ''})")


def statistics_lines(error_bars: Mapping[str, analyses.ErrorBars],
                     by_size: Mapping[str, Mapping[str, correlation.Correlation]],
                     sizes: Mapping[str, tuple[int, str]], wins: analyses.FinetuneWins,
                     correlations: Mapping[str, correlation.Correlation],
                     datasets: Sequence[str], *, samples: int, seed: int) -> list[str]:
  """Figure 1's error bars, r by dataset size, fine-tuning vs logreg, and Figure 2."""
  lines = [MOREY_FORMULA, ""]
  for regime, bars in error_bars.items():
    if bars.reason:
      lines.append(f"- `{regime}`: no error bars, {bars.reason}.")
    else:
      widths = ", ".join(f"{m} ±{se:.3f} (95% CI ±{w:.2f})" for m, se, w
                         in zip(bars.models, bars.standard_errors, bars.half_widths))
      lines.append(f"- `{regime}` ({len(bars.models)} models x "
                   f"{len(correlations[regime].datasets)} datasets): {widths}.")
  lines += ["", f"Pearson r of ImageNet top-1 vs average log-odds by dataset size (the "
                f"paper's appendix): datasets with fewer than {analyses.SMALL_DATASET:,} "
                f"training images (train + validation) vs the rest; 95% bootstrap CI over "
                f"models ({samples} resamples, seed {seed}).", "",
            "| regime | small datasets | large datasets |", "|---|---|---|"]
  for regime, parts in by_size.items():
    lines.append(f"| `{regime}` | {_r_text(parts['small'])} | {_r_text(parts['large'])} |")
  if datasets:
    lines += ["", "Training images per dataset (recorded: the largest train + validation "
                  "size run; paper: its Table 1): " + ", ".join(
                      f"{d} {sizes[d][0]:,} ({sizes[d][1]})" for d in datasets if d in sizes)
              + "."]
  paper_wins, paper_pairs = analyses.PAPER_FINETUNE_WINS
  if wins.reason:
    lines += ["", f"Fine-tuning vs logistic regression: {wins.reason} (paper: fine-tuning "
                  f"better on {paper_wins} of {paper_pairs})."]
  else:
    lines += ["", f"Fine-tuning beats logistic regression (higher test metric) on "
                  f"{wins.wins} of {wins.pairs} (model, dataset) pairs with both results "
                  f"(paper: {paper_wins} of {paper_pairs})."]
    if wins.losses:
      shown = ", ".join(f"{m} / {d}" for m, d in wins.losses[:10])
      more = f" and {len(wins.losses) - 10} more" if len(wins.losses) > 10 else ""
      lines.append(f"Not better: {shown}{more}.")
  lines += ["", f"Figure 2 (figure2.png): per dataset, test accuracy vs ImageNet top-1 in each "
                f"regime (logit axis), with the least-squares line fitted in log-odds and its "
                f"95% percentile-bootstrap band over models ({samples} resamples, seed "
                f"{seed}); a panel with fewer than {analyses.MIN_MODELS_FOR_LINE} models with "
                f"a known top-1 has no line."]
  return lines


def top1_lines(rows: Sequence[Sequence[Any]]) -> list[str]:
  """The ImageNet top-1 each model is paired with, its source, and the paper's value."""
  if not rows:
    return ["No results yet."]
  lines = ["The correlations and Figures 1-2 use these values (also in imagenet_top1.csv); "
           "the paper's own values are shown only beside the paper's numbers.", "",
           "| model | ImageNet top-1 used | source | paper's top-1 |", "|---|---|---|---|"]
  for model, top1, source, paper in rows:
    used = "–" if top1 is None else f"{top1:.2f}"
    source = source or ("unknown: excluded from the correlations; pass "
                        "--imagenet_top1=NAME=TOP1")
    lines.append(f"| {model} | {used} | {source} | "
                 f"{'–' if paper is None else f'{paper:.2f}'} |")
  return lines
