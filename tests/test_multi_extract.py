"""Decode once per sweep: one pass gives each backbone the one-model path's features, bit for
bit; a sweep of two backbones decodes each split once; a failed pass leaves no entry."""

import json
import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import dummy_data_images as dummy
from tests import fakes
from tfhub_transfer import features as features_lib
from tfhub_transfer import multi_extract
from tfhub_transfer import runners
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import pipeline
from tfhub_transfer.data.preprocessing import get_preprocess_fn
from tfhub_transfer.results import store as results


def _encoded_dataset(count, corrupt_at=None):
  images = [dummy.encode(dummy.gradient_image(20 + 3 * i, 30 - i, seed=i)) for i in range(count)]
  if corrupt_at is not None:
    images[corrupt_at] = b"not an image"
  return tf.data.Dataset.from_tensor_slices(
      {"image": tf.constant(images), "label": tf.range(count, dtype=tf.int64)})


def _feature_fn(seed):
  """A fixed random projection of the per-channel means and variances: depends on every
  pixel's value, so a difference in the preprocessed images shows in the features."""
  projection = tf.constant(np.random.default_rng(seed).normal(size=(6, 5)), tf.float32)

  @tf.function
  def feature_fn(images):
    mean, variance = tf.nn.moments(images, axes=[1, 2])
    return tf.concat([mean, variance], axis=1) @ projection

  return feature_fn


class SharedPassTest(tf.test.TestCase):

  def test_each_convention_gets_the_one_model_features_bit_for_bit(self):
    ds = _encoded_dataset(11)
    conventions = ("inception", "caffe", "torch", "unit", "inception")
    targets = [multi_extract.Target(_feature_fn(i), name, f"shared{i}")
               for i, name in enumerate(conventions)]
    cache_dir = os.path.join(self.get_temp_dir(), "cache")
    shared = multi_extract.extract_shared(ds, image_size=12, batch_size=4, targets=targets,
                                          cache_dir=cache_dir, description="test")
    for i, (target, entry) in enumerate(zip(targets, shared)):
      alone = features_lib.extract_features(
          target.feature_fn, pipeline.make_pipeline(
              ds, image_size=12, preprocess_fn=get_preprocess_fn(target.preprocessing),
              batch_size=4, training=False),
          cache_dir=cache_dir, key=f"alone{i}")
      self.assertEqual(entry.features.shape, (11, 5))
      np.testing.assert_array_equal(entry.features, alone.features, err_msg=target.preprocessing)
      np.testing.assert_array_equal(entry.labels, np.arange(11))
    # Different conventions do give different features (the comparison above can fail).
    self.assertFalse(np.array_equal(shared[0].features, shared[3].features))

  def test_a_failing_backbone_stops_the_pass_and_leaves_no_entry(self):
    calls = []

    def failing_fn(images):
      calls.append(1)
      if len(calls) == 2:
        raise tf.errors.ResourceExhaustedError(None, None, "out of memory (injected)")
      return tf.reduce_mean(images, axis=[1, 2])

    cache_dir = os.path.join(self.get_temp_dir(), "failing")
    targets = [multi_extract.Target(_feature_fn(0), "unit", "good"),
               multi_extract.Target(failing_fn, "inception", "bad")]
    with self.assertRaisesRegex(tf.errors.ResourceExhaustedError, "injected"):
      multi_extract.extract_shared(_encoded_dataset(16), image_size=8, batch_size=2,
                                   targets=targets, cache_dir=cache_dir)
    self.assertEmpty(os.listdir(cache_dir))  # Neither entry, complete or partial.

  def test_a_failing_input_pipeline_stops_the_pass_and_leaves_no_entry(self):
    cache_dir = os.path.join(self.get_temp_dir(), "corrupt")
    targets = [multi_extract.Target(_feature_fn(i), "unit", f"k{i}") for i in range(2)]
    with self.assertRaises(tf.errors.InvalidArgumentError):
      multi_extract.extract_shared(_encoded_dataset(12, corrupt_at=9), image_size=8,
                                   batch_size=2, targets=targets, cache_dir=cache_dir)
    self.assertEmpty(os.listdir(cache_dir))


class SweepTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("host", {}),
                                  ("resize_on_device", dict(fast_decode=True,
                                                            resize_on_device=True)))
  def test_two_backbone_sweep_decodes_each_split_once_with_the_one_model_features(
      self, decoding):
    tmp = self.get_temp_dir()
    hub = fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=8, grid=2)
    # Two registry backbones at one resolution, on a tiny SavedModel (`--weights=DIR`), each
    # with its own input convention: [-1, 1] and Caffe's BGR minus the mean.
    models = ("mobilenet_v2", "resnet_50")
    base = ExperimentConfig(model=models[0], dataset="digits", regime="logreg",
                            weights=hub, image_size=32, max_examples=40, batch_size=16,
                            l2_grid_size=4, data_dir=fakes.digits_data_dir(),
                            workdir=os.path.join(tmp, "sweep"), **decoding)
    grid = sweep.Grid(models=models, datasets=("digits",), regimes=("logreg",))
    with self.assertLogs(logger="absl", level="INFO") as logs:
      summary = sweep.run_grid(base, grid)
    self.assertEqual((summary.done, summary.failed), (2, 0))
    passes = [line for line in logs.output if "Decode pass over" in line and "done" not in line]
    self.assertLen(passes, 3, "\n".join(passes))  # train, val, test: one each.
    for split, line in zip(("train", "val", "test"), passes):
      self.assertIn(f"digits/{split}", line)
      self.assertIn("decoded once for 2 backbones", line)

    store = results.ResultsStore.for_workdir(base.workdir)
    for model in models:
      swept = store.get(*ExperimentConfig(**{**base.to_dict(), "model": model}).cell)
      self.assertTrue(all(entry["hit"] for entry in swept["feature_cache"].values()))
      # The same cell's features alone, in a workdir of its own: the one-model path (the
      # extraction a cell runs; its fit on equal features is the same).
      alone_config = ExperimentConfig(**{**base.to_dict(), "model": model,
                                         "workdir": os.path.join(tmp, "alone")})
      alone = runners.extract_cell_features(runners.load_cell(alone_config))
      for split in ("train", "val", "test"):
        a = features_lib.load_cached(*os.path.split(swept["feature_cache"][split]["path"]))
        b = alone[split]
        self.assertFalse(b.from_cache)
        self.assertEqual(os.path.basename(a.path), os.path.basename(b.path))  # Same key.
        np.testing.assert_array_equal(a.features, b.features, err_msg=f"{model} {split}")
        np.testing.assert_array_equal(a.labels, b.labels)
        with open(os.path.join(a.path, features_lib.META_FILE)) as f:
          key_parts = json.load(f)["key_parts"]
        self.assertEqual(key_parts.get("resize_on_device"), decoding.get("resize_on_device"))

  def test_a_failed_pass_leaves_each_cell_to_record_its_own_failure(self):
    tmp = self.get_temp_dir()
    manual = self.create_tempdir().full_path  # Stanford Cars must be placed here by hand.
    # ImageNet weights, never fetched: loading the data fails first, in the pass and in cells.
    base = ExperimentConfig(model="mobilenet_v2", dataset="stanford_cars", regime="logreg",
                            manual_dir=manual,
                            data_dir=os.path.join(tmp, "tfds"), workdir=os.path.join(tmp, "w"))
    grid = sweep.Grid(models=("mobilenet_v2", "resnet_50"), datasets=("stanford_cars",),
                      regimes=("logreg",))
    with self.assertLogs(logger="absl", level="WARNING") as logs:
      summary = sweep.run_grid(base, grid)
    self.assertEqual((summary.done, summary.failed), (0, 2))
    self.assertTrue(any("shared decode pass for stanford_cars failed" in line
                        for line in logs.output), logs.output)
    for record in results.ResultsStore.for_workdir(base.workdir).records():
      self.assertEqual(record["status"], "failed")
      self.assertIn("cars_train.tgz", record["error"])  # Each cell says what to place.

  def test_only_pretrained_logreg_cells_share_a_pass(self):
    base = ExperimentConfig(model="mobilenet_v2", dataset="digits", regime="logreg")
    group = multi_extract.decode_group(base)
    self.assertIsNotNone(group)
    self.assertEqual(multi_extract.decode_group(
        ExperimentConfig(**{**base.to_dict(), "model": "resnet_50"})), group)  # Both 224 px.
    for other in ({"weights": "random"},  # Each drawn from its cell's seed when it runs.
                  {"regime": "finetune"}, {"examples_per_class": 2}, {"seed": 1},
                  {"eval_preprocessing": "simclr"}, {"fast_decode": True}):
      self.assertNotEqual(multi_extract.decode_group(
          ExperimentConfig(**{**base.to_dict(), **other})), group, other)


if __name__ == "__main__":
  tf.test.main()
