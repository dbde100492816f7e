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
"""

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfhub_transfer import training
from tfhub_transfer.transfer_head import TransferHead

# (weight_decay=, learning_rate=) -> a fresh, uncompiled TransferHead.
BuildModelFn = Callable[..., TransferHead]


class CellModel:
  """The cell's one compiled model, handed out at a fresh build's state for each training.

  Args:
    build_model_fn: builds the cell's model (called once, under `strategy`'s scope).
    strategy: the cell's distribution strategy.
    train_steps: the step budget of every training (the schedule's length).
    batch_size: the global batch size (sets the batch-norm momentum with the split's size).
    jit_compile: compile the training step with XLA.
  """

  def __init__(self, build_model_fn: BuildModelFn, *, strategy: tf.distribute.Strategy,
               train_steps: int, batch_size: int, jit_compile: bool = False):
    self._build_model_fn = build_model_fn
    self._strategy = strategy
    self._train_steps = train_steps
    self._batch_size = batch_size
    self._jit_compile = jit_compile
    self._model: Optional[TransferHead] = None
    self._learning_rate = None
    self._initial: list[np.ndarray] = []
    self.builds = 0

  def get(self, *, weight_decay: float, learning_rate: float,
          num_train_examples: int) -> TransferHead:
    """The model, compiled, as a fresh build for this training would be.

    Args:
      weight_decay: the training's weight decay.
      learning_rate: its initial learning rate.
      num_train_examples: the size of the split it trains on (batch-norm momentum).
    """
    with self._strategy.scope():
      if self._model is None:
        model = self._build_model_fn(weight_decay=weight_decay, learning_rate=learning_rate)
        self._learning_rate = training.compile_model(
            model, learning_rate=learning_rate, train_steps=self._train_steps,
            jit_compile=self._jit_compile)
        # Built now (`fit` would at its first step), so that its initial state is kept too.
        model.optimizer.build(model.trainable_variables)
        self._model, self.builds = model, self.builds + 1
        self._initial = [v.numpy() for v in self._state_variables()]
      else:
        model = self._model
        for variable, value in zip(self._state_variables(), self._initial):
          variable.assign(value)
        model.set_weight_decay(weight_decay=weight_decay, learning_rate=learning_rate)
        self._learning_rate.assign(learning_rate)
        # A training resumed from its backup leaves the epoch it resumed at on the model
        # (Keras's `BackupAndRestore` sets it; `fit` starts there): a fresh model has none.
        model._initial_epoch = None  # pylint: disable=protected-access
      training.batch_norm_setup(model, num_train_examples, self._batch_size)
    return model

  def _state_variables(self) -> list:
    return list(self._model.variables) + list(self._model.optimizer.variables)
