"""`TransferHead`: one backbone plus one zero-initialised linear classifier.

The regime's spec (`regimes.REGIMES`) decides everything else: whether the backbone is trained
(a frozen one runs batch norm on its moving statistics) and its default init.
"""

from typing import Optional, Union

import keras
import tensorflow as tf

from tfhub_transfer import backbones
from tfhub_transfer import protocol
from tfhub_transfer import regimes


class TransferHead(keras.Model):
  """images -> backbone -> pooled features -> linear head -> logits.

  Args:
    backbone: a layer mapping preprocessed images to pooled features [B, D].
    num_classes: width of the head.
    regime: a `regimes.REGIMES` name; its `trains_backbone` sets `backbone.trainable`.
    multi_label: sigmoid (per-class binary) instead of softmax outputs. Multi-label targets
      may hold -1 (an entry the metric ignores, e.g. VOC's difficult-only classes): the loss
      counts it as a negative, as training on VOC's `labels_no_difficult` does.
    weight_decay: the grid's weight decay. The loss gets the L2 penalty
      (c / 2) * ||w||^2 on every kernel with c = `protocol.l2_coefficient` = weight_decay /
      learning_rate (SimCLR's Appendix B.8), coupled to the gradient as in the paper's
      TF-slim training (not decoupled).
    learning_rate: the trial's initial learning rate (needed when weight_decay > 0).
    name: model name.
  """

  def __init__(self, backbone: keras.layers.Layer, *, num_classes: int, regime: str,
               multi_label: bool = False, weight_decay: float = 0.0,
               learning_rate: Optional[float] = None, name: str = "transfer_head"):
    super().__init__(name=name)
    self.regime = regime
    self.num_classes = num_classes
    self.multi_label = multi_label
    # A variable, not a constant in the training step: every trial of a search traces the
    # same step (with XLA, the same program), whatever its coefficient. Not a Keras weight:
    # checkpoints and backups hold the same weights as before.
    self.l2_variable = tf.Variable(0.0, trainable=False, dtype=tf.float32,
                                   name="l2_coefficient")
    self.set_weight_decay(weight_decay=weight_decay, learning_rate=learning_rate)
    # The same for the backbone's batch-norm momentum (`set_batch_norm_momentum`): the
    # refit's (train+val) momentum runs on the search's trace.
    self.batch_norm_momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32,
                                           name="batch_norm_momentum")
    self._inference_fns = {}
    self.backbone = backbone
    self.backbone.trainable = regimes.get_regime_spec(regime).trains_backbone
    # float32 under any precision policy: the logits and the loss stay float32.
    self.head = keras.layers.Dense(num_classes, kernel_initializer="zeros",
                                   bias_initializer="zeros", dtype="float32", name="head")

  def features(self, images, training=False):
    # A frozen backbone always runs in inference mode, so batch norm uses moving statistics.
    return self.backbone(images, training=bool(training) and self.backbone.trainable)

  def call(self, images, training=False):
    return self.head(self.features(images, training=training))

  def set_weight_decay(self, *, weight_decay: float, learning_rate: Optional[float]) -> None:
    """A new trial's L2 coefficient (see the class), through its variable: no retrace."""
    self.weight_decay, self.learning_rate = weight_decay, learning_rate
    self.l2_coefficient = protocol.l2_coefficient(weight_decay=weight_decay,
                                                  learning_rate=learning_rate or 0.0)
    self.l2_variable.assign(self.l2_coefficient)

  def set_batch_norm_momentum(self, momentum: float, *, synchronized: bool = False) -> int:
    """Sets every Keras BatchNormalization of the backbone to `momentum`, through one
    variable they share (a new value re-traces nothing); returns how many layers."""
    self.batch_norm_momentum.assign(momentum)
    return set_batch_norm_momentum(self.backbone, self.batch_norm_momentum,
                                   synchronized=synchronized)

  def inference_fn(self, images_spec: tf.TensorSpec):
    """images -> logits in inference mode, traced once per input spec for the model's
    lifetime: every evaluation pass of a reused model runs one graph. The spec's batch
    dimension is None (a dataset's), so a short last batch runs it too."""
    key = (tuple(images_spec.shape.as_list()), images_spec.dtype.name)
    if key not in self._inference_fns:
      self._inference_fns[key] = tf.function(lambda images: self(images, training=False),
                                             input_signature=[images_spec])
    return self._inference_fns[key]

  def l2_penalty(self):
    """(l2_coefficient / 2) * the squared norm of every trainable kernel."""
    kernels = [w for w in self.trainable_weights if len(w.shape) >= 2]
    return 0.5 * self.l2_variable * tf.add_n([tf.reduce_sum(tf.square(w)) for w in kernels])

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    if self.multi_label and y is not None:
      y = tf.maximum(tf.cast(y, tf.float32), 0.0)  # Ignored entries (-1) train as negatives.
    loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                training=training)
    if training:  # Also at coefficient 0, so that every trial runs the same step.
      # Not `add_loss`: replicas run `call` in threads that share the layer's loss list.
      # Each replica adds its share, so the sum over replicas is the penalty once.
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      loss = loss + self.l2_penalty() / replicas
    return loss

  def make_loss(self) -> keras.losses.Loss:
    if self.multi_label:
      return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def set_batch_norm_momentum(layer: keras.layers.Layer, momentum: Union[float, tf.Variable],
                            *, synchronized: bool = False) -> int:
  """Configures every Keras BatchNormalization inside `layer`; returns how many.

  Args:
    layer: a model or layer holding BatchNormalization layers.
    momentum: the moving-statistics momentum (a float32 variable: read when the layers run;
      Keras computes batch norm in float32 under any precision).
    synchronized: compute batch statistics over the global batch of all replicas (so several
      replicas train like one device with the whole batch).

  TF Hub modules keep the momentum and per-replica statistics they were exported with.
  """
  count = 0
  for sub in getattr(layer, "layers", []):
    if isinstance(sub, keras.layers.BatchNormalization):
      sub.momentum = momentum
      sub.synchronized = synchronized
      count += 1
    else:
      count += set_batch_norm_momentum(sub, momentum, synchronized=synchronized)
  return count


def build_transfer_head(spec: backbones.BackboneSpec, *, regime: str, num_classes: int,
                        multi_label: bool = False, weights: Optional[str] = None,
                        weight_decay: float = 0.0, learning_rate: Optional[float] = None,
                        seed: int = 0) -> TransferHead:
  """Builds the backbone with the regime's init and wraps it.

  Args:
    spec: the backbone.
    regime: a `regimes.REGIMES` name.
    num_classes: number of classes.
    multi_label: per-class sigmoid outputs.
    weights: `imagenet`, `random`, a path, or None for the regime's default.
    weight_decay: the grid's weight decay (the L2 coefficient is weight_decay /
      learning_rate, see `TransferHead`).
    learning_rate: the initial learning rate it will be trained with.
    seed: seed of the random init.

  Returns:
    The model, built for `spec.image_size` inputs.
  """
  backbone = backbones.build_backbone(
      spec, weights=regimes.get_regime_spec(regime).resolve_weights(weights), seed=seed)
  model = TransferHead(backbone, num_classes=num_classes, regime=regime,
                       multi_label=multi_label, weight_decay=weight_decay,
                       learning_rate=learning_rate)
  model(tf.zeros((1, spec.image_size, spec.image_size, 3)))
  return model
