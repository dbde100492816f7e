"""Figure 10: a whole mini-study, start to report, against its own pure compute.

The study is what a user runs: `sweep.run_grid` over real photos (`../shared/data/cub_birds20`
and `pets37`), then `report.document.write_workdir_report`. Its backbone is Keras MobileNet
v1 (alpha 0.25) twice: with the real ImageNet weights file of `../shared/weights/` (logreg
and finetune) and randomly initialised (logreg and scratch), so each sweep is one a user
would type (the weights are one flag of a sweep). The baseline, measured right after in the
same process, is the same work's compute alone: every forward pass of extraction and
evaluation and every training step on pre-made in-memory batches (traced once, untimed), and
the L-BFGS path on the study's own features in memory.

The wall time of the study is split by phase with a clock that wraps the library's functions
(`mock.patch.object`): each moment is counted for the innermost phase running on the main
thread, so the phases add up to the wall time; what no wrapped function covers is `other`.
"""

import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import threading
import time
from typing import Callable, Iterator
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from bench import harness
from bench.profiles import ROOT
from bench.profiles import SHARED
from bench.profiles import Profile
from tfhub_transfer import backbones
from tfhub_transfer import cell_model
from tfhub_transfer import estimate
from tfhub_transfer import experiment
from tfhub_transfer import features as features_lib
from tfhub_transfer import logreg
from tfhub_transfer import metrics
from tfhub_transfer import multi_extract
from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer import runners
from tfhub_transfer import sweep
from tfhub_transfer import training
from tfhub_transfer import tuning
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.config import FrozenKwargs
from tfhub_transfer.data import datasets
from tfhub_transfer.data import loading
from tfhub_transfer.report import document
from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results import store as store_lib
from tfhub_transfer.transfer_head import build_transfer_head

DATASETS = ("cub_birds20", "pets37")  # The shared folders (`Profile.study_datasets`).
WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"
MODEL, MODEL_KWARGS = "keras:MobileNet", '{"alpha": 0.25}'

# The phases of the breakdown, in the order printed; `other` is the wall time none covers.
PHASES = ("start-up", "cell records", "data", "build/load", "extract", "L-BFGS", "train",
          "backups", "TensorBoard", "evaluate", "search bookkeeping", "store", "report",
          "other")


class PhaseClock:
  """Exclusive wall time per phase: a moment counts for the innermost wrapped call running
  on the main thread (calls from other threads, e.g. the shared decoding pass's extraction
  threads, are inside the main thread's phase already)."""

  def __init__(self):
    self.seconds = collections.defaultdict(float)
    self.calls = collections.defaultdict(int)
    self._stack: list[str] = []
    self._mark = 0.0

  def _enter(self, phase: str) -> None:
    now = time.perf_counter()
    if self._stack:
      self.seconds[self._stack[-1]] += now - self._mark
    self._stack.append(phase)
    self.calls[phase] += 1
    self._mark = now

  def _leave(self) -> None:
    now = time.perf_counter()
    self.seconds[self._stack.pop()] += now - self._mark
    self._mark = now

  def wrap(self, phase: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
      if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)
      self._enter(phase)
      try:
        return fn(*args, **kwargs)
      finally:
        self._leave()
    return wrapped


# (owner, attribute, phase): every library function the clock wraps during the study.
_WRAPPED = (
    (sweep, "run_grid", "start-up"),
    (experiment, "run_experiment", "cell records"),
    (runners, "load_cell", "data"),
    (loading, "load_splits", "data"),
    (runners.CellContext, "cache_mode", "data"),
    (runners.CellContext, "batches", "data"),
    (runners.CellContext, "build_model", "build/load"),
    (cell_model.CellModel, "get", "build/load"),
    (features_lib, "make_feature_fn", "build/load"),
    (training, "compile_model", "build/load"),
    (training, "batch_norm_setup", "build/load"),
    (multi_extract, "extract_cells", "extract"),
    (features_lib, "extract_features", "extract"),
    (logreg, "select_and_refit", "L-BFGS"),
    (logreg, "predict_scores", "L-BFGS"),
    (training, "train", "train"),
    (keras.callbacks.BackupAndRestore, "on_train_begin", "backups"),
    (keras.callbacks.BackupAndRestore, "_save_model", "backups"),
    (keras.callbacks.BackupAndRestore, "on_train_end", "backups"),
    (keras.callbacks.TensorBoard, "set_model", "TensorBoard"),
    (keras.callbacks.TensorBoard, "on_train_begin", "TensorBoard"),
    (keras.callbacks.TensorBoard, "on_epoch_end", "TensorBoard"),
    (keras.callbacks.TensorBoard, "on_train_end", "TensorBoard"),
    (training, "evaluate", "evaluate"),
    (training, "predict_scores", "evaluate"),
    (tuning, "make_tuner", "search bookkeeping"),
    (tuning._Tuner, "search", "search bookkeeping"),  # pylint: disable=protected-access
    (tuning, "best_trial", "search bookkeeping"),
    (store_lib.ResultsStore, "put", "store"),
    (store_lib.ResultsStore, "replace", "store"),
    (store_lib.ResultsStore, "put_trial", "store"),
    (predictions_lib, "save", "store"),
    (document, "write_workdir_report", "report"),
)


@dataclasses.dataclass(frozen=True)
class Study:
  """What the study ran: its cells' records and where its data lives."""
  records: list
  workdir: str
  kept_model_reuses: int = 0  # Trained cells that took an earlier cell's model (no trace).


def shared_paths(names: tuple[str, ...] = DATASETS, data_dir: str = "",
                 with_weights: bool = True) -> tuple[str, list[str]]:
  """The real weights file ('' when not `with_weights`) and the datasets' folders (in
  `data_dir`, else in the shared data beside the repository).

  Raises:
    FileNotFoundError: naming the missing path and where it should be.
  """
  weights = os.path.join(SHARED, "weights", WEIGHTS_FILE) if with_weights else ""
  folders = [os.path.join(data_dir or os.path.join(SHARED, "data"), name) for name in names]
  for path in ([weights] if weights else []) + folders:
    if not os.path.exists(path):
      raise FileNotFoundError(f"Figure 10 needs {path}: the shared real photos and weights "
                              f"live in ../shared/ beside the repository ({ROOT}).")
  return weights, folders


@dataclasses.dataclass(frozen=True)
class StudyBackbone:
  """The study's network: `--model`, its kwargs (JSON), and the pretrained side's weights."""
  model: str
  kwargs: str
  weights: str

  @property
  def label(self) -> str:
    return self.model + (self.kwargs if self.kwargs != "{}" else "")


def study_backbone(profile: Profile) -> StudyBackbone:
  """`profile.study_model` with its own weights, else MobileNet 0.25 with the shared file."""
  if profile.study_model:
    return StudyBackbone(profile.study_model, "{}", regimes.IMAGENET)
  weights, _ = shared_paths((), with_weights=True)
  return StudyBackbone(MODEL, MODEL_KWARGS, weights)


def study_configs(profile: Profile, workdir: str) -> list[tuple[ExperimentConfig, sweep.Grid]]:
  """The two sweeps (pretrained weights: logreg + finetune; random init: logreg + scratch)."""
  backbone = study_backbone(profile)
  _, folders = shared_paths(profile.study_datasets, profile.study_data_dir, with_weights=False)
  grid_datasets = tuple("folder:" + folder for folder in folders)
  base = ExperimentConfig(
      model=backbone.model, dataset=grid_datasets[0], regime="logreg", workdir=workdir,
      weights=backbone.weights, model_kwargs=FrozenKwargs.parse(backbone.kwargs),
      image_size=profile.study_image_size, batch_size=profile.study_batch,
      train_steps=profile.study_steps, learning_rates=profile.study_learning_rates,
      weight_decays=(0.0,), l2_grid_size=profile.study_l2_grid_size,
      max_examples=profile.study_max_examples)
  models = (backbone.model,)
  # The second sweep lists the datasets the other way round, so that its first trained cell
  # follows the first sweep's last one of the same dataset: one graph, so the process's
  # kept model (`cell_model.KEPT_MODEL`) trains it without a new trace.
  return [(base, sweep.Grid(models=models, datasets=grid_datasets,
                            regimes=("logreg", "finetune"))),
          (dataclasses.replace(base, weights=regimes.RANDOM),
           sweep.Grid(models=models, datasets=grid_datasets[::-1],
                      regimes=("logreg", "scratch")))]


def run_study(profile: Profile, workdir: str, clock: PhaseClock) -> Study:
  """The sweeps and the report, as a user runs them, each library phase on `clock`."""
  records = []
  cell_model.KEPT_MODEL.clear()  # A user's process starts with none.
  reuses = cell_model.KEPT_MODEL.reuses
  with clocked(clock):
    for base, grid in study_configs(profile, workdir):
      summary = sweep.run_grid(base, grid, on_result=lambda r: records.append(r.record))
      if summary.failures:
        raise RuntimeError(f"Figure 10's study failed: {summary.failures[0]}")
    document.write_workdir_report(workdir)
  kept_model_reuses = cell_model.KEPT_MODEL.reuses - reuses
  cell_model.KEPT_MODEL.clear()
  return Study(records=records, workdir=workdir, kept_model_reuses=kept_model_reuses)


@contextlib.contextmanager
def clocked(clock: PhaseClock) -> Iterator[None]:
  """Every `_WRAPPED` function wrapped by `clock` while inside."""
  with contextlib.ExitStack() as stack:
    for owner, name, phase in _WRAPPED:
      stack.enter_context(mock.patch.object(owner, name, clock.wrap(phase, getattr(owner, name))))
    yield


# --- The baseline: the same work's compute alone. ---------------------------------------

def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _batches(n: int, batch: int) -> list[int]:
  """The batch sizes of a pass over n examples."""
  return [batch] * (n // batch) + ([n % batch] if n % batch else [])


def compute_baseline(profile: Profile, study: Study
                     ) -> tuple[dict[str, float], dict[str, float], collections.Counter]:
  """Seconds of each kind of compute the study did, on pre-made in-memory inputs; the
  first (tracing) call of each function, per dataset, which the baseline does not count; and
  how much work that was (images forwarded and trained on, trainings, logreg examples), with
  the seconds of the trainings' input pipeline alone ("input pipeline s"), not compute
  either: it shares the cores with the steps in the study.
  """
  size, batch = profile.study_image_size, profile.study_batch
  backbone = study_backbone(profile)
  spec = backbones.get_backbone_spec(backbone.model,
                                     model_kwargs=FrozenKwargs.parse(backbone.kwargs),
                                     image_size=size)
  strategy = training.make_strategy("auto")
  rng = np.random.default_rng(0)
  images = rng.uniform(-1.0, 1.0, (batch, size, size, 3)).astype(np.float32)
  seconds, first_calls = collections.defaultdict(float), collections.defaultdict(float)
  work = collections.Counter()  # Images forwarded and trained on, trainings, examples.
  by_dataset = collections.defaultdict(list)
  for record in study.records:
    by_dataset[record["config"]["dataset"]].append(record)
  for dataset_name, records in by_dataset.items():
    dataset = datasets.get_dataset_spec(dataset_name)
    classes = dataset.num_classes
    with strategy.scope():
      frozen = build_transfer_head(spec, regime="logreg", num_classes=classes,
                                   weights=regimes.RANDOM)
      feature_fn = features_lib.make_feature_fn(frozen, strategy, batch_size=batch)
      trained = build_transfer_head(spec, regime="finetune", num_classes=classes,
                                    weights=regimes.RANDOM)
      training.compile_model(trained, learning_rate=0.01, train_steps=10**6)
    predict_fn = _make_predict_fn(trained, size)
    labels = tf.constant(rng.integers(0, classes, batch), tf.int64)
    in_memory = tf.data.Dataset.from_tensors((images, labels)).repeat()
    # The first calls trace (untimed in the baseline; their cost is shown beside it).
    first_calls["extraction forward"] += _timed(lambda: np.asarray(feature_fn(images)))
    first_calls["training step"] += _timed(
        lambda: trained.fit(in_memory, epochs=1, steps_per_epoch=1, verbose=0))
    first_calls["evaluation forward"] += _timed(lambda: predict_fn(images).numpy())
    for record in records:
      sizes = record["sizes"]
      if record["regime"] == "logreg":
        passes = sum(math.ceil(sizes[s] / batch) for s in runners.FEATURE_SPLITS)
        work["forward images"] += sum(sizes[s] for s in runners.FEATURE_SPLITS)
        work["logreg examples"] += sizes["train"] + sizes["val"]
        seconds["forward (extraction)"] += _timed(
            lambda: [np.asarray(feature_fn(images)) for _ in range(passes)])
        seconds["L-BFGS path"] += _lbfgs_seconds(record, dataset)
      else:
        trials = record["search"]["trials"]
        steps = record["hparams"]["train_steps"] * (trials + 1)  # + the refit.
        seconds["training steps"] += _timed(
            lambda: trained.fit(in_memory, epochs=1, steps_per_epoch=steps, verbose=0))
        shapes = _batches(sizes["val"], batch) * trials + _batches(sizes["test"], batch)
        work["forward images"] += sum(shapes)
        work["train images"] += steps * batch
        work["trainings"] += trials + 1
        seconds["forward (evaluation)"] += _timed(
            lambda: [predict_fn(images[:n]).numpy() for n in shapes])
        work["input pipeline s"] += _pipeline_seconds(record, trials)
  return dict(seconds), dict(first_calls), work


def _pipeline_seconds(record, trials: int) -> float:
  """Not compute: the input pipeline alone, for the batches of a trained cell's trainings
  as the study makes them (`CellContext.training_stream`): the first trial fills the train
  split's kept stream, the other trials read it again, the refit makes train+val's."""
  ctx = runners.load_cell(ExperimentConfig(**record["config"]))
  steps = record["hparams"]["train_steps"]

  def one_pass(split):
    return _timed(lambda: [None for _ in ctx.training_stream(split)(0).take(steps)])
  return sum(one_pass("train") for _ in range(trials)) + one_pass("trainval")


REFERENCE_MODEL, REFERENCE_BATCH, REFERENCE_BATCHES = "resnet_50", 8, 3


def reference_forward_s_per_gmac() -> float:
  """Seconds per image and billion multiply-adds of a typical backbone's forward pass
  (ResNet-50 at 224 px, random init): the rate `estimate` scales every backbone by. A light
  network (the study's) computes far fewer multiply-adds per second on a CPU, so its own
  rate would overstate a heavy network's time."""
  spec = backbones.get_backbone_spec(REFERENCE_MODEL)
  strategy = training.make_strategy("auto")
  with strategy.scope():
    model = build_transfer_head(spec, regime="logreg", num_classes=2, weights=regimes.RANDOM)
    feature_fn = features_lib.make_feature_fn(model, strategy, batch_size=REFERENCE_BATCH)
  images = np.random.default_rng(0).uniform(
      -1.0, 1.0, (REFERENCE_BATCH, spec.image_size, spec.image_size, 3)).astype(np.float32)
  np.asarray(feature_fn(images))  # Traces (untimed).
  seconds = _timed(lambda: [np.asarray(feature_fn(images)) for _ in range(REFERENCE_BATCHES)])
  return seconds / (REFERENCE_BATCH * REFERENCE_BATCHES * estimate.GMACS[REFERENCE_MODEL])


def _make_predict_fn(model, size: int):
  """As `training.predict_scores` runs a model: one trace for every batch size."""

  @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3])])
  def predict(images):
    return model(images, training=False)
  return predict


def _lbfgs_seconds(record, dataset) -> float:
  """The cell's L2 path + refit + test scores on its own cached features, in memory."""
  cached = {s: features_lib.load_cached(*os.path.split(entry["path"]))
            for s, entry in record["feature_cache"].items()}
  x = {s: np.array(c.features) for s, c in cached.items()}
  y = {s: np.array(c.labels) for s, c in cached.items()}
  config = record["config"]

  def path():
    selection = logreg.select_and_refit(
        x["train"], y["train"], x["val"], y["val"], multi_label=dataset.multi_label,
        num_classes=dataset.num_classes, metric_fn=metrics.get_metric_fn(dataset.metric),
        l2_values=protocol.l2_grid(config["l2_grid_size"]))
    logreg.predict_scores(selection.model, x["test"])
  return _timed(path)


def figure_study(profile: Profile, workdir: str) -> harness.Figure:
  """Runs the study, then its baseline, and returns the figure with the breakdown."""
  study_dir = os.path.join(workdir, "fig9_study")
  shutil.rmtree(study_dir, ignore_errors=True)
  clock = PhaseClock()
  load_before = os.getloadavg()
  start = time.perf_counter()
  study = run_study(profile, study_dir, clock)
  wall = time.perf_counter() - start
  baseline, first_calls, work = compute_baseline(profile, study)
  reference = reference_forward_s_per_gmac() if profile.study_reference_rate else 0.0
  phases = dict(clock.seconds)
  phases["other"] = wall - sum(phases.values())
  device = ", ".join(training.devices_of(tf.distribute.get_strategy()))
  backbone = study_backbone(profile)
  records_total = sum(r["timings"]["total_s"] for r in study.records)
  cells = collections.Counter(r["regime"] for r in study.records)
  trials = sum(r["search"].get("trials", 0) for r in study.records if r["regime"] != "logreg")
  extra = [harness.Measurement(f"phase {phase} ({clock.calls.get(phase, 0)} calls)", "s",
                               [phases.get(phase, 0.0)]) for phase in PHASES]
  extra += [harness.Measurement(f"baseline part: {name}", "s", [value])
            for name, value in sorted(baseline.items())]
  extra += [harness.Measurement(f"not in the baseline: first call (trace) of the {name}, "
                                f"summed over {len(profile.study_datasets)} datasets", "s",
                                [value])
            for name, value in sorted(first_calls.items())]
  extra.append(harness.Measurement(
      "not in the baseline: the trainings' input pipeline alone (decode, crop, resize; "
      "each cell's trainings' batches, as the study makes them)", "s",
      [work["input pipeline s"]]))
  if reference:
    extra.append(harness.Measurement(
        f"for the estimate: {REFERENCE_MODEL} forward at 224 px, batch {REFERENCE_BATCH}, "
        f"seconds per image per billion multiply-adds", "s", [reference]))
  extra.append(harness.Measurement("sum of the records' timings.total_s (run_experiment "
                                   "inside, as each record states it)", "s", [records_total]))
  return harness.Figure(
      key="10", title="study efficiency: a mini-study's pure compute / its wall time, start "
                     "to report",
      measured=harness.Measurement(
          f"sweep.run_grid x 2 + write_workdir_report, {len(study.records)} cells", "s",
          [wall]),
      baseline=harness.Measurement(
          "the same forward passes, training steps and L-BFGS paths on in-memory inputs",
          "s", [sum(baseline.values())]),
      ratio_of=harness.BASELINE_OVER_MEASURED, goal=">= 0.85",
      extra=extra, rates=study_rates(profile, study, wall, phases, baseline, work,
                                          reference) if reference else {},
      setup=(f"{backbone.label} at {profile.study_image_size} px, batch "
             f"{profile.study_batch}, on {device}: pretrained weights "
             f"({os.path.basename(backbone.weights)}) x (logreg, finetune) and random init x "
             f"(logreg, scratch), on {profile.study_data_dir or '../shared/data'}/"
             f"{{{','.join(profile.study_datasets)}}}"
             + (f" (at most {profile.study_max_examples} per split)"
                if profile.study_max_examples else "")
             + f"; cells {dict(cells)}, {trials} trials of {profile.study_steps} steps "
               f"(learning rates {list(profile.study_learning_rates)}, weight decay 0) + one "
               f"refit per trained cell; L2 grid of {profile.study_l2_grid_size}; "
               f"{study.kept_model_reuses} trained cell(s) took the previous trained cell's "
               f"model (cell_model.KEPT_MODEL: no trace of their own). Phases are "
               f"exclusive wall times of the wrapped library calls (bench/study.py _WRAPPED), "
               f"adding up to the measured wall; 'other' is what no wrapped call covers "
               f"(the study's loop, imports on first use). Load average before "
               f"{'/'.join(f'{v:.1f}' for v in load_before)}, after "
               f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())}; GPU goal for --device: "
               f">= 0.70 (a trained cell's one model build and trace, and the input "
               f"pipeline on the host's cores, do not shrink with the device's speed)"))


def study_rates(profile: Profile, study: Study, wall: float, phases: dict[str, float],
                baseline: dict[str, float], work: collections.Counter,
                reference_s_per_gmac: float) -> dict[str, float]:
  """The rates `tfhub_transfer.estimate` costs a grid with (its `Rates` fields): compute per
  image and billion multiply-adds (`reference_forward_s_per_gmac`, and the study's measured
  cost of a training image in forward passes), and the fixed costs around it, per training
  and per cell."""
  backbone = study_backbone(profile)
  gmacs = estimate.GMACS[backbone.model + FrozenKwargs.parse(backbone.kwargs).json()] * (
      profile.study_image_size / 224) ** 2
  forward = baseline.get("forward (extraction)", 0.0) + baseline.get("forward (evaluation)",
                                                                     0.0)
  training_phases = sum(phases.get(p, 0.0) for p in (
      "build/load", "train", "backups", "TensorBoard", "evaluate", "search bookkeeping"))
  training_overhead = max(0.0, (training_phases - baseline.get("training steps", 0.0)
                                - baseline.get("forward (evaluation)", 0.0))
                          / max(1, work["trainings"]))
  cell_overhead = max(0.0, (wall - sum(baseline.values())
                            - training_overhead * work["trainings"]) / len(study.records))
  own_forward = forward / max(1, work["forward images"]) / gmacs
  own_train = baseline.get("training steps", 0.0) / max(1, work["train images"]) / gmacs
  # A training image costs own_train / own_forward forward passes (measured on the study's
  # network); the forward rate itself is the reference network's.
  return {"forward_s_per_gmac": reference_s_per_gmac,
          "train_s_per_gmac": reference_s_per_gmac * own_train / own_forward,
          "lbfgs_s_per_example": baseline.get("L-BFGS path", 0.0)
                                 / max(1, work["logreg examples"]),
          "training_overhead_s": training_overhead, "cell_overhead_s": cell_overhead}


def breakdown_json(figure: harness.Figure) -> str:
  """The phases of a figure 10 as one JSON line (for notes and before/after comparisons)."""
  return json.dumps({m.label: round(m.values[0], 2) for m in figure.extra})
