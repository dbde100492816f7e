"""Training one `finetune`/`scratch` trial: strategy, optimizer, schedule, resume, evaluation.

The paper's recipe: SGD with Nesterov momentum 0.9, cosine learning-rate decay to zero over the
step budget, L2 weight decay on the loss, batch-norm momentum from the steps per epoch, and the
global batch split over the replicas of a `tf.distribute` strategy.
"""

import dataclasses
import math
import os
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfhub_transfer import progress
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
  """How long and how to train: the same for every trial of a cell."""
  train_steps: int
  log_dir: Optional[str] = None


def make_optimizer(learning_rate: float, train_steps: int) -> keras.optimizers.Optimizer:
  schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=train_steps)
  return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)


def compile_model(model, *, learning_rate: float, train_steps: int) -> None:
  model.compile(optimizer=make_optimizer(learning_rate, train_steps), loss=model.make_loss(),
                jit_compile=False)


def _steps_per_fit_epoch(train_steps: int) -> int:
  """Largest divisor of the budget up to 200: logs, TensorBoard and backups at that cadence."""
  return max(d for d in range(1, min(train_steps, 200) + 1) if train_steps % d == 0)


def progress_verbosity() -> int:
  """Keras progress bars on a terminal, one plain line per epoch (<= 200 steps) otherwise."""
  return progress.keras_verbosity()


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
  # One trace per model: the signature's batch dimension is None, so the short last batch
  # runs the same graph (with reduce_retracing it was traced again; TF warned of retracing
  # after a few trials, each a new model).
  predict_fn = tf.function(lambda images: model(images, training=False),
                           input_signature=[dataset.element_spec[0]])
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
