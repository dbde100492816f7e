"""Training one `finetune`/`scratch` trial: strategy, optimizer, schedule, resume, evaluation.

The paper's recipe: SGD with Nesterov momentum 0.9, cosine learning-rate decay to zero over the
step budget, L2 weight decay on the loss, batch-norm momentum from the steps per epoch, and the
global batch split over the replicas of a `tf.distribute` strategy.
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Callable, Iterator, Mapping, Optional, Union

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfhub_transfer import devices
from tfhub_transfer import faults
from tfhub_transfer import progress
from tfhub_transfer import protocol


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


# One strategy object per kind and devices in a process. A cell's kept model
# (`cell_model.KEPT_MODEL`) serves the next cell only under the very strategy it was built in
# (its `TraceKey` compares strategies by identity): a new MirroredStrategy or OneDeviceStrategy
# per cell would rebuild and retrace every trained cell on GPUs. A TPU system is initialised
# once.
_STRATEGIES: dict[tuple[str, tuple[str, ...]], tf.distribute.Strategy] = {}


def make_strategy(name: str = "auto", *, jit_compile: bool = False
                  ) -> tf.distribute.Strategy:
  """Returns the strategy for `--strategy` (`devices.resolve_strategy` says which): the same
  object for the same kind and devices throughout the process.

  `auto` is MirroredStrategy over all local GPUs when there are several, OneDevice on a single
  GPU, and the default strategy on CPU. `mirrored` without GPUs mirrors over the logical CPU
  devices the program configured, when there are several.

  Raises:
    ValueError: unknown name; a GPU strategy without a GPU; `jit_compile` on more than one
      replica; TPU asked for where there is none.
  """
  gpus = tf.config.list_logical_devices("GPU")
  cpus = tf.config.list_logical_devices("CPU")
  name, _ = devices.resolve_strategy(name, num_gpus=len(gpus), num_cpus=len(cpus),
                                     jit_compile=jit_compile)
  if name == "default":
    return tf.distribute.get_strategy()
  key = (name, tuple(d.name for d in gpus or cpus))
  if key not in _STRATEGIES:
    _STRATEGIES[key] = _new_strategy(name, gpus, cpus)
  return _STRATEGIES[key]


def _new_strategy(name: str, gpus: list, cpus: list) -> tf.distribute.Strategy:
  if name == "mirrored":
    return tf.distribute.MirroredStrategy([d.name for d in gpus or cpus])
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name)
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, tf.errors.OpError) as e:
    raise ValueError(f"--strategy=tpu: no TPU found ({e}). Use --strategy=auto.") from e
  return tf.distribute.TPUStrategy(resolver)


def devices_of(strategy: tf.distribute.Strategy) -> list[str]:
  """The devices a strategy computes on, for the result record."""
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy: whatever TensorFlow places ops on.
    accelerators = [d.name for d in tf.config.list_logical_devices()
                    if d.device_type in ("GPU", "TPU")]
    return accelerators[:1] or ["/device:CPU:0"]


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """How long and how to train: the same for every trial of a cell.

  Attributes:
    train_steps: the step budget.
    log_dir: TensorBoard logs (None: none).
    jit_compile: compile the training step with XLA (`--jit_compile`).
  """
  train_steps: int
  log_dir: Optional[str] = None
  jit_compile: bool = False


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
  """Keras layers built inside compute in `precision` (a `config.PRECISIONS` name).

  Keras keeps its default dtype policy per thread; it is restored on exit, so only the
  layers built inside take it (a layer keeps the policy it was built with).
  """
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(precision)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def check_precision(model, precision: str) -> None:
  """Raises ValueError if `model`'s backbone does not compute in `precision`'s dtype (a TF
  Hub SavedModel runs in the dtype it was exported with)."""
  expected = keras.mixed_precision.Policy(precision).compute_dtype
  if model.backbone.compute_dtype != expected:
    raise ValueError(
        f"--precision={precision}: the backbone {model.backbone.name} computes in "
        f"{model.backbone.compute_dtype}, not {expected} (a TF Hub SavedModel runs in the "
        f"dtype it was exported with). Use --precision=float32, or a keras.applications "
        f"backbone (a registry name or keras:<Application>).")


def trial_seed(seed: int, hparams: Mapping[str, Any], phase: str = "search") -> int:
  """The seed of one trial: a function of the cell's seed and the trial's hyperparameters
  alone (and of the phase: a search trial or the refit), never of what ran before it."""
  blob = json.dumps({"seed": seed, "hparams": dict(hparams), "phase": phase}, sort_keys=True)
  return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "big") >> 1  # < 2**31.


def seed_trial(seed: int, hparams: Mapping[str, Any], phase: str = "search") -> int:
  """Seeds Python, NumPy, TensorFlow and Keras with `trial_seed` (before the trial's model and
  input pipeline are made); returns it."""
  value = trial_seed(seed, hparams, phase)
  keras.utils.set_random_seed(value)
  return value


def make_optimizer(initial_learning_rate: keras.Variable, train_steps: int
                   ) -> keras.optimizers.Optimizer:
  """SGD with Nesterov momentum 0.9 and cosine decay from `initial_learning_rate` to zero.

  The initial rate is a variable, not a constant in the training step: every trial of a
  search (one learning rate each) runs the same step (`cell_model` sets it per trial), and
  with XLA and a persistent compilation cache (docs/gpu.md) a trial's compiled step serves
  the others.
  """
  schedule = keras.optimizers.schedules.CosineDecay(initial_learning_rate,
                                                    decay_steps=train_steps)
  return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)


def compile_model(model, *, learning_rate: float, train_steps: int,
                  jit_compile: bool = False) -> keras.Variable:
  """Compiles `model` with the paper's optimizer and schedule; returns the schedule's initial
  learning rate (a variable: a new trial's rate needs no retrace, `cell_model`).

  A model built under `mixed_float16` gets dynamic loss scaling (float16 gradients would
  underflow; bfloat16 has float32's range and needs none).

  Raises:
    ValueError: `jit_compile` asked for where Keras cannot compile the model with XLA.
  """
  initial_learning_rate = keras.Variable(learning_rate, trainable=False, dtype="float32",
                                         name="initial_learning_rate")
  optimizer = make_optimizer(initial_learning_rate, train_steps)
  if model.dtype_policy.name == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  model.compile(optimizer=optimizer, loss=model.make_loss(), jit_compile=jit_compile,
                auto_scale_loss=False)
  if jit_compile and not model.jit_compile:
    raise ValueError("--jit_compile: Keras cannot compile this model with XLA (a layer does "
                     "not support it, or op determinism is enabled). Drop --jit_compile.")
  return initial_learning_rate


# The most steps between two logs, TensorBoard summaries and backups (one Keras epoch).
MAX_STEPS_PER_FIT_EPOCH = 200


def _steps_per_fit_epoch(train_steps: int) -> int:
  """Largest divisor of the budget up to MAX_STEPS_PER_FIT_EPOCH: the cadence of logs,
  TensorBoard and backups."""
  return max(d for d in range(1, min(train_steps, MAX_STEPS_PER_FIT_EPOCH) + 1)
             if train_steps % d == 0)


def progress_verbosity() -> int:
  """Keras progress bars on a terminal, one plain line per epoch (<= 200 steps) otherwise."""
  return progress.keras_verbosity()


def backed_up_epoch(backup_dir: str) -> int:
  """The Keras epoch that `BackupAndRestore(backup_dir)` will resume at (0: none backed up).

  Read from the callback's own record (training_metadata.json, Keras 3), so that the input
  can be positioned before `fit` starts; `train` checks it against the restored step.
  """
  try:
    with open(os.path.join(backup_dir, "training_metadata.json")) as f:
      return int(json.load(f)["epoch"])
  except (OSError, ValueError, KeyError, TypeError):
    return 0


class _CheckResumeStep(keras.callbacks.Callback):
  """After `BackupAndRestore` restored the optimizer: warns if it resumed at another step than
  the one the input stream was positioned at."""

  def __init__(self, first_step: int):
    super().__init__()
    self.first_step = first_step

  def on_train_begin(self, logs=None):
    restored = int(self.model.optimizer.iterations)
    if restored != self.first_step:
      logging.warning("Training resumed at step %d but its input was positioned at step %d; "
                      "this run's data order differs from an uninterrupted one's.", restored,
                      self.first_step)


class _BackupAndRestore(keras.callbacks.BackupAndRestore):
  """Keras's `BackupAndRestore`, without the backup after the last epoch: its
  `on_train_end` deletes the backups at once, so that one could only serve a run killed in
  between, which now repeats its last epoch instead (the input is positioned from the
  backup, so it sees the same batches). A budget of up to 200 steps is one epoch: no backup
  is written at all."""

  def __init__(self, backup_dir: str, *, epochs: int):
    super().__init__(backup_dir)
    self.epochs = epochs

  def on_epoch_end(self, epoch, logs=None):
    if epoch + 1 < self.epochs:
      super().on_epoch_end(epoch, logs)
    else:
      self._current_epoch, self._last_batch_seen = epoch + 1, 0


class _StopOnInterrupt(keras.callbacks.Callback):
  """Raises a signal's interrupt after the step it arrived in, should it have been lost on
  the way (raised inside C code it can surface as another error, which something caught:
  `faults`), so that a SIGTERM or Ctrl-C never leaves the training running."""

  def on_train_batch_end(self, batch, logs=None):
    del batch, logs
    faults.raise_if_interrupted()


TrainData = Union[tf.data.Dataset, Callable[[int], tf.data.Dataset]]


def train(model, train_data: TrainData, setup: TrainSetup, *, backup_dir: str,
          verbose: Optional[int] = None) -> dict[str, float]:
  """Trains a compiled model for exactly `setup.train_steps` steps, resuming if interrupted.

  Args:
    model: a compiled `TransferHead`.
    train_data: repeated, batched (images, labels) at the global batch size; or a function
      first_batch -> that stream from batch `first_batch` on (`make_pipeline(start_batch=)`),
      so that a run resumed from its backup sees the batches an uninterrupted run would.
    setup: step budget and logging.
    backup_dir: where `BackupAndRestore` keeps the state an interrupted run resumes from.
    verbose: Keras progress-bar verbosity (default: `progress_verbosity()`).

  Returns:
    The final training loss.

  Raises:
    TrainingDiverged: the loss became NaN or infinite.
  """
  chunk = _steps_per_fit_epoch(setup.train_steps)
  callbacks = [_BackupAndRestore(backup_dir, epochs=setup.train_steps // chunk)]
  if callable(train_data):
    first_step = backed_up_epoch(backup_dir) * chunk
    train_data = train_data(first_step)
    callbacks.append(_CheckResumeStep(first_step))
  callbacks.append(keras.callbacks.TerminateOnNaN())
  callbacks.append(_StopOnInterrupt())
  if setup.log_dir:
    callbacks.append(keras.callbacks.TensorBoard(setup.log_dir, write_graph=False))
  # shuffle=False: the pipeline shuffles; Keras warns that its own flag is ignored for tf.data.
  history = model.fit(train_data, epochs=setup.train_steps // chunk, steps_per_epoch=chunk,
                      callbacks=callbacks, shuffle=False,
                      verbose=progress_verbosity() if verbose is None else verbose)
  losses = history.history.get("loss", [])
  if losses and not math.isfinite(losses[-1]):
    raise TrainingDiverged(f"Training loss became {losses[-1]} at epoch "
                           f"{len(losses)} of {setup.train_steps // chunk} (steps of {chunk}); "
                           f"the learning rate is likely too high.")
  return {"loss": float(losses[-1]) if losses else float("nan")}


def predict_scores(model, dataset: tf.data.Dataset):
  """Logits and labels of a whole (finite, batched) dataset, in order."""
  # One trace per model and input spec (`TransferHead.inference_fn`): a reused model's
  # passes, and the short last batch, run the same graph.
  predict_fn = model.inference_fn(dataset.element_spec[0])
  logits, labels = [], []
  for images, batch_labels in dataset:
    logits.append(predict_fn(images).numpy())
    labels.append(batch_labels.numpy())
  return np.concatenate(logits), np.concatenate(labels)


def evaluate(model, dataset: tf.data.Dataset, metric_fn: Callable) -> float:
  logits, labels = predict_scores(model, dataset)
  if not np.all(np.isfinite(logits)):
    raise TrainingDiverged("The model predicts non-finite logits.")
  return float(metric_fn(labels, logits))


def batch_norm_setup(model, num_train_examples: int, batch_size: int) -> float:
  """Applies the paper's batch-norm momentum for this dataset size; returns it.

  Under several replicas, batch statistics are synchronized across them, so the global batch
  is normalized as on one device.
  """
  momentum = protocol.batch_norm_momentum(protocol.steps_per_epoch(num_train_examples,
                                                                 batch_size))
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  count = model.set_batch_norm_momentum(momentum, synchronized=replicas > 1)
  logging.info("Batch-norm momentum %.4f on %d layers (synchronized over %d replicas).",
               momentum, count, replicas)
  return momentum


def trial_name(hparam_values: dict) -> str:
  """A directory name for one point of the grid, e.g. `learning_rate=0.1_weight_decay=0`."""
  return "_".join(f"{k}={v:.3g}" for k, v in sorted(hparam_values.items()))
