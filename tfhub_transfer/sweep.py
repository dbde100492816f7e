"""Grids of cells (models x datasets x regimes x data sizes x step budgets x seeds),
resumable and shardable.

A cell whose record is stored with status `ok` under the same protocol (the store's key holds
the protocol id, `ExperimentConfig.protocol`) by any host of the workdir is skipped, so a
sweep killed with `kill -9` and started again loses at most the cell in flight. A failing cell
(missing data, NaN, out of memory) is stored with its error and the sweep goes on; failed
cells are retried on the next run. `shard=(i, n)` runs every n-th cell starting at i, so n
processes or hosts with the same workdir split a grid between them: each host writes its own
store file, and every host reads them all.
"""

import dataclasses
import hashlib
import itertools
import os
import time
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

from absl import logging

from tfhub_transfer import faults
from tfhub_transfer import protocol
from tfhub_transfer import regimes as regimes_lib
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import merged
from tfhub_transfer.results import store as store_lib
from tfhub_transfer.results import workdir as workdir_lib


def parse_shard(text: str) -> tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n."""
  try:
    index, count = (int(part) for part in text.split("/"))
  except ValueError:
    index, count = -1, 0
  if not 0 <= index < count:
    raise ValueError(f"--shard={text!r} is not 'i/n' with 0 <= i < n (e.g. 0/4 ... 3/4).")
  return index, count


@dataclasses.dataclass(frozen=True)
class Grid:
  """The values a sweep crosses, and which share of the cells this process runs.

  Attributes:
    models, datasets, regimes, seeds: the values of each dimension.
    examples_per_class: training images per class of low-data cells (0: all); empty: the
      base config's value.
    train_steps: step budgets of finetune/scratch cells; empty: the base config's value.
    shard: (i, n): run every n-th cell of the grid, starting at the i-th.
    examples_per_class_by_dataset: a dataset's own K values, in place of
      `examples_per_class` (the paper's Figure 9 goes to a different K on each dataset, so
      its grid is no full cross product).
    train_steps_by_regime: a regime's own budget, in place of `train_steps`.
  """
  models: tuple[str, ...]
  datasets: tuple[str, ...]
  regimes: tuple[str, ...]
  seeds: tuple[int, ...] = (0,)
  shard: tuple[int, int] = (0, 1)
  examples_per_class: tuple[int, ...] = ()
  train_steps: tuple[int, ...] = ()
  examples_per_class_by_dataset: Mapping[str, tuple[int, ...]] = dataclasses.field(
      default_factory=dict)
  train_steps_by_regime: Mapping[str, int] = dataclasses.field(default_factory=dict)

  @classmethod
  def of_cell(cls, config: ExperimentConfig) -> "Grid":
    """The grid of `config`'s one cell."""
    return cls(models=(config.model,), datasets=(config.dataset,), regimes=(config.regime,),
               seeds=(config.seed,))

  def cells(self, base: ExperimentConfig) -> list[ExperimentConfig]:
    """The grid's cells in a fixed order (dataset-major, so feature caches are reused early),
    each `base` with its (model, dataset, regime, examples per class, budget, seed); this
    shard's share. Cells that differ only in a setting their regime does not depend on (a
    step budget of `logreg`) are one cell, listed once."""
    cells = {}
    for d, m, r in itertools.product(self.datasets, self.models, self.regimes):
      sizes = (self.examples_per_class_by_dataset.get(d) or self.examples_per_class
               or (base.examples_per_class,))
      budgets = ((self.train_steps_by_regime[r],) if r in self.train_steps_by_regime
                 else self.train_steps or (base.train_steps,))
      for k, t, s in itertools.product(sizes, budgets, self.seeds):
        config = dataclasses.replace(base, model=m, dataset=d, regime=r, examples_per_class=k,
                                     train_steps=t, seed=s)
        cells.setdefault(config.names, config)
    index, count = self.shard
    return list(cells.values())[index::count]


def cell_label(config: ExperimentConfig, *, study: Sequence[str] = ()) -> str:
  """A cell for logs: readable names, regime, seed and protocol id; where a local file or
  folder is named by its content, a short hash of the key tells two `best.h5`s apart."""
  identity = config.identity
  key = identity.key
  by_content = key.model != identity.model_label or key.dataset.startswith("folder:")
  digest = hashlib.sha256(repr(tuple(key)).encode()).hexdigest()[:8]
  return (f"{identity.model_label} / {identity.dataset_label} / {config.regime} / "
          f"seed {config.seed}" + "".join(f" / {s}" for s in study)
          + f" / protocol {key.protocol}" + (f" #{digest}" if by_content else ""))


# The value of --examples_per_class / --train_steps that asks for the paper's own: Figure 9's
# K = 1, 2, 4, ... up to each dataset's maximum; each regime's budget at batch 256.
PAPER = "paper"


def make_grid(*, models: Sequence[str], datasets: Sequence[str], regimes: Sequence[str],
              seeds: Sequence[int], shard: tuple[int, int] = (0, 1),
              examples_per_class: Union[str, Sequence[int]] = (),
              train_steps: Union[str, Sequence[int]] = ()) -> Grid:
  """A `Grid`; `examples_per_class` and `train_steps` are integers or `PAPER`.

  Raises:
    ValueError: `PAPER` K values for a dataset the paper's Figure 9 does not show.
  """
  by_dataset, by_regime = {}, {}
  if examples_per_class == PAPER:
    by_dataset = {d: protocol.paper_examples_per_class(d) for d in datasets}
    examples_per_class = tuple(sorted({k for ks in by_dataset.values() for k in ks}))
  if train_steps == PAPER:
    by_regime = {r: regimes_lib.get_regime_spec(r).paper_train_steps or 0 for r in regimes}
    train_steps = tuple(sorted(set(by_regime.values())))
  return Grid(models=tuple(models), datasets=tuple(datasets), regimes=tuple(regimes),
              seeds=tuple(seeds), shard=shard, examples_per_class=tuple(examples_per_class),
              train_steps=tuple(train_steps), examples_per_class_by_dataset=by_dataset,
              train_steps_by_regime=by_regime)


def plan_line(config: ExperimentConfig) -> str:
  """A cell as `--mode=plan` lists it: model / dataset / regime / seed, then the study
  settings that are not their default (K examples per class, the step budget), then the
  protocol id."""
  study = []
  if config.examples_per_class:
    study.append(f"K={config.examples_per_class}")
  if config.regime_spec.searches_with_tuner and config.train_steps:
    study.append(f"steps={config.train_steps}")
  return cell_label(config, study=study)


def check_grid(grid: Grid, base: ExperimentConfig, *, build_models: bool = True) -> None:
  """Checks every name of the grid before anything runs: each model builds as asked (kwargs,
  resolution, weights file) and one batch of its input fits this machine's memory, each
  dataset is known (a `folder:` dataset's images are validated once, for the cells too), each
  regime is known. `build_models=False` skips building Keras models (it starts TensorFlow):
  the `--parallel_trials` launcher leaves that to its children.

  Raises:
    ValueError: one line naming the flag and what it accepts.
  """
  from tfhub_transfer import backbones  # pylint: disable=g-import-not-at-top
  from tfhub_transfer import devices  # pylint: disable=g-import-not-at-top
  from tfhub_transfer.data import datasets  # pylint: disable=g-import-not-at-top
  for model in grid.models:
    spec = backbones.check_backbone(model, model_kwargs=base.model_kwargs,
                                    image_size=base.image_size, weights=base.weights,
                                    build=build_models)
    devices.check_batch_fits_memory(base.batch_size, spec.image_size, model=spec.name)
  for dataset in grid.datasets:
    spec = datasets.get_dataset_spec(dataset)
    if spec.source == datasets.FOLDER:
      datasets.check_folder_splits(spec, seeds=grid.seeds,
                                   cache_dir=workdir_lib.Workdir(base.workdir).folders)
  for regime in grid.regimes:
    regimes_lib.get_regime_spec(regime)


def plan_lines(cells: Iterable[ExperimentConfig], workdir: str) -> list[str]:
  """`--mode=plan`: a line per cell (`plan_line`), `done` where any host of `workdir` stored
  it as ok, then the counts and the estimated time of the cells to run (`estimate`)."""
  from tfhub_transfer import estimate  # pylint: disable=g-import-not-at-top
  stored = merged.read_workdir(workdir) if os.path.isdir(workdir) else None
  lines, pending = [], []
  cells = list(cells)
  for config in cells:
    ok = stored is not None and stored.has_ok(*config.cell)
    if not ok:
      pending.append(config)
    lines.append(f"{'done' if ok else 'to run':6}  {plan_line(config)}")
  done = len(cells) - len(pending)
  return lines + [f"plan: {len(cells)} cells, {done} already done, {len(pending)} to run",
                  estimate.plan_line(pending)]


@dataclasses.dataclass(frozen=True)
class SweepSummary:
  done: int
  skipped: int
  failed: int
  failures: tuple[str, ...]

  @property
  def cells(self) -> int:
    return self.done + self.skipped + self.failed

  def line(self) -> str:
    return (f"sweep: {self.done} cells run, {self.skipped} already done, "
            f"{self.failed} failed")


def run_sweep(cells: Iterable[ExperimentConfig], *, store: store_lib.ResultsStore,
              stored: Optional[merged.WorkdirResults] = None,
              run_fn: Optional[Callable] = None,
              on_result: Optional[Callable] = None) -> SweepSummary:
  """Runs every cell not yet stored as `ok`; failures are recorded and skipped over.

  Args:
    cells: the cells, in order.
    store: where results are written (this host's store).
    stored: where finished cells are looked up (default: `store` alone); a workdir's
      `merged.read_workdir`, so that cells other hosts finished are skipped.
    run_fn: runs one cell (default `experiment.run_experiment`).
    on_result: called with each new result.
  """
  # TensorFlow is imported here, not with the module: the CLI checks --shard with
  # `parse_shard` at parse time, before anything heavy is loaded.
  from tfhub_transfer import experiment  # pylint: disable=g-import-not-at-top
  run_fn = run_fn or experiment.run_experiment
  cells = list(cells)
  stored = stored or store
  done = skipped = 0
  failures = []
  start = time.perf_counter()
  for number, config in enumerate(cells, 1):
    faults.raise_if_interrupted()  # A signal's interrupt that a cell's code lost on the way.
    if stored.has_ok(*config.cell):
      skipped += 1
      continue
    elapsed = time.perf_counter() - start
    ran = done + len(failures)
    eta = f", ETA {elapsed / ran * (len(cells) - number + 1):.0f} s" if ran else ""
    logging.info("Sweep cell %d/%d: %s%s", number, len(cells), cell_label(config), eta)
    try:
      result = run_fn(config, store=store)
    except experiment.ExperimentFailed as e:
      failures.append(f"{cell_label(config)}: {e}")
      if number < len(cells):  # The last one's failure is the summary's (`failures`).
        logging.error("Cell %s failed (recorded; the sweep goes on): %s", cell_label(config), e)
      continue
    done += 1
    if on_result is not None and result is not None:
      on_result(result)
  return SweepSummary(done, skipped, len(failures), tuple(failures))


def run_grid(base: ExperimentConfig, grid: Grid, *,
             on_result: Optional[Callable] = None) -> SweepSummary:
  """Runs this shard of the grid into this host's store in `base.workdir`, skipping the cells
  any host of the workdir has finished (see `run_sweep`); a failed cell is recorded and the
  sweep goes on. `tfhub_transfer.run_grid`.

  Logreg cells of one dataset and resolution share one decode pass per split
  (`multi_extract.with_shared_decoding`).

  Args:
    base: the settings of every cell (workdir, batch size, grids, ...).
    grid: the models x datasets x regimes x seeds (x budgets, x examples per class) to run,
      and this process's shard of them.
    on_result: called with each new `experiment.Result`.

  Returns:
    The counts of cells run, skipped and failed, and each failure's line.
  """
  # TensorFlow is imported here, not with the module (see `run_sweep`).
  from tfhub_transfer import experiment  # pylint: disable=g-import-not-at-top
  from tfhub_transfer import multi_extract  # pylint: disable=g-import-not-at-top
  cells = grid.cells(base)
  store = store_lib.ResultsStore.for_workdir(base.workdir)
  stored = merged.read_workdir(base.workdir)
  return run_sweep(cells, store=store, stored=stored,
                   run_fn=multi_extract.with_shared_decoding(cells, experiment.run_experiment,
                                                             stored=stored),
                   on_result=on_result)
