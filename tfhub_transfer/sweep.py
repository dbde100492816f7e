"""Grids of cells (models x datasets x regimes x seeds), resumable and shardable.

A cell whose record is stored with status `ok` (under the same protocol settings) is skipped, so a sweep killed with `kill -9`
and started again loses at most the cell in flight. A failing cell (missing data, NaN, out of
memory) is stored with its error and the sweep goes on; failed cells are retried on the next
run. `shard=(i, n)` runs every n-th cell starting at i, so n processes or hosts with the same
workdir (or with their own, merged later) split a grid between them.
"""

import dataclasses
import itertools
import time
from typing import Callable, Iterable, Optional, Sequence

from absl import logging

from tfhub_transfer import experiment
from tfhub_transfer import results
from tfhub_transfer.config import ExperimentConfig


def parse_shard(text: str) -> tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n."""
  try:
    index, count = (int(part) for part in text.split("/"))
  except ValueError:
    index, count = -1, 0
  if not 0 <= index < count:
    raise ValueError(f"--shard={text!r} is not 'i/n' with 0 <= i < n (e.g. 0/4 ... 3/4).")
  return index, count


def make_cells(base: ExperimentConfig, *, models: Sequence[str], datasets: Sequence[str],
               regimes: Sequence[str], seeds: Sequence[int],
               shard: tuple[int, int] = (0, 1)) -> list[ExperimentConfig]:
  """The grid in a fixed order (dataset-major, so feature caches are reused early)."""
  grid = itertools.product(datasets, models, regimes, seeds)
  cells = [dataclasses.replace(base, model=m, dataset=d, regime=r, seed=s)
           for d, m, r, s in grid]
  index, count = shard
  return cells[index::count]


@dataclasses.dataclass(frozen=True)
class SweepSummary:
  done: int
  skipped: int
  failed: int
  failures: tuple[str, ...]

  def line(self) -> str:
    return (f"sweep: {self.done} cells run, {self.skipped} already done, "
            f"{self.failed} failed")


def run_sweep(cells: Iterable[ExperimentConfig], *, store: results.ResultsStore,
              run_fn: Callable = experiment.run_experiment,
              on_result: Optional[Callable] = None) -> SweepSummary:
  """Runs every cell not yet stored as `ok`; failures are recorded and skipped over."""
  cells = list(cells)
  done = skipped = 0
  failures = []
  start = time.perf_counter()
  for number, config in enumerate(cells, 1):
    previous = store.get(*config.cell)
    if previous is not None and previous["status"] == "ok":
      if config.same_protocol(previous.get("config", {})):
        skipped += 1
        continue
      logging.warning("Cell %s was stored with other settings; running it again.",
                      config.cell)
    elapsed = time.perf_counter() - start
    ran = done + len(failures)
    eta = f", ETA {elapsed / ran * (len(cells) - number + 1):.0f} s" if ran else ""
    logging.info("Sweep cell %d/%d: %s%s", number, len(cells), config.cell, eta)
    try:
      result = run_fn(config, store=store)
    except experiment.ExperimentFailed as e:
      failures.append(f"{config.cell}: {e}")
      logging.error("Cell %s failed (recorded; the sweep goes on): %s", config.cell, e)
      continue
    done += 1
    if on_result is not None and result is not None:
      on_result(result)
  return SweepSummary(done, skipped, len(failures), tuple(failures))
