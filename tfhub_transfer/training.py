"""Training one `finetune`/`scratch` trial: strategy, optimizer, schedule, resume, evaluation.

The paper's recipe: SGD with Nesterov momentum 0.9, cosine learning-rate decay to zero over the
step budget, L2 weight decay on the loss, batch-norm momentum from the steps per epoch, and the
global batch split over the replicas of a `tf.distribute` strategy.
"""

import contextlib
import dataclasses
import math
import os
import sys
from typing import Callable, Iterator, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfhub_transfer import protocol
from tfhub_transfer.config import STRATEGIES
from tfhub_transfer.transfer_head import set_batch_norm_momentum


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
  """Returns the strategy for `--strategy`.

  `auto` is MirroredStrategy over all local GPUs when there are several, OneDevice on a single
  GPU, and the default strategy on CPU.

  Raises:
    ValueError: unknown name, or TPU asked for where there is none.
  """
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    name = "mirrored" if len(gpus) > 1 else ("one_device" if gpus else "default")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
      raise ValueError(f"--strategy=tpu: no TPU found ({e}). Use --strategy=auto.") from e
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"Unknown --strategy={name!r}. Valid choices: {', '.join(STRATEGIES)}.")


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


def make_optimizer(learning_rate: float, train_steps: int) -> keras.optimizers.Optimizer:
  schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=train_steps)
  return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)


def compile_model(model, *, learning_rate: float, train_steps: int,
                  jit_compile: bool = False) -> None:
  """Compiles `model` with the paper's optimizer and schedule.

  A model built under `mixed_float16` gets dynamic loss scaling (float16 gradients would
  underflow; bfloat16 has float32's range and needs none).

  Raises:
    ValueError: `jit_compile` asked for where Keras cannot compile the model with XLA.
  """
  optimizer = make_optimizer(learning_rate, train_steps)
  if model.dtype_policy.name == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  model.compile(optimizer=optimizer, loss=model.make_loss(), jit_compile=jit_compile,
                auto_scale_loss=False)
  if jit_compile and not model.jit_compile:
    raise ValueError("--jit_compile: Keras cannot compile this model with XLA (a layer does "
                     "not support it, or op determinism is enabled). Drop --jit_compile.")


def _steps_per_fit_epoch(train_steps: int) -> int:
  """Largest divisor of the budget up to 200: logs, TensorBoard and backups at that cadence."""
  return max(d for d in range(1, min(train_steps, 200) + 1) if train_steps % d == 0)


def progress_verbosity() -> int:
  """Keras progress bars on a terminal, one line per epoch in a log file."""
  return 1 if sys.stdout.isatty() else 2


def train(model, train_data: tf.data.Dataset, setup: TrainSetup, *, backup_dir: str,
          verbose: Optional[int] = None) -> dict[str, float]:
  """Trains a compiled model for exactly `setup.train_steps` steps, resuming if interrupted.

  Args:
    model: a compiled `TransferHead`.
    train_data: repeated, batched (images, labels) at the global batch size.
    setup: step budget and logging.
    backup_dir: where `BackupAndRestore` keeps the state an interrupted run resumes from.
    verbose: Keras progress-bar verbosity (default: `progress_verbosity()`).

  Returns:
    The final training loss.

  Raises:
    TrainingDiverged: the loss became NaN or infinite.
  """
  chunk = _steps_per_fit_epoch(setup.train_steps)
  callbacks = [keras.callbacks.BackupAndRestore(backup_dir),
               keras.callbacks.TerminateOnNaN()]
  if setup.log_dir:
    callbacks.append(keras.callbacks.TensorBoard(setup.log_dir, write_graph=False))
  history = model.fit(train_data, epochs=setup.train_steps // chunk, steps_per_epoch=chunk,
                      callbacks=callbacks,
                      verbose=progress_verbosity() if verbose is None else verbose)
  losses = history.history.get("loss", [])
  if losses and not math.isfinite(losses[-1]):
    raise TrainingDiverged(f"Training loss became {losses[-1]} at epoch "
                           f"{len(losses)} of {setup.train_steps // chunk} (steps of {chunk}); "
                           f"the learning rate is likely too high.")
  return {"loss": float(losses[-1]) if losses else float("nan")}


def predict_scores(model, dataset: tf.data.Dataset):
  """Logits and labels of a whole (finite, batched) dataset, in order."""
  predict_fn = tf.function(lambda images: model(images, training=False),
                           reduce_retracing=True)
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
  count = set_batch_norm_momentum(model.backbone, momentum, synchronized=replicas > 1)
  logging.info("Batch-norm momentum %.4f on %d layers (synchronized over %d replicas).",
               momentum, count, replicas)
  return momentum


def trial_name(hparam_values: dict) -> str:
  """A directory name for one point of the grid, e.g. `learning_rate=0.1_weight_decay=0`."""
  return "_".join(f"{k}={v:.3g}" for k, v in sorted(hparam_values.items()))
