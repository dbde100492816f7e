"""`--precision` and `--jit_compile`: a few training steps in each setting agree with float32;
the head and the loss stay float32; float16 losses are scaled; both key and record a cell."""

import json
import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from tests import fakes
from tfhub_transfer import experiment
from tfhub_transfer import features
from tfhub_transfer import training
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.transfer_head import TransferHead

STEPS = 6
# How far a setting's per-step training losses and final logits may be from float32's (max
# absolute difference; the losses go from 1.63 to 1.33, the logits are about 0.5). bfloat16
# keeps 8 bits of mantissa (relative rounding 2**-9 = 0.002 per op), float16 11 bits (2**-12);
# XLA in float32 only reorders float32 arithmetic. Measured on CPU (TF 2.21): bfloat16 3e-4
# on the losses and 6e-3 on the logits, float16 6e-5 and 2e-4, XLA 1e-7 and 7e-8.
TOLERANCE = {("float32", True): 1e-5, ("mixed_bfloat16", False): 0.02,
             ("mixed_float16", False): 0.002, ("mixed_bfloat16", True): 0.02}


def _tiny_backbone():
  """conv -> batch norm -> ReLU -> conv -> ReLU -> global average pool, random init."""
  inputs = keras.Input((16, 16, 3))
  x = keras.layers.Conv2D(8, 3, strides=2, kernel_initializer=keras.initializers.HeNormal(0))(
      inputs)
  x = keras.layers.BatchNormalization()(x)
  x = keras.layers.ReLU()(x)
  x = keras.layers.Conv2D(16, 3, kernel_initializer=keras.initializers.HeNormal(1))(x)
  x = keras.layers.ReLU()(x)
  return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny")


def _train(precision, jit_compile):
  """Losses of STEPS steps and the final logits on held-out images, from a fixed init."""
  with training.precision_policy(precision):
    model = TransferHead(_tiny_backbone(), num_classes=4, regime="finetune",
                         weight_decay=1e-3, learning_rate=0.1)
    model(tf.zeros((1, 16, 16, 3)))
  # The head is zero-initialised; start it elsewhere so that the backbone gets gradients.
  model.head.kernel.assign(np.random.default_rng(0).normal(0, 0.3, (16, 4)))
  training.compile_model(model, learning_rate=0.1, train_steps=STEPS, jit_compile=jit_compile)
  rng = np.random.default_rng(1)
  images = tf.constant(rng.uniform(-1, 1, (8, 16, 16, 3)), tf.float32)
  labels = tf.constant(np.arange(8) % 4, tf.int64)
  losses = [float(model.train_on_batch(images, labels)) for _ in range(STEPS)]
  held_out = tf.constant(rng.uniform(-1, 1, (8, 16, 16, 3)), tf.float32)
  return model, np.array(losses), model(held_out, training=False).numpy()


class PrecisionTrainingTest(parameterized.TestCase, tf.test.TestCase):
  """Each setting trained once for the class (`trained`), checked by every test that needs it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.reference = _train("float32", False)
    cls.runs = {}

  def trained(self, precision, jit_compile):
    """`_train(precision, jit_compile)`, computed once per class."""
    if (precision, jit_compile) not in self.runs:
      self.runs[precision, jit_compile] = _train(precision, jit_compile)
    return self.runs[precision, jit_compile]

  @parameterized.parameters(*TOLERANCE)
  def test_a_few_steps_agree_with_float32(self, precision, jit_compile):
    _, ref_losses, ref_logits = self.reference
    model, losses, logits = self.trained(precision, jit_compile)
    self.assertEqual(model.jit_compile, jit_compile)
    tolerance = TOLERANCE[precision, jit_compile]
    self.assertLess(ref_losses[-1], ref_losses[0] - 0.05)  # float32 itself learns.
    np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=tolerance)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=tolerance)

  @parameterized.parameters("mixed_bfloat16", "mixed_float16")
  def test_backbone_computes_in_half_precision_head_and_loss_in_float32(self, precision):
    model, _, logits = self.trained(precision, False)
    half = precision.split("_")[1]
    self.assertEqual(model.backbone.compute_dtype, half)
    self.assertEqual(model.features(tf.zeros((2, 16, 16, 3))).dtype, half)
    self.assertEqual(model.head.compute_dtype, "float32")
    self.assertEqual(logits.dtype, np.float32)
    for weight in model.weights:  # Variables stay float32 (mixed precision, not half).
      self.assertEqual(weight.dtype, "float32", weight.path)
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    self.assertEqual(scaled, precision == "mixed_float16")
    # The policy applied to the layers built inside the scope only.
    self.assertEqual(keras.mixed_precision.global_policy().name, "float32")

  def test_mixed_precision_features_are_close_to_float32_features(self):
    images = tf.constant(np.random.default_rng(2).uniform(-1, 1, (4, 16, 16, 3)), tf.float32)
    out = {}
    for precision in ("float32", "mixed_bfloat16"):
      with training.precision_policy(precision):
        model = TransferHead(_tiny_backbone(), num_classes=4, regime="logreg")
      feature_fn = features.make_feature_fn(model, tf.distribute.get_strategy(),
                                            jit_compile=precision != "float32")
      out[precision] = np.asarray(feature_fn(images), np.float32)
    np.testing.assert_allclose(out["mixed_bfloat16"], out["float32"], rtol=0.03, atol=0.01)


class PrecisionCellTest(tf.test.TestCase):

  def _config(self, **overrides):
    tmp = self.get_temp_dir()
    hub = os.path.join(tmp, "hub")
    if not os.path.exists(hub):
      fakes.make_tiny_savedmodel(hub, feature_dim=8)
    fields = dict(model="hub:" + hub, dataset="digits", regime="finetune", image_size=16,
                  workdir=os.path.join(tmp, "work"), data_dir=fakes.digits_data_dir(),
                  max_examples=24, batch_size=8, train_steps=2, learning_rates=(0.01,),
                  weight_decays=(0.0,))
    return ExperimentConfig(**{**fields, **overrides})

  def test_jit_compiled_cell_is_recorded_and_keyed(self):
    # A logreg cell: its backbone's features computed by an XLA-compiled function. XLA's
    # training step (the costlier compile) agrees with float32 in PrecisionTrainingTest.
    config = self._config(regime="logreg", l2_grid_size=3, jit_compile=True)
    record = experiment.run_experiment(config).record
    self.assertEqual(record["status"], "ok")
    self.assertEqual(record["config"]["jit_compile"], True)
    self.assertEqual(record["protocol_settings"]["jit_compile"], True)
    self.assertEqual(record["protocol_settings"]["precision"], "float32")
    self.assertNotEqual(config.protocol, self._config(regime="logreg").protocol)
    for entry in record["feature_cache"].values():  # Features keyed apart from float32's.
      with open(os.path.join(entry["path"], features.META_FILE)) as f:
        self.assertIs(json.load(f)["key_parts"]["jit_compile"], True)

  def test_hub_backbone_in_mixed_precision_fails_with_what_to_do(self):
    with self.assertRaisesRegex(experiment.ExperimentFailed,
                                "--precision=mixed_bfloat16.*float32.*TF Hub SavedModel.*"
                                "keras.applications"):
      experiment.run_experiment(self._config(precision="mixed_bfloat16"))


if __name__ == "__main__":
  tf.test.main()
