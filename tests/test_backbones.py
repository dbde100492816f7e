"""The backbone zoo: every entry builds and yields features of its advertised size."""

import csv
import importlib.resources
import os
import re
import shutil
import tempfile
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
from sklearn.datasets import load_sample_images
import tensorflow as tf

from tests import fakes
from tests import shared_data
from tfhub_transfer import backbones

# Adding a backbone to the registry without adding it here fails test_registry_is_complete.
PAPER_NETWORKS = (
    "inception_v1", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v2",
    "resnet_50", "resnet_101", "resnet_152", "densenet_121", "densenet_169", "densenet_201",
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v2_140", "nasnet_mobile", "nasnet_large")

# The smallest input each architecture accepts, to keep the test fast on CPU.
_SMALL_SIZE = {"inception_v3": 75, "inception_v4": 75, "inception_resnet_v2": 75}


def _densenet_width(blocks, *, growth=32, stem=64, compression=0.5):
  """Channels after the last dense block (Huang et al. 2017, Table 1 and Section 3: each
  layer adds `growth` channels, each transition layer keeps `compression` of them)."""
  width = stem
  for i, layers in enumerate(blocks):
    width += layers * growth
    if i < len(blocks) - 1:
      width = int(width * compression)
  return width


# The published width of each network's pooled penultimate features, from the papers and
# model pages (not from the registry): what each spec's feature_dim must say.
PUBLISHED_FEATURE_DIM = {
    # TF Hub model pages of imagenet/inception_v1 and imagenet/inception_v2 feature_vector:
    # 1024-d feature vectors (Szegedy et al. 2015 Table 1 and Ioffe & Szegedy 2015 Figure 5:
    # a 1 x 1 x 1024 average pool).
    "inception_v1": 1024,
    "bn_inception": 1024,
    "inception_v3": 2048,  # Szegedy et al. 2016 (Rethinking Inception), Table 1: 8x8x2048.
    "inception_v4": 1536,  # Szegedy et al. 2017 (Inception-v4), Figure 9: average pool 1536.
    # TF-slim inception_resnet_v2.py: Conv2d_7b_1x1 has 1536 filters before the pool.
    "inception_resnet_v2": 1536,
    # He et al. 2016, Table 1: conv5_x ends in a 1x1, 2048 convolution at 50, 101, 152 layers.
    "resnet_50": 2048,
    "resnet_101": 2048,
    "resnet_152": 2048,
    "densenet_121": _densenet_width((6, 12, 24, 16)),  # 1024
    "densenet_169": _densenet_width((6, 12, 32, 32)),  # 1664
    "densenet_201": _densenet_width((6, 12, 48, 32)),  # 1920
    "mobilenet_v1": 1024,  # Howard et al. 2017, Table 1: the last 1x1 conv has 1024 filters.
    # Sandler et al. 2018, Table 2: a final 1x1 conv of 1280; its text keeps that layer at
    # 1280 only for width multipliers below 1, so at 1.4 it has 1.4 x 1280.
    "mobilenet_v2": 1280,
    "mobilenet_v2_140": int(1.4 * 1280),  # 1792
    # Zoph et al. 2018 name them "NASNet-A (N @ P)", P the penultimate layer's filters:
    # NASNet-A (4 @ 1056) and NASNet-A (6 @ 4032), Tables 2 and 3.
    "nasnet_mobile": 1056,
    "nasnet_large": 4032,
}

class RegistryTest(parameterized.TestCase):

  def test_registry_is_complete(self):
    self.assertEqual(tuple(backbones.BACKBONES), PAPER_NETWORKS)

  def test_paper_top1_matches_shipped_reference(self):
    path = (importlib.resources.files("tfhub_transfer.report")
            / "reference_data/kornblith2019_networks.csv")
    with path.open() as f:
      reference = {row["network"]: float(row["imagenet_top1"]) for row in csv.DictReader(f)}
    self.assertEqual(set(reference), set(PAPER_NETWORKS))
    for name, spec in backbones.BACKBONES.items():
      self.assertAlmostEqual(spec.paper_top1, reference[name], msg=name)

  def test_checkpoint_top1_is_the_published_one(self):
    # Typed in from keras.io/api/applications and the TF-Slim tables, not read from the code.
    published = {"inception_v1": 69.8, "bn_inception": 73.9, "inception_v3": 77.9,
                 "inception_resnet_v2": 80.3, "resnet_50": 74.9, "resnet_101": 76.4,
                 "resnet_152": 76.6, "densenet_121": 75.0, "densenet_169": 76.2,
                 "densenet_201": 77.3, "mobilenet_v1": 70.4, "mobilenet_v2": 71.3,
                 "mobilenet_v2_140": 75.0, "nasnet_mobile": 74.4, "nasnet_large": 82.5,
                 "inception_v4": 80.2}  # TF-Slim table, inception_v4_2016_09_09.
    for name, spec in backbones.BACKBONES.items():
      self.assertEqual(spec.checkpoint_top1, published.get(name), name)
      self.assertEqual(bool(spec.checkpoint_top1_source), name in published, name)
    # Another network than the published one (kwargs, resolution) has no published top-1.
    self.assertIsNone(backbones.get_backbone_spec(
        "mobilenet_v2", model_kwargs={"alpha": 0.5}).checkpoint_top1)
    self.assertIsNone(backbones.get_backbone_spec("resnet_50", image_size=64).checkpoint_top1)
    self.assertEqual(backbones.get_backbone_spec("resnet_50", image_size=224).checkpoint_top1,
                     74.9)
    # It describes the checkpoint and does not change the features: not in the cache key.
    self.assertNotIn("checkpoint_top1", backbones.BACKBONES["resnet_50"].to_dict())
    self.assertIn("74.9", backbones.format_models_table())

  def test_unknown_model_lists_choices(self):
    with self.assertRaisesRegex(ValueError, r"Unknown --model='resnet50'.*resnet_50.*hub:"):
      backbones.get_backbone_spec("resnet50")

  def test_custom_specs(self):
    spec = backbones.get_backbone_spec("keras:MobileNet", model_kwargs={"alpha": 0.25},
                                       image_size=96)
    self.assertEqual((spec.source, spec.keras_app, dict(spec.keras_kwargs), spec.image_size),
                     ("keras", "MobileNet", {"alpha": 0.25}, 96))
    self.assertEqual(spec.preprocessing, "keras.applications.mobilenet")
    hub_spec = backbones.get_backbone_spec("hub:/some/dir")
    self.assertEqual((hub_spec.source, hub_spec.hub_handle), ("hub", "/some/dir"))
    with self.assertRaisesRegex(ValueError, "Unknown Keras application 'NoSuchNet'"):
      backbones.get_backbone_spec("keras:NoSuchNet")


class BuildTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    """A saved MobileNet 0.25 (seed 3) at 32 px for the weights-file tests."""
    super().setUpClass()
    tmp = tempfile.mkdtemp(prefix="backbones.", dir=os.environ.get("TEST_TMPDIR"))
    cls.addClassCleanup(shutil.rmtree, tmp, ignore_errors=True)
    cls.small_spec = backbones.get_backbone_spec("keras:MobileNet", model_kwargs={"alpha": 0.25},
                                                 image_size=32)
    cls.small = backbones.build_backbone(cls.small_spec, weights="random", seed=3)
    cls.small_path = os.path.join(tmp, "mobilenet.weights.h5")
    cls.small.save_weights(cls.small_path)

  def test_advertised_feature_dims_are_the_published_ones(self):
    self.assertCountEqual(PUBLISHED_FEATURE_DIM, PAPER_NETWORKS)
    self.assertEqual({name: spec.feature_dim for name, spec in backbones.BACKBONES.items()},
                     PUBLISHED_FEATURE_DIM)

  def test_hub_specs_name_the_published_modules(self):
    # TF-slim's "Inception v2" is BN-Inception; TF Hub image modules take 224 x 224 inputs
    # with values in [0, 1] (TF Hub's common signature for images).
    for name, module in (("inception_v1", "inception_v1"), ("bn_inception", "inception_v2")):
      spec = backbones.BACKBONES[name]
      self.assertEqual((spec.source, spec.image_size, spec.preprocessing),
                       (backbones.HUB, 224, "unit"), name)
      self.assertStartsWith(spec.hub_handle,
                            f"https://tfhub.dev/google/imagenet/{module}/feature_vector/")

  @parameterized.named_parameters((name, name) for name in PAPER_NETWORKS)
  def test_builds_with_advertised_feature_dim(self, name):
    size = _SMALL_SIZE.get(name, 32)
    spec = backbones.get_backbone_spec(name, image_size=size)
    # Drops Keras' global state, and with it the variables left uninitialised below; no
    # gc.collect (0.2 s a call, for a heap that is mostly TensorFlow's).
    self.addCleanup(keras.backend.clear_session, free_memory=False)
    if spec.source in (backbones.KERAS, backbones.BUILT):
      # The width is the architecture's, not its weights': the network is built whole (every
      # layer, every variable with its shape) in a StatelessScope that leaves the variables'
      # initial values undrawn. Drawing them was most of the cost (85M values for
      # NASNet-Large). The output shape is what the layers compute from the input's; a
      # forward pass through build_backbone's networks runs in
      # test_weights_path_loads_saved_file (Keras) and test_inception_v4 (built).
      with keras.StatelessScope(initialize_variables=False):
        model = backbones.build_backbone(spec, weights="random")
      self.assertEqual(tuple(model.output_shape), (None, PUBLISHED_FEATURE_DIM[name]))
    elif spec.source == backbones.HUB:
      # The real module is not offline: a fake of the published width, loaded through the
      # real SavedModel path, must come out unchanged (the spec's width is checked above).
      images = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype("float32")
      path = fakes.make_tiny_savedmodel(self.create_tempdir().full_path + "/m",
                                        feature_dim=PUBLISHED_FEATURE_DIM[name])
      model = backbones.build_backbone(spec, weights=path)
      features = model(images, training=False)
      self.assertEqual(tuple(features.shape), (2, PUBLISHED_FEATURE_DIM[name]))
      np.testing.assert_allclose(features, tf.saved_model.load(path)(images, training=False),
                                 rtol=1e-6, atol=1e-6)
      self.assertGreater(np.abs(features[0] - features[1]).max(), 1e-3)  # Not constant.
    else:
      self.fail(f"{name}: no build check for source {spec.source!r}")

  def test_inception_v4_imagenet_names_the_slim_checkpoint(self):
    home = self.create_tempdir().full_path
    with mock.patch.dict(os.environ, {"KERAS_HOME": home}):
      with self.assertRaisesRegex(
          FileNotFoundError,
          r"--model=inception_v4 are the TF-slim checkpoint inception_v4_2016_09_09\.tar\.gz "
          r"\(http://download\.tensorflow\.org/models/inception_v4_2016_09_09\.tar\.gz\); "
          rf"nothing is at {re.escape(home)}/models/inception_v4\.ckpt.*"
          r"--weights=PATH/inception_v4\.ckpt"):
        backbones.build_backbone(backbones.BACKBONES["inception_v4"], weights="imagenet")

  def test_built_network_takes_no_model_kwargs(self):
    spec = backbones.get_backbone_spec("inception_v4", model_kwargs={"alpha": 0.5})
    with self.assertRaisesRegex(ValueError, r'--model_kwargs=\{"alpha":0\.5\} only applies'):
      backbones.build_backbone(spec, weights="random")

  def test_missing_weights_path(self):
    with self.assertRaisesRegex(FileNotFoundError, "no such file"):
      backbones.build_backbone(backbones.BACKBONES["mobilenet_v2"], weights="/nope.h5")

  def test_weights_path_loads_saved_file(self):
    spec, source, path = self.small_spec, self.small, self.small_path
    loaded = backbones.build_backbone(spec, weights=path, seed=99)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images), source(images), rtol=1e-5, atol=1e-5)
    for got, want in zip(loaded.get_weights(), source.get_weights()):
      np.testing.assert_array_equal(got, want)
    other = backbones.build_backbone(spec, weights="random", seed=99)
    self.assertFalse(np.array_equal(other.get_weights()[0], source.get_weights()[0]))

  def test_wrong_weights_file_names_the_fix(self):
    spec = backbones.get_backbone_spec("keras:MobileNet", model_kwargs={"alpha": 0.5},
                                       image_size=32)
    with self.assertRaisesRegex(ValueError, "does not fit --model=keras:MobileNet"):
      backbones.build_backbone(spec, weights=self.small_path)  # Saved at alpha 0.25.

  @shared_data.uses_shared
  def test_real_imagenet_weights_give_meaningful_features(self):
    weights = shared_data.path(shared_data.MOBILENET_WEIGHTS)
    spec = backbones.get_backbone_spec("keras:MobileNet", model_kwargs={"alpha": 0.25},
                                       image_size=96)
    model = backbones.build_backbone(spec, weights=weights)
    # scikit-learn's two bundled photographs (a temple, a flower), and a mirror image.
    photos = tf.image.resize(np.stack(load_sample_images().images).astype("float32"),
                             (96, 96))
    batch = tf.concat([photos[:1], photos[:1, :, ::-1], photos[1:2]], 0) / 127.5 - 1.0
    f = tf.math.l2_normalize(model(batch), axis=1).numpy()
    self.assertGreater(f[0] @ f[1], 0.8)  # The same scene, mirrored: close.
    self.assertLess(f[0] @ f[2], 0.6)  # Different scenes: apart.
    self.assertEqual(f.shape, (3, 256))


if __name__ == "__main__":
  tf.test.main()
