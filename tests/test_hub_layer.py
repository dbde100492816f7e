"""The Keras 3 Hub layer over a reusable SavedModel written by the test."""

import keras
import numpy as np
import tensorflow as tf

from tests import fakes
from tfhub_transfer import hub_layer


class HubModuleTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.path = fakes.make_tiny_savedmodel(self.get_temp_dir() + "/tiny", feature_dim=6)
    rng = np.random.default_rng(0)
    self.images = rng.uniform(0, 1, (8, 16, 16, 3)).astype("float32")
    self.labels = np.arange(8) % 3

  def _fit(self, layer):
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(layer(inputs)))
    model.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    before = {w.path: w.numpy().copy() for w in layer.weights}
    model.fit(self.images, self.labels, epochs=2, batch_size=4, verbose=0)
    return {w.path: not np.allclose(before[w.path], w.numpy()) for w in layer.weights}

  def test_trainable_module_trains(self):
    layer = hub_layer.HubModule(self.path, trainable=True)
    self.assertLen(layer.trainable_weights, 3)  # kernel, gamma, beta
    self.assertLen(layer.non_trainable_weights, 2)  # moving mean and variance
    changed = self._fit(layer)
    self.assertTrue(all(changed.values()), changed)  # Moving statistics too: training=True.

  def test_frozen_module_does_not_change(self):
    layer = hub_layer.HubModule(self.path, trainable=False)
    self.assertEmpty(layer.trainable_weights)
    changed = self._fit(layer)
    self.assertFalse(any(changed.values()), changed)

  def test_keras_variables_share_the_module_variables(self):
    layer = hub_layer.HubModule(self.path, trainable=True)
    kernel = [w for w in layer.weights if "kernel" in w.path][0]
    kernel.assign(tf.zeros_like(kernel))
    self.assertAllClose(layer(self.images), np.zeros((8, 6)) + layer(self.images)[0])

  def test_random_init_replaces_pretrained_values(self):
    pretrained = hub_layer.HubModule(self.path)
    fresh = hub_layer.HubModule(self.path, random_init=True, seed=1)
    by_name = {w.name: w.numpy() for w in fresh.weights}
    for w in pretrained.weights:
      if "kernel" in w.name:
        self.assertNotAllClose(w.numpy(), by_name[w.name])
        fan_in = 3 * 3 * 3
        self.assertNear(float(np.std(by_name[w.name])), np.sqrt(2 / fan_in), 0.15)
      if "moving_variance" in w.name or "gamma" in w.name:
        self.assertAllEqual(by_name[w.name], np.ones_like(by_name[w.name]))

  def test_missing_module_says_where_to_put_it(self):
    with self.assertRaisesRegex(FileNotFoundError, "TFHUB_CACHE_DIR.*--weights=FOLDER"):
      hub_layer.HubModule("https://tfhub.dev/google/imagenet/inception_v1/feature_vector/5")


if __name__ == "__main__":
  tf.test.main()
