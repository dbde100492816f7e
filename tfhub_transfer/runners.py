"""The regimes' runners: the paper's protocol for one cell. Select on validation, refit on
train+val, evaluate once on test; the test split is read only after every choice is made.
Each `regimes.RegimeSpec` names its runner; each returns an `Outcome`.

`run_logreg`: frozen features (cached) + L2 logistic regression over the L2 path.
`run_trained`: `finetune`/`scratch`: a keras-tuner search over learning rate x weight decay,
then a refit of the best trial on train+val.
"""

import dataclasses
import functools
import math
import os
import time
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfhub_transfer import backbones
from tfhub_transfer import cell_model
from tfhub_transfer import features as features_lib
from tfhub_transfer import identity
from tfhub_transfer import logreg
from tfhub_transfer import metrics
from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer import training
from tfhub_transfer import tuning
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import crops
from tfhub_transfer.data import datasets
from tfhub_transfer.data import device_resample
from tfhub_transfer.data import loading
from tfhub_transfer.data import pipeline
from tfhub_transfer.data.preprocessing import get_preprocess_fn
from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results import workdir as workdir_lib
from tfhub_transfer.transfer_head import build_transfer_head


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What a regime's runner measured for one cell.

  Attributes:
    val_metric: validation metric of the chosen hyperparameters (a fraction).
    test_metric: test metric of the model refitted on train + validation (a fraction).
    hparams: the chosen hyperparameters (and the budget they were trained with).
    timings: wall seconds per phase (e.g. extract_s, fit_s; search_s, refit_s).
    search: what was searched and how each point scored.
    feature_cache: split -> {"path", "hit"} of the feature-cache entries used (logreg).
    test_predictions: the refitted model's per-example test predictions.
    convergence: whether the solver converged, per fit that counts (logreg: the train-only
      fit at the chosen L2 and the refit).
  """
  val_metric: float
  test_metric: float
  hparams: Mapping[str, Any]
  timings: Mapping[str, float]
  search: Mapping[str, Any]
  feature_cache: Optional[Mapping[str, Mapping[str, Any]]] = None
  test_predictions: Optional[predictions_lib.Predictions] = None
  convergence: Optional[Mapping[str, Any]] = None


# (encoded, decoded) bytes of a split by its content key (`CellContext.cache_mode`): one pass
# over a split's encoded bytes per process, not per cell.
_SPLIT_BYTES: dict[str, tuple[int, int]] = {}


@dataclasses.dataclass
class CellContext:
  """What both regimes need, resolved once by `run_experiment`."""
  config: ExperimentConfig
  backbone: backbones.BackboneSpec
  dataset: Any  # datasets.DatasetSpec
  splits: Any  # loading.Splits
  weights: str
  strategy: tf.distribute.Strategy
  cell_dir: str
  record_trial_fn: Optional[tuning.RecordTrialFn] = None
  _cache_modes: dict[str, Optional[str]] = dataclasses.field(default_factory=dict, repr=False)
  _kept_stream: dict[str, tf.data.Dataset] = dataclasses.field(default_factory=dict,
                                                               repr=False)
  _evaluation: dict[str, tf.data.Dataset] = dataclasses.field(default_factory=dict,
                                                              repr=False)

  def batches(self, split: str, *, training_mode: bool = False, repeat: bool = False,
              start_batch: int = 0, resize_on_device: bool = False):
    """The split's batches; a training split that fits is cached in memory (`cache_mode`).
    `resize_on_device`: batches of decoded windows, for `make_feature_fn`'s function to
    resample (`pipeline.make_pipeline`)."""
    return pipeline.make_pipeline(
        getattr(self.splits, split), image_size=self.backbone.image_size,
        preprocess_fn=get_preprocess_fn(self.backbone.preprocessing),
        batch_size=self.config.batch_size, training=training_mode, seed=self.config.seed,
        cache=self.cache_mode(split) if training_mode else None,
        repeat=repeat, drop_remainder=repeat, start_batch=start_batch,
        eval_preprocessing=self.config.eval_preprocessing,
        fast_decode=self.config.fast_decode, resize_on_device=resize_on_device)

  def training_stream(self, split: str):
    """first_batch -> the repeated training batches of `split` from that batch on.

    The stream from batch 0 is made once and kept (of the last split asked for only): every
    training of the cell that starts there iterates the same dataset, so its in-memory cache
    (`cache_mode`) is filled by the first and read by the others, where a new pipeline per
    training decoded the whole split again (7 s a training in figure 10, more than its 40
    steps). A resumed training starts elsewhere and gets a pipeline of its own.
    """
    def stream(first_batch: int):
      if first_batch:
        return self.batches(split, training_mode=True, repeat=True, start_batch=first_batch)
      if split not in self._kept_stream:
        self._kept_stream.clear()  # One split's cache in memory at a time.
        self._kept_stream[split] = self.batches(split, training_mode=True, repeat=True)
      return self._kept_stream[split]
    return stream

  def evaluation_batches(self, split: str) -> tf.data.Dataset:
    """The split's evaluation batches, one dataset per cell, kept in memory when they fit.

    Evaluation preprocessing is deterministic, so every pass over the split gives the same
    batches: when the preprocessed images fit (`pipeline.fits_evaluation_cache`), the first
    pass decodes and preprocesses them into an in-memory cache and the others (each trial's
    validation pass) read it, where each pass decoded the split again (figure 10). A split
    too large reads and decodes every pass, as `batches` does.
    """
    if split not in self._evaluation:
      batches = self.batches(split)
      if pipeline.fits_evaluation_cache(num_examples=self.splits.sizes[split],
                                        image_size=self.backbone.image_size):
        batches = batches.cache().prefetch(tf.data.AUTOTUNE)
      self._evaluation[split] = batches
    return self._evaluation[split]

  def cache_mode(self, split: str) -> Optional[str]:
    """How the training split is cached in memory (`pipeline.choose_cache`): the same batches,
    without reading (and, when decoded images fit, decoding) every image every epoch.
    Measured once per split (a pass over the encoded bytes), then remembered."""
    if split in self._cache_modes:
      return self._cache_modes[split]
    # The split's bytes depend only on its content: the cells of one dataset (its regimes,
    # backbones, seeds of one split) measure it once per process.
    content = features_lib.cache_key(self.split_content_parts(split))
    if content not in _SPLIT_BYTES:
      _SPLIT_BYTES[content] = pipeline.measure_bytes(getattr(self.splits, split))
    encoded, decoded = _SPLIT_BYTES[content]
    mode = pipeline.applied_cache(
        pipeline.choose_cache(encoded_bytes=encoded, decoded_bytes=decoded),
        fast_decode=self.config.fast_decode)
    logging.info("%s split: %d images, %.3g GiB encoded, %.3g GiB decoded: %s.", split,
                 self.splits.sizes[split], encoded / 2**30, decoded / 2**30,
                 f"cached in memory ({mode})" if mode else "too large to cache in memory")
    self._cache_modes[split] = mode
    return mode

  def num_batches(self, split: str) -> int:
    return math.ceil(self.splits.sizes[split] / self.config.batch_size)

  def build_model(self, *, weight_decay: float = 0.0, learning_rate: Optional[float] = None):
    """The cell's `TransferHead`, its backbone computing in `config.precision`.

    Raises:
      ValueError: the backbone cannot compute in that precision (`training.check_precision`).
    """
    with training.precision_policy(self.config.precision):
      model = build_transfer_head(
          self.backbone, regime=self.config.regime, num_classes=self.dataset.num_classes,
          multi_label=self.dataset.multi_label, weights=self.weights,
          weight_decay=weight_decay, learning_rate=learning_rate, seed=self.config.seed)
    training.check_precision(model, self.config.precision)
    return model

  @functools.cached_property
  def weights_id(self) -> str:
    """`weights_identity` of the cell's weights, computed once (it hashes a weights file)."""
    return weights_identity(self.weights, self.config.seed)

  def split_content_parts(self, split: str) -> dict[str, Any]:
    """What identifies the images of `split` (its dataset, selection and size)."""
    return {"dataset": self.config.cell.dataset, "split": split,
            "split_info": self.splits.info, "size": self.splits.sizes[split],
            "data_dir": self.config.data_dir}

  def feature_key_parts(self, split: str) -> dict[str, Any]:
    """Everything the cached features of `split` depend on (`features.cache_key`)."""
    parts = {
        "backbone": self.backbone.to_dict(),
        "weights": self.weights_id,
        **self.split_content_parts(split),
        "image_size": self.backbone.image_size, "preprocessing": self.backbone.preprocessing,
    }
    # Only when not the defaults, so that float32 entries keep the keys they always had.
    if self.config.precision != "float32":
      parts["precision"] = self.config.precision
    if self.config.jit_compile:
      parts["jit_compile"] = True
    if self.config.eval_preprocessing != crops.DEFAULT_EVAL_PREPROCESSING:
      parts["eval_preprocessing"] = self.config.eval_preprocessing
    if self.config.fast_decode:
      parts["fast_decode"] = True
    if self.config.resize_on_device:
      parts["resize_on_device"] = True
    return parts

  def make_feature_fn(self):
    """Builds the backbone: a compiled images -> features function (`config.jit_compile`),
    one shape per cell (batches padded to `config.batch_size`); with
    `config.resize_on_device` it takes `batches(resize_on_device=True)`' windows and
    resamples them first."""
    inputs_fn = None
    if self.config.resize_on_device:
      if not tf.config.list_logical_devices("GPU"):
        logging.warning("--resize_on_device with no GPU visible: the resample runs on the "
                        "CPU, where it costs more than on the host's pipeline (BENCHMARKS.md, "
                        "figure 9); the features are the same up to float rounding.")
      inputs_fn = device_resample.inputs_fn(self.backbone.image_size,
                                            get_preprocess_fn(self.backbone.preprocessing))
    with self.strategy.scope():
      return features_lib.make_feature_fn(self.build_model(), self.strategy,
                                          jit_compile=self.config.jit_compile,
                                          batch_size=self.config.batch_size,
                                          inputs_fn=inputs_fn)


def load_cell(config: ExperimentConfig, *,
              record_trial_fn: Optional[tuning.RecordTrialFn] = None,
              splits: Optional[loading.Splits] = None) -> CellContext:
  """Resolves one cell for its runner: backbone, dataset, its splits (as drawn for the cell:
  seed, cap, low-data subset), weights and strategy. TensorFlow's and Keras's seeds are set to
  the cell's first, so a randomly initialised backbone built next is the cell's own.

  Args:
    config: the cell.
    record_trial_fn: where the tuner's trials are recorded (finetune/scratch).
    splits: splits already loaded for a cell that draws them alike (same dataset, seed, cap
      and subset), instead of loading them again.

  Raises:
    ValueError: an unknown model or dataset. Whatever loading the data raised.
  """
  backbone = backbones.get_backbone_spec(config.model, model_kwargs=config.model_kwargs,
                                         image_size=config.image_size or None)
  dataset = datasets.get_dataset_spec(config.dataset)
  # Before the data: an impossible strategy (no GPU, XLA on several replicas) does no work.
  strategy = training.make_strategy(config.strategy, jit_compile=config.jit_compile)
  keras.utils.set_random_seed(config.seed)
  if splits is None:
    splits = loading.load_splits(dataset, data_dir=config.data_dir,
                                 manual_dir=config.manual_dir, seed=config.seed,
                                 max_examples=config.max_examples,
                                 folder_cache_dir=workdir_lib.Workdir(config.workdir).folders,
                                 examples_per_class=config.examples_per_class)
  return CellContext(
      config=config, backbone=backbone, dataset=dataset, splits=splits,
      weights=config.regime_spec.resolve_weights(config.weights),
      strategy=strategy,
      cell_dir=workdir_lib.Workdir(config.workdir).cell_dir(config.cell),
      record_trial_fn=record_trial_fn)


FEATURE_SPLITS = ("train", "val", "test")


def feature_cache_dir(config: ExperimentConfig) -> str:
  return workdir_lib.Workdir(config.workdir).features


def weights_identity(weights: str, seed: int) -> str:
  """Names the exact parameters the features come from."""
  if weights == regimes.RANDOM:
    return f"random-seed{seed}"
  if weights == regimes.IMAGENET:
    return "imagenet"
  return "file-" + identity.file_digest(weights)


def extract_cell_features(ctx: CellContext, *, splits: Sequence[str] = FEATURE_SPLITS
                          ) -> dict[str, features_lib.CachedFeatures]:
  """The frozen features of the cell's splits, through the feature cache.

  The backbone is built on the first cache miss only: when every split is cached, nothing
  is built. `run_logreg` and `--mode=score` read the same cache entries.

  Args:
    ctx: the cell.
    splits: which of the cell's splits to extract (in this order).

  Returns:
    split -> its cached features and labels (memory-mapped).
  """
  built = []

  def feature_fn(images):
    if not built:
      built.append(ctx.make_feature_fn())
    return built[0](images)

  cache_dir = feature_cache_dir(ctx.config)
  cached = {}
  for split in splits:
    parts = ctx.feature_key_parts(split)
    cached[split] = features_lib.extract_features(
        feature_fn, ctx.batches(split, resize_on_device=ctx.config.resize_on_device),
        cache_dir=cache_dir,
        key=features_lib.cache_key(parts), num_batches=ctx.num_batches(split),
        description=f"{ctx.config.model}/{ctx.config.dataset}/{split}", key_parts=parts)
  return cached


def run_logreg(ctx: CellContext) -> Outcome:
  """Extracts (or reuses) features, fits the L2 path, refits, tests."""
  cached = extract_cell_features(ctx)
  extract_s = sum(c.seconds for c in cached.values())
  metric_fn = metrics.get_metric_fn(ctx.dataset.metric)
  start = time.perf_counter()
  selection = logreg.select_and_refit(
      cached["train"].features, cached["train"].labels, cached["val"].features,
      cached["val"].labels, multi_label=ctx.dataset.multi_label,
      num_classes=ctx.dataset.num_classes, metric_fn=metric_fn,
      l2_values=protocol.l2_grid(ctx.config.l2_grid_size), refit=ctx.splits.refit_with_val)
  fit_s = time.perf_counter() - start
  test_scores = logreg.predict_scores(selection.model, cached["test"].features)
  test_metric = metric_fn(cached["test"].labels, test_scores)
  best = selection.l2_values.index(selection.best_l2)
  return Outcome(
      val_metric=float(selection.val_scores[best]), test_metric=float(test_metric),
      hparams={"l2": float(selection.best_l2)},
      timings={"extract_s": extract_s, "fit_s": fit_s, "refit_s": selection.refit_seconds},
      search={"l2": list(selection.l2_values), "val_metric": list(selection.val_scores),
              "iterations": list(selection.iterations)},
      feature_cache={s: {"path": c.path, "hit": c.from_cache} for s, c in cached.items()},
      test_predictions=predictions_lib.from_scores(
          cached["test"].labels, test_scores, multi_label=ctx.dataset.multi_label),
      convergence={"tol": logreg.DEFAULT_TOL, "max_iter": logreg.DEFAULT_MAX_ITER,
                   "chosen": _fit_facts(selection.chosen_fit),
                   "refit": _fit_facts(selection.model)})


def _fit_facts(model: logreg.LinearModel) -> dict[str, Any]:
  """Whether one L-BFGS fit converged (iterations 0: the previous solution was within tol)."""
  return {"converged": bool(model.converged), "iterations": int(model.iterations),
          "max_abs_grad": float(model.max_abs_grad)}


def run_trained(ctx: CellContext) -> Optional[Outcome]:
  """Searches the grid with keras-tuner, refits the best on train+val, tests.

  Returns None in a keras-tuner worker process: the chief owns the cell's record.
  """
  config = ctx.config
  protocol.per_replica_batch_size(config.batch_size, ctx.strategy.num_replicas_in_sync)
  train_steps = config.steps
  metric_fn = metrics.get_metric_fn(ctx.dataset.metric)

  # One model for the trials and the refit, reset before each (`cell_model`): one build
  # per cell, and one trace per cell unless the process's last trained cell traced the
  # same graph (`cell_model.KEPT_MODEL`).
  key = cell_model.TraceKey(
      backbone=ctx.backbone, network_dir=backbones.savedmodel_weights(ctx.weights),
      num_classes=ctx.dataset.num_classes,
      multi_label=ctx.dataset.multi_label,
      trains_backbone=config.regime_spec.trains_backbone, precision=config.precision,
      jit_compile=config.jit_compile, train_steps=train_steps, batch_size=config.batch_size,
      strategy=ctx.strategy)
  model_of_cell = cell_model.CellModel(ctx.build_model, key, kept=cell_model.KEPT_MODEL)

  def model_for(split):
    return functools.partial(model_of_cell.get, num_train_examples=ctx.splits.sizes[split])

  setup = training.TrainSetup(train_steps=train_steps,
                              log_dir=os.path.join(ctx.cell_dir, "tensorboard"),
                              jit_compile=config.jit_compile)
  hypermodel = tuning.TransferHyperModel(
      model_fn=model_for("train"),
      learning_rates=config.learning_rate_grid, weight_decays=config.weight_decay_grid,
      setup=setup, train_data=ctx.training_stream("train"),
      val_data=ctx.evaluation_batches("val"), metric_fn=metric_fn,
      backup_root=os.path.join(ctx.cell_dir, "backup"), record_trial_fn=ctx.record_trial_fn,
      seed=config.seed)
  tuner = tuning.make_tuner(hypermodel, kind=config.tuner,
                            directory=workdir_lib.Workdir(config.workdir).tuner,
                            project_name=os.path.basename(ctx.cell_dir), seed=config.seed,
                            max_trials=config.max_trials, strategy=ctx.strategy)
  start = time.perf_counter()
  tuner.search()
  search_s = time.perf_counter() - start
  if tuning.is_tuner_worker():
    return None
  chosen = tuning.best_trial(tuner)
  best, val_metric = dict(chosen.hyperparameters.values), chosen.score

  start = time.perf_counter()
  training.seed_trial(config.seed, best, phase="refit")
  model = model_for("trainval")(weight_decay=best["weight_decay"],
                                learning_rate=best["learning_rate"])
  refit_setup = dataclasses.replace(setup,
                                    log_dir=os.path.join(ctx.cell_dir, "tensorboard_refit"))
  training.train(model, ctx.training_stream("trainval"), refit_setup,
                 backup_dir=os.path.join(ctx.cell_dir, "backup_refit"))
  refit_s = time.perf_counter() - start
  test_scores, test_labels = training.predict_scores(model, ctx.batches("test"))
  if not np.all(np.isfinite(test_scores)):
    raise training.TrainingDiverged("The refitted model predicts non-finite test logits.")
  test_metric = metric_fn(test_labels, test_scores)
  return Outcome(
      val_metric=float(val_metric), test_metric=float(test_metric),
      hparams={**best, "train_steps": train_steps, "batch_size": config.batch_size},
      timings={"search_s": search_s, "refit_s": refit_s, "train_s": search_s + refit_s},
      search={"tuner": config.tuner, "trials": len(tuner.oracle.trials)},
      test_predictions=predictions_lib.from_scores(test_labels, test_scores,
                                                   multi_label=ctx.dataset.multi_label))
