"""One model per cell: built, compiled and traced once, reset before each of its trainings.

A `finetune`/`scratch` cell trains one model per grid point of its search and one more for
the refit, all of one shape. Building each anew cost a backbone build and weights load and a
new trace of its training and inference steps: about 12 s a training on 2 loaded CPU cores
for the 64 px MobileNet of bench figure 10, against 5 s for its 40 steps. `CellModel` keeps
the first model and, before each training, puts back what a fresh build holds: every
variable of the model as built (weights, batch-norm statistics, random generators' states),
every variable of the optimizer as before its first step (step count, momenta), no resumed
epoch (`BackupAndRestore` leaves one on the model), and the training's learning rate, L2
coefficient and batch-norm momentum, through the variables the traced steps read. A
training on the reset model computes what it computed on a fresh one
(tests/test_cell_model.py).

Across cells, one process keeps the last cell's model (`KeptModel`, at most one): a next
cell whose `TraceKey` is equal (everything the compiled model and its traced steps depend
on) takes it instead of compiling and tracing its own, e.g. a sweep's seeds or low-data
sizes of one dataset, or a finetune and a scratch cell of one network and dataset. Its
variables get the new cell's initial values from the cell's own fresh build (pretrained or
random, its seed), its optimizer's variables their initial values: it trains as the fresh
build would (tests/test_cell_model.py), without the trace (about 5-10 s a cell in bench
figure 10).
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfhub_transfer import backbones
from tfhub_transfer import training
from tfhub_transfer.transfer_head import TransferHead

# (weight_decay=, learning_rate=) -> a fresh, uncompiled TransferHead.
BuildModelFn = Callable[..., TransferHead]


@dataclasses.dataclass(frozen=True)
class TraceKey:
  """Everything a cell's compiled model and its traced steps depend on besides the values
  of its variables: cells with equal keys train the same graph.

  Attributes:
    backbone: the network (architecture, resolution, input convention); not its weights,
      whose values a reused model takes from the cell's own build.
    network_dir: a SavedModel directory given as the weights, which is then the network
      itself (`backbones.build_backbone`); '' otherwise.
    num_classes: the head's width.
    multi_label: sigmoid or softmax outputs (the loss, the labels' shape).
    trains_backbone: the regime's trainable set (which weights the step updates).
    precision: the dtype policy the model is built under (and its loss scaling).
    jit_compile: whether the training step is compiled with XLA.
    train_steps: the step budget: the cosine schedule's length, a constant of the step.
    batch_size: the global batch, the step's static input shape.
    strategy: the distribution strategy the variables live under, compared by identity
      (another strategy object's variables are other variables); `training.make_strategy`
      gives every cell of a process the same object for the same kind and devices.
  """
  backbone: backbones.BackboneSpec
  network_dir: str
  num_classes: int
  multi_label: bool
  trains_backbone: bool
  precision: str
  jit_compile: bool
  train_steps: int
  batch_size: int
  strategy: tf.distribute.Strategy


@dataclasses.dataclass
class _Kept:
  key: TraceKey
  model: TransferHead
  learning_rate: "tf.Variable"  # The schedule's initial rate (`training.compile_model`).
  optimizer_initial: list  # The optimizer's variables before its first step.


class KeptModel:
  """The last cell's compiled model, kept for the next cell of the same `TraceKey` (an LRU
  of one: a cell with another key replaces it, so memory holds one model at most)."""

  def __init__(self):
    self._kept: Optional[_Kept] = None
    self.reuses = 0

  def take(self, key: TraceKey, fresh: TransferHead) -> Optional[_Kept]:
    """The kept model, holding `fresh`'s variable values and an unstepped optimizer, if it
    was compiled for `key` (and its variables match `fresh`'s one by one); else None."""
    kept = self._kept
    if kept is None or kept.key != key or not _same_structure(kept.model, fresh):
      return None
    for variable, value in zip(kept.model.variables, fresh.variables):
      variable.assign(value)
    for variable, value in zip(kept.model.optimizer.variables, kept.optimizer_initial):
      variable.assign(value)
    self.reuses += 1
    return kept

  def keep(self, key: TraceKey, model: TransferHead, learning_rate) -> None:
    """Keeps a newly compiled model (with its optimizer built and unstepped) for `key`."""
    self._kept = _Kept(key, model, learning_rate,
                       [v.numpy() for v in model.optimizer.variables])

  @property
  def key(self) -> Optional[TraceKey]:
    """The key of the model kept, None when none is."""
    return self._kept.key if self._kept is not None else None

  def release_unless(self, key: TraceKey) -> None:
    """Lets the kept model go unless it was compiled for `key`."""
    if self._kept is not None and self._kept.key != key:
      self._kept = None

  def clear(self) -> None:
    self._kept = None


def _same_structure(model: TransferHead, other: TransferHead) -> bool:
  def shapes(m):
    return [(v.path, tuple(v.shape), v.dtype) for v in m.variables]
  return shapes(model) == shapes(other)


# The process's kept model: `runners.run_trained` hands it to every trained cell.
KEPT_MODEL = KeptModel()


class CellModel:
  """The cell's one compiled model, handed out at a fresh build's state for each training.

  Args:
    build_model_fn: builds the cell's model (called once, under the key's strategy's scope).
    key: what the compiled model depends on (its step budget, batch size, XLA, strategy).
    kept: where the previous cell's model is kept (`KEPT_MODEL`); None: always compile and
      trace the cell's own.
  """

  def __init__(self, build_model_fn: BuildModelFn, key: TraceKey, *,
               kept: Optional[KeptModel] = None):
    self._build_model_fn = build_model_fn
    self._key = key
    self._kept = kept
    self._model: Optional[TransferHead] = None
    self._learning_rate = None
    self._initial: list[np.ndarray] = []
    self.builds = 0
    self.reused = False  # Whether the cell took the kept model of an earlier cell.

  def get(self, *, weight_decay: float, learning_rate: float,
          num_train_examples: int) -> TransferHead:
    """The model, compiled, as a fresh build for this training would be.

    Args:
      weight_decay: the training's weight decay.
      learning_rate: its initial learning rate.
      num_train_examples: the size of the split it trains on (batch-norm momentum).
    """
    with self._key.strategy.scope():
      if self._model is None:
        self._model = self._first(weight_decay=weight_decay, learning_rate=learning_rate)
        self._initial = [v.numpy() for v in self._state_variables()]
      else:
        for variable, value in zip(self._state_variables(), self._initial):
          variable.assign(value)
      model = self._model
      model.set_weight_decay(weight_decay=weight_decay, learning_rate=learning_rate)
      self._learning_rate.assign(learning_rate)
      # A training resumed from its backup leaves the epoch it resumed at on the model
      # (Keras's `BackupAndRestore` sets it; `fit` starts there): a fresh model has none.
      model._initial_epoch = None  # pylint: disable=protected-access
      training.batch_norm_setup(model, num_train_examples, self._key.batch_size)
    return model

  def _first(self, *, weight_decay: float, learning_rate: float) -> TransferHead:
    """The cell's model at its initial state: the kept one holding this cell's fresh build's
    values, or that build, compiled (and kept for the next cell)."""
    if self._kept is not None:
      # Another graph's kept model is let go before this cell builds its own, so that a
      # process never holds two models (a GPU's memory: the kept one is of no further use).
      self._kept.release_unless(self._key)
    fresh = self._build_model_fn(weight_decay=weight_decay, learning_rate=learning_rate)
    self.builds += 1
    kept = self._kept.take(self._key, fresh) if self._kept is not None else None
    if kept is not None:
      self.reused, self._learning_rate = True, kept.learning_rate
      kept.model.regime = fresh.regime
      return kept.model
    self._learning_rate = training.compile_model(
        fresh, learning_rate=learning_rate, train_steps=self._key.train_steps,
        jit_compile=self._key.jit_compile)
    # Built now (`fit` would at its first step), so that its initial state is kept too.
    fresh.optimizer.build(fresh.trainable_variables)
    if self._kept is not None:
      self._kept.keep(self._key, fresh, self._learning_rate)
    return fresh

  def _state_variables(self) -> list:
    return list(self._model.variables) + list(self._model.optimizer.variables)
