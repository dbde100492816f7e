"""`--mode=score`: transferability scores of (model, dataset, seed) cells from cached features.

A cell's features are the `logreg` regime's (frozen backbone, the same weights rule and the
same feature-cache entries, `runners.extract_cell_features`), so scoring a cell whose
features are cached builds no backbone, and a later `logreg` run reuses what scoring
extracted. The scored split is **trainval** (train + validation): the labelled data the
protocol's final model is fitted on, as the estimators' papers score the target training
set; the test split is never read. One row per cell goes to the results store's `scores`
table (`ResultsStore.put_score`), keyed by (model, dataset, seed, score protocol).
"""

import dataclasses
import datetime
import hashlib
import json
import platform
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from absl import logging

from tfhub_transfer import experiment
from tfhub_transfer import faults
from tfhub_transfer import regimes
from tfhub_transfer import runners
from tfhub_transfer import sweep
from tfhub_transfer import transferability
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import merged
from tfhub_transfer.results import store as store_lib
from tfhub_transfer.results.records import ScoreKey
from tfhub_transfer.results.records import ScoreRecord

if TYPE_CHECKING:
  import pandas as pd

# Bump when a change makes the same settings give different scores.
SCORE_VERSION = 2  # 2: LogME in float64 sums, multi-label -1 as a negative.
SCORED_SPLITS = ("train", "val")  # trainval, read from the train and val cache entries.
FEATURE_REGIME = "logreg"  # Whose features (weights rule, cache entries) are scored.


def score_settings(config: ExperimentConfig) -> dict[str, Any]:
  """What a stored score depends on besides (model, dataset, seed)."""
  return {"score_version": SCORE_VERSION, "max_examples": config.max_examples,
          "split": "trainval",
          "estimators": {name: dict(spec.settings)
                         for name, spec in transferability.ESTIMATORS.items()}}


def score_protocol(config: ExperimentConfig) -> str:
  """A short id of `score_settings`: the last field of a score's key."""
  blob = json.dumps(score_settings(config), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:10]


def score_key(config: ExperimentConfig) -> ScoreKey:
  """A score row's key: the cell's content identities, seed and score protocol id."""
  key = config.cell
  return ScoreKey(key.model, key.dataset, config.seed, score_protocol(config))


@dataclasses.dataclass(frozen=True)
class ScoreResult:
  """The stored row of one scored cell."""
  record: ScoreRecord

  def summary_line(self) -> str:
    return self.record.summary_line()


def score_cell(config: ExperimentConfig, *,
               store: Optional[store_lib.ResultsStore] = None) -> ScoreResult:
  """Extracts (or reuses) the cell's trainval features, scores them, stores the row.

  Args:
    config: the cell; its regime must be `logreg` (whose features are scored).
    store: the results store (default: this host's, `ResultsStore.for_workdir`).

  Returns:
    The stored row.

  Raises:
    ValueError: an unknown model or dataset, or a regime other than logreg.
  """
  if config.regime != FEATURE_REGIME:
    raise ValueError(f"Scores are computed on the {FEATURE_REGIME} regime's frozen features; "
                     f"got regime={config.regime!r}. Drop --regime with --mode=score.")
  start = time.perf_counter()
  store = store or store_lib.ResultsStore.for_workdir(config.workdir)
  ctx = runners.load_cell(config)  # As run_experiment: the same splits, the same random init.
  dataset, splits = ctx.dataset, ctx.splits
  cached = runners.extract_cell_features(ctx, splits=SCORED_SPLITS)
  data = transferability.LabelledFeatures(
      [cached[s].features for s in SCORED_SPLITS], [cached[s].labels for s in SCORED_SPLITS],
      num_classes=dataset.num_classes, multi_label=dataset.multi_label)
  scores = transferability.score_features(data)
  record = {
      **score_key(config)._asdict(), "model_label": config.identity.model_label,
      "dataset_label": config.identity.dataset_label,
      "score_settings": score_settings(config), "scores": scores.values,
      "skipped": scores.skipped, "split": "trainval",
      "sizes": {**scores.sizes, "splits": {s: splits.sizes[s] for s in SCORED_SPLITS}},
      "timings": {"extract_s": sum(c.seconds for c in cached.values()), **scores.seconds,
                  "total_s": time.perf_counter() - start},
      "weights": ctx.weights, "feature_cache": {s: {"path": c.path, "hit": c.from_cache}
                                            for s, c in cached.items()},
      "config": config.to_dict(), "versions": experiment.library_versions(),
      "host": platform.node(),
      "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
  record = ScoreRecord.from_json(record)
  store.put_score(record)
  return ScoreResult(record)


@dataclasses.dataclass(frozen=True)
class ScoreSummary:
  done: int
  skipped: int
  failures: tuple[str, ...]

  @property
  def cells(self) -> int:
    return self.done + self.skipped + len(self.failures)

  def line(self) -> str:
    return (f"score: {self.done} cells scored, {self.skipped} already scored, "
            f"{len(self.failures)} failed")


class ScoringFailed(RuntimeError):
  """Cells of a `score` grid failed (the others' rows are stored); the message lists them."""


def score(base: ExperimentConfig, grid: Optional[sweep.Grid] = None) -> "pd.DataFrame":
  """Transferability scores of a grid's cells from their frozen (cached) features.

  Each (model, dataset, seed) of the grid is scored and stored in `base.workdir` (as
  `--mode=score`), or read back where any host stored it under the same score protocol.

  Args:
    base: the settings of every cell (workdir, batch size, weights, ...); its cell is the
      grid when `grid` is None.
    grid: the models x datasets x seeds to score; its regimes must be empty or `logreg`
      (scores read the frozen features of the regime that keeps its backbone frozen).

  Returns:
    The grid's scores as `tfhub_transfer.load_scores` returns them (a pandas DataFrame, one
    row per cell, one column per estimator), in the grid's order.

  Raises:
    ValueError: the grid names a regime that trains its backbone.
    ScoringFailed: a cell failed (the others are stored; a rerun retries only the failed).
  """
  from tfhub_transfer import frame  # pylint: disable=g-import-not-at-top
  grid = grid or sweep.Grid.of_cell(base)
  grid = dataclasses.replace(grid, regimes=regimes.score_regimes(grid.regimes))
  base = dataclasses.replace(base, regime=grid.regimes[0])
  scored = []
  summary = run_score_grid(base, grid, on_result=lambda result: scored.append(result.record))
  if summary.failures:
    raise ScoringFailed(f"{len(summary.failures)} of {summary.cells} cell(s) failed to "
                        f"score: {'; '.join(summary.failures)}")
  return frame.scores_frame(scored)


def run_score_grid(base: ExperimentConfig, grid, *,
                   on_result: Optional[Callable[[ScoreResult], Any]] = None) -> ScoreSummary:
  """Scores this shard of `grid` (a `sweep.Grid`; its regimes must be `logreg`).

  A cell already stored under the same score protocol, by any host of the workdir, is not
  scored again (`on_result` gets its stored row); a failing cell is logged and skipped
  (nothing is stored for it), and the next run retries it. Rows go to this host's store.
  """
  store = store_lib.ResultsStore.for_workdir(base.workdir)
  stored_rows = merged.read_workdir(base.workdir)
  done, skipped, failures = 0, 0, []
  for config in grid.cells(base):
    stored = stored_rows.get_score(*score_key(config))
    if stored is not None:
      skipped += 1
      if on_result is not None:
        on_result(ScoreResult(stored))
      continue
    try:
      result = score_cell(config, store=store)
    except faults.MachineFault:  # A full disk: the next cell would meet it too.
      raise
    except Exception as e:  # pylint: disable=broad-except  # One cell's failure; go on.
      faults.raise_if_interrupted(e)
      label = (f"{config.identity.model_label} / {config.identity.dataset_label} / "
               f"seed {config.seed}")
      failures.append(f"{label}: {type(e).__name__}: {e}")
      logging.error("Scoring %s failed (the grid goes on): %s", label, e)
      continue
    done += 1
    if on_result is not None:
      on_result(result)
  return ScoreSummary(done, skipped, tuple(failures))
