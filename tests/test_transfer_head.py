"""TransferHead: the regime sets trainability and init; the head starts at zero."""

import os
import shutil
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from tests import fakes
from tfhub_transfer import backbones
from tfhub_transfer import transfer_head

_SPEC = backbones.get_backbone_spec("keras:MobileNet", model_kwargs={"alpha": 0.25},
                                    image_size=32)


class TransferHeadTest(parameterized.TestCase, tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    """One model per regime (and a multi-label one) for the class, the pretrained ones from
    one saved backbone (seed 7). Tests that change a shared model change what no other test
    reads (batch-norm momentum, a compiled loss)."""
    super().setUpClass()
    tmp = tempfile.mkdtemp(prefix="transfer_head.", dir=os.environ.get("TEST_TMPDIR"))
    cls.addClassCleanup(shutil.rmtree, tmp, ignore_errors=True)
    cls.source = backbones.build_backbone(_SPEC, weights="random", seed=7)
    cls.path = os.path.join(tmp, "pretrained.weights.h5")
    cls.source.save_weights(cls.path)
    cls.models = {regime: transfer_head.build_transfer_head(
        _SPEC, regime=regime, num_classes=5, weights=None if regime == "scratch" else cls.path)
                  for regime in ("logreg", "finetune", "scratch")}
    cls.multi = transfer_head.build_transfer_head(_SPEC, regime="scratch", num_classes=5,
                                                  multi_label=True)

  @parameterized.parameters(("logreg", False), ("finetune", True), ("scratch", True))
  def test_regime_sets_trainable(self, regime, trainable):
    model = self.models[regime]
    self.assertEqual(model.backbone.trainable, trainable)
    backbone_trainable = [w for w in model.trainable_weights
                          if not w.path.startswith("transfer_head/head")]
    self.assertEqual(bool(backbone_trainable), trainable)
    self.assertLen([w for w in model.trainable_weights
                    if w.path.startswith("transfer_head/head")], 2)

  def test_init_follows_regime(self):
    reference = self.source.get_weights()  # What the weights file was saved from.
    for regime in ("logreg", "finetune"):
      for got, want in zip(self.models[regime].backbone.get_weights(), reference,
                           strict=True):
        self.assertAllEqual(got, want)
    self.assertNotAllClose(self.models["scratch"].backbone.get_weights()[0], reference[0])

  def test_head_is_zero_initialised_softmax_or_sigmoid(self):
    images = tf.random.uniform((2, 32, 32, 3), -1, 1)
    for regime, model in self.models.items():
      self.assertAllEqual(model(images), np.zeros((2, 5)), regime)
    self.assertAllEqual(self.multi(images), np.zeros((2, 5)))
    self.assertIsInstance(self.models["scratch"].make_loss(),
                          keras.losses.SparseCategoricalCrossentropy)
    self.assertIsInstance(self.multi.make_loss(), keras.losses.BinaryCrossentropy)

  def test_logreg_backbone_runs_in_inference_mode(self):
    model = self.models["logreg"]
    before = [w.numpy().copy() for w in model.backbone.non_trainable_weights]
    images = tf.random.uniform((4, 32, 32, 3), -1, 1)
    inference = model(images, training=False)
    self.assertAllClose(model(images, training=True), inference)
    for b, w in zip(before, model.backbone.non_trainable_weights):
      self.assertAllEqual(b, w.numpy())  # Moving statistics untouched.

  def test_hub_backbone_regimes(self):
    path = fakes.make_tiny_savedmodel(self.get_temp_dir() + "/hub", feature_dim=4)
    spec = backbones.get_backbone_spec("hub:" + path, image_size=16)
    frozen = transfer_head.build_transfer_head(spec, regime="logreg", num_classes=2)
    tuned = transfer_head.build_transfer_head(spec, regime="finetune", num_classes=2)
    self.assertLen(frozen.trainable_weights, 2)
    self.assertLen(tuned.trainable_weights, 2 + 3)

  @parameterized.parameters((0.01, 1e-3), (0.1, 1e-5), (1e-4, 1e-6))
  def test_weight_decay_is_divided_by_the_learning_rate(self, learning_rate, weight_decay):
    # SimCLR B.8: the grid's weight decay divided by the learning rate is the L2 coefficient:
    # the loss adds (wd / lr / 2) * ||W||^2 over every kernel.
    model = transfer_head.build_transfer_head(_SPEC, regime="scratch", num_classes=3,
                                              weight_decay=weight_decay,
                                              learning_rate=learning_rate)
    model.head.kernel.assign(tf.ones_like(model.head.kernel))
    squares = (sum(float(np.sum(np.square(w))) for w in model.backbone.get_weights()
                   if w.ndim >= 2)  # Conv and depthwise kernels; not batch norm or biases.
               + np.prod(model.head.kernel.shape))  # The all-ones head kernel.
    expected = 0.5 * (weight_decay / learning_rate) * squares
    self.assertNear(float(model.l2_penalty()), expected, 1e-4 * expected)
    model.compile(loss=model.make_loss())
    labels, logits = tf.constant([0]), tf.zeros((1, 3))
    with_decay = model.compute_loss(y=labels, y_pred=logits, training=True)
    self.assertNear(float(with_decay), np.log(3) + expected, 1e-4 * expected)
    self.assertNear(float(model.compute_loss(y=labels, y_pred=logits, training=False)),
                    np.log(3), 1e-6)

  def test_weight_decay_needs_the_learning_rate(self):
    with self.assertRaisesRegex(ValueError, "weight_decay / learning_rate"):
      transfer_head.build_transfer_head(_SPEC, regime="scratch", num_classes=3,
                                        weight_decay=0.01)
    for regime, model in self.models.items():  # Built without weight_decay.
      self.assertEqual(model.l2_coefficient, 0.0, regime)

  def test_ignored_multi_label_entries_train_as_negatives(self):
    model = self.multi
    model.compile(loss=model.make_loss())
    logits = tf.constant([[2.0, -1.0, 0.5, 0.0, 0.0]])
    ignored = model.compute_loss(y=tf.constant([[1.0, -1.0, 0.0, 0.0, 0.0]]), y_pred=logits)
    # Mean over classes of the sigmoid cross-entropy with targets (1, 0, 0, 0, 0), by hand.
    by_hand = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)),
                       np.log1p(np.exp(0.5)), np.log1p(np.exp(0.0)), np.log1p(np.exp(0.0))])
    self.assertNear(float(ignored), by_hand, 1e-5)

  def test_batch_norm_momentum_reaches_every_layer(self):
    model = self.models["scratch"]
    count = transfer_head.set_batch_norm_momentum(model.backbone, 0.95)
    self.assertEqual(count, 27)  # MobileNet v1: one after the stem, two per block x 13.
    self.assertTrue(all(layer.momentum == 0.95 for layer in model.backbone.layers
                        if isinstance(layer, keras.layers.BatchNormalization)))


if __name__ == "__main__":
  tf.test.main()
