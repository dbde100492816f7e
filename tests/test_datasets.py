"""The dataset registry and `loading.load_splits`, through TFDS (mocked or real) and folders."""

import collections
import csv
import dataclasses
import json
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import dummy_data_images as dummy
from tfhub_transfer import metrics
from tfhub_transfer.data import datasets
from tfhub_transfer.data import loading
from tfhub_transfer.data import pipeline
from tfhub_transfer.data import preprocessing
from tfhub_transfer.data import readers

PAPER_DATASETS = ("food101", "cifar10", "cifar100", "birdsnap", "sun397", "stanford_cars",
                  "fgvc_aircraft", "voc2007", "dtd", "oxford_pets", "caltech101",
                  "oxford_flowers")
# Enough mock examples that some class appears twice (a held-out class keeps one in train).
_MOCK_EXAMPLES = 100
_CSV = os.path.join(os.path.dirname(os.path.dirname(datasets.__file__)), "report",
                    "reference_data", "kornblith2019_datasets.csv")


def _examples(ds):
  """(encoded image bytes, label) pairs of a split, in order. Read in batches: one
  example at a time cost about 0.3 ms each in Python (1 s for digits' four splits)."""
  return [pair for batch in tfds.as_numpy(ds.batch(4096))
          for pair in zip(batch["image"], batch["label"])]


def _images(ds):
  return [image for image, _ in _examples(ds)]


class RegistryTest(parameterized.TestCase):

  def test_registry_is_the_paper_datasets_plus_digits(self):
    self.assertEqual(list(datasets.DATASETS), list(PAPER_DATASETS) + ["digits"])
    self.assertTrue(datasets.DATASETS["digits"].smoke)
    self.assertFalse(any(datasets.DATASETS[name].smoke for name in PAPER_DATASETS))

  def test_specs_match_the_papers_table(self):
    with open(_CSV) as f:
      rows = {row["dataset"]: row for row in csv.DictReader(f)}
    self.assertCountEqual(rows, PAPER_DATASETS)
    for name, row in rows.items():
      spec = datasets.DATASETS[name]
      self.assertEqual(spec.num_classes, int(row["classes"]), name)
      self.assertEqual(spec.paper_train_size, int(row["train_size"]), name)
      self.assertEqual(spec.paper_test_size, int(row["test_size"]), name)
      self.assertEqual(spec.metric, row["metric"], name)
      self.assertEqual(spec.heldout_val, row["validation"].startswith("held-out"), name)

  @parameterized.parameters(*datasets.DATASETS)
  def test_spec_is_consistent(self, name):
    spec = datasets.DATASETS[name]
    self.assertIn(spec.metric, metrics.METRICS)
    self.assertBetween(spec.val_fraction, 0.05, 0.5)
    self.assertEqual(spec.multi_label, spec.metric == datasets.MAP_11POINT)
    if spec.multi_label:
      self.assertIsNotNone(spec.val_split, "multi-label sets cannot be stratified")
    self.assertIn(spec.source, (datasets.TFDS, datasets.PROJECT_BUILDER))

  @parameterized.parameters(*datasets.DATASETS)
  def test_tfds_builder_features_match_the_spec(self, name):
    spec = datasets.DATASETS[name]
    builder = tfds.builder(spec.tfds_name, data_dir=self.create_tempdir().full_path)
    label = readers.check_features(spec, builder)  # Raises on a mismatch.
    self.assertEqual(label.num_classes, spec.num_classes)
    self.assertIsInstance(builder.info.features[spec.image_key], tfds.features.Image)

  def test_unknown_name_lists_the_valid_ones(self):
    with self.assertRaisesRegex(ValueError, "'imagenet'.*food101, cifar10.*digits.*folder:"):
      datasets.get_dataset_spec("imagenet")

  def test_table_lists_every_dataset_with_sizes_and_status(self):
    table = datasets.format_datasets_table()
    for spec in datasets.DATASETS.values():
      self.assertIn(spec.name, table)
      self.assertIn(spec.tfds_name, table)
    self.assertIn("digits (smoke)", table)
    self.assertIn("75,750", table)
    self.assertIn("map_11point", table)
    self.assertIn("manual: TFDS URL dead", table)


def _manual_placeholders(spec, path):
  """Empty files named like the real manual files: mock_data skips preparation, so they only
  satisfy the presence check (the real builds are in test_builders and below)."""
  for name in spec.manual_files:
    if name.endswith("/"):
      os.makedirs(os.path.join(path, name), exist_ok=True)
    else:
      open(os.path.join(path, name), "w").close()
  return path


class MockedTfdsLoadTest(parameterized.TestCase):
  """Each paper dataset through its real TFDS builder, features and splits, on mock data."""

  def test_every_paper_dataset_is_covered_here(self):
    self.assertCountEqual(PAPER_DATASETS, [n for n in datasets.DATASETS if n != "digits"])

  @parameterized.parameters(*PAPER_DATASETS)
  def test_loads_and_yields_batches(self, name):
    spec = datasets.get_dataset_spec(name)
    manual_dir = _manual_placeholders(spec, self.create_tempdir().full_path)
    with tfds.testing.mock_data(num_examples=_MOCK_EXAMPLES):
      splits = loading.load_splits(spec, data_dir=self.create_tempdir().full_path,
                                    manual_dir=manual_dir, seed=0)
      # Every mock split has the same random examples; a held-out split parts those of train
      # (how many go to val depends on the random labels: a class keeps one in train).
      pool = _MOCK_EXAMPLES * (1 if spec.heldout_val else 2)
      self.assertGreater(splits.sizes["val"], 0)
      self.assertEqual(splits.sizes["trainval"], pool)
      self.assertEqual(splits.sizes["train"] + splits.sizes["val"], pool)
      self.assertEqual(splits.sizes["test"], _MOCK_EXAMPLES)
      self.assertEqual(splits.info["sizes"], splits.sizes)
      self.assertEqual("heldout_seed" in splits.info, spec.heldout_val)
      for split, size in splits.sizes.items():
        examples = _examples(getattr(splits, split))
        self.assertLen(examples, size, split)
        self.assertIsInstance(examples[0][0], bytes)  # Still encoded.
      self.assertLen(splits.class_names, spec.num_classes)
      batches = list(pipeline.make_pipeline(
          splits.test, image_size=16, preprocess_fn=preprocessing.get_preprocess_fn("unit"),
          batch_size=64, training=False))
      train_x, _ = next(iter(pipeline.make_pipeline(
          splits.train, image_size=16, preprocess_fn=preprocessing.get_preprocess_fn("unit"),
          batch_size=4, training=True, seed=1)))
    self.assertEqual([tuple(x.shape) for x, _ in batches], [(64, 16, 16, 3), (36, 16, 16, 3)])
    self.assertEqual(train_x.shape, (4, 16, 16, 3))
    labels = np.concatenate([y.numpy() for _, y in batches])
    if spec.multi_label:
      self.assertEqual(labels.shape, (_MOCK_EXAMPLES, spec.num_classes))
      self.assertEqual(labels.dtype, np.float32)
      # -1: a class annotated only as difficult (mock data draws both label lists at random).
      self.assertTrue(np.all((labels == 0) | (labels == 1) | (labels == -1)))
    else:
      self.assertEqual(labels.dtype, np.int64)
      self.assertTrue(np.all((labels >= 0) & (labels < spec.num_classes)))
    self.assertBetween(float(tf.reduce_min(batches[0][0])), 0.0, 1.0)
    self.assertBetween(float(tf.reduce_max(batches[0][0])), 0.0, 1.0)

  @parameterized.parameters("voc2007", "dtd", "oxford_pets")
  def test_examples_per_class_with_official_and_heldout_validation(self, name):
    # Mock data draws other random labels when only the label feature is read, and every
    # mock split holds the same images, so balance and disjointness are checked on digits
    # and folders (real data) and in test_splits.
    spec = datasets.get_dataset_spec(name)
    with tfds.testing.mock_data(num_examples=_MOCK_EXAMPLES):
      full = loading.load_splits(spec, data_dir=self.create_tempdir().full_path, seed=0)
      low = loading.load_splits(spec, data_dir=self.create_tempdir().full_path, seed=0,
                                 examples_per_class=1)
      self.assertEqual(_images(low.val), _images(full.val))
      self.assertEqual(_images(low.test), _images(full.test))
      train = _images(low.train)
      self.assertContainsSubset(train, _images(full.train))
    self.assertLess(low.sizes["train"], full.sizes["train"])
    self.assertEqual(low.sizes["trainval"], low.sizes["train"])
    self.assertEqual(low.info["subset"]["size"], low.sizes["train"])
    self.assertEqual(low.info["subset"]["rule"].startswith("multi-label"), spec.multi_label)

  def test_multi_label_labels_are_multi_hot_rows(self):
    spec = datasets.get_dataset_spec("voc2007")
    with tfds.testing.mock_data(num_examples=_MOCK_EXAMPLES):
      reader = readers.TfdsReader(spec, data_dir=self.create_tempdir().full_path,
                                  manual_dir=None)
      labels = reader.labels("train")
    self.assertEqual(labels.shape, (_MOCK_EXAMPLES, 20))
    self.assertTrue(np.all((labels == 0) | (labels == 1) | (labels == -1)))  # -1: difficult.

  def test_multi_hot_is_the_union_of_object_labels(self):
    spec = datasets.get_dataset_spec("voc2007")
    to_label = readers.make_label_fn(spec)
    label = to_label({"labels_no_difficult": tf.constant([3, 17, 3], tf.int64),
                      "labels": tf.constant([3, 17, 3, 5], tf.int64)}).numpy()
    expected = np.zeros(20, np.float32)
    expected[[3, 17]] = 1.0
    expected[5] = -1.0  # Annotated, but only as difficult.
    np.testing.assert_array_equal(label, expected)
    empty = to_label({"labels_no_difficult": tf.zeros([0], tf.int64),
                      "labels": tf.zeros([0], tf.int64)}).numpy()
    np.testing.assert_array_equal(empty, np.zeros(20, np.float32))


class FakeVocDifficult(tfds.core.GeneratorBasedBuilder):
  """VOC2007's label features, on hand-made examples: (labels, labels_no_difficult)."""

  VERSION = tfds.core.Version("1.0.0")
  EXAMPLES = {
      "train": [([1, 1, 4], [1, 4]), ([2], [])],
      "validation": [([0], [0])],
      # Image 0: a clear class-3 object and a difficult class-7 one. Image 1: class 3 only
      # difficult. Image 2: nothing difficult. Image 3: a difficult and a clear class 7.
      "test": [([3, 7], [3]), ([3], []), ([0, 19], [0, 19]), ([7, 7], [7])],
  }

  def _info(self):
    classes = tfds.features.ClassLabel(num_classes=20)
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 3)),
        "labels": tfds.features.Sequence(classes),
        "labels_no_difficult": tfds.features.Sequence(classes)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self.EXAMPLES}

  def _generate_examples(self, split):
    for i, (labels, no_difficult) in enumerate(self.EXAMPLES[split]):
      yield i, {"image": np.full((8, 8, 3), i, np.uint8), "labels": labels,
                "labels_no_difficult": no_difficult}


def _by_image_index(split):
  """Labels in the builder's example order (TFDS shuffles it; image i is filled with i)."""
  return np.stack([label for _, label in sorted(
      _examples(split), key=lambda ex: int(tf.io.decode_png(ex[0])[0, 0, 0]))])


class VocDifficultTest(tf.test.TestCase):
  """VOC2007's spec read through a real TFDS builder with both label features."""

  def test_difficult_only_classes_are_ignored(self):
    spec = dataclasses.replace(datasets.DATASETS["voc2007"], tfds_name="fake_voc_difficult")
    splits = loading.load_splits(spec, data_dir=self.create_tempdir().full_path)
    labels = _by_image_index(splits.test)
    expected = np.zeros((4, 20), np.float32)
    expected[0, 3], expected[0, 7] = 1, -1
    expected[1, 3] = -1
    expected[2, [0, 19]] = 1
    expected[3, 7] = 1  # A clear object makes the class positive, difficult ones or not.
    np.testing.assert_array_equal(labels, expected)
    train = _by_image_index(splits.train)
    np.testing.assert_array_equal(np.flatnonzero(train[0]), [1, 4])
    np.testing.assert_array_equal(train[1], np.where(np.arange(20) == 2, -1, 0))
    self.assertIn("labels", splits.info)  # Keys the feature cache: old labels differ.


class ManualFilesTest(parameterized.TestCase):

  @parameterized.parameters("stanford_cars", "sun397", "birdsnap")
  def test_missing_manual_files_are_named_with_the_dir(self, name):
    spec = datasets.get_dataset_spec(name)
    manual_dir = self.create_tempdir().full_path
    with self.assertRaises(FileNotFoundError) as caught:
      loading.load_splits(spec, data_dir=self.create_tempdir().full_path,
                           manual_dir=manual_dir)
    message = str(caught.exception)
    self.assertIn(manual_dir, message)
    self.assertIn(f"--dataset={name}", message)
    for file_name in spec.manual_files:
      self.assertIn(file_name, message)


class DigitsEndToEndTest(parameterized.TestCase):
  """The smoke dataset: a real TFDS build and the real held-out logic."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._data_dir = tempfile.TemporaryDirectory()
    cls.spec = datasets.get_dataset_spec("digits")
    cls.splits = loading.load_splits(cls.spec, data_dir=cls._data_dir.name, seed=0)
    # Each split of `splits` read once for the class: (encoded image, label) pairs.
    cls.examples = {name: _examples(getattr(cls.splits, name))
                    for name in datasets.SPLIT_NAMES}

  @classmethod
  def tearDownClass(cls):
    cls._data_dir.cleanup()
    super().tearDownClass()

  def _load(self, **kwargs):
    return loading.load_splits(self.spec, data_dir=self._data_dir.name, **kwargs)

  def test_sizes_and_record(self):
    # 1,797 digits: 359 test; of the 1,438 training images, round(0.2 * 1438) = 288 held out.
    self.assertEqual(self.splits.sizes, {"train": 1150, "val": 288, "trainval": 1438,
                                         "test": 359})
    self.assertEqual(self.splits.info["val_fraction"], 0.2)
    self.assertEqual(self.splits.info["heldout_seed"], 0)
    self.assertEqual(self.splits.info["source"], "tfds:digits:1.0.0")
    self.assertEqual(self.splits.class_names, tuple(str(d) for d in range(10)))
    json.dumps(self.splits.info)  # The record stores it as JSON.
    self.assertEqual({name: len(pairs) for name, pairs in self.examples.items()},
                     self.splits.sizes)  # What each split yields.

  def _images(self, split):
    return [image for image, _ in self.examples[split]]

  def test_splits_do_not_overlap_and_trainval_is_train_plus_val(self):
    train, val, trainval, test = (self._images(split)
                                  for split in ("train", "val", "trainval", "test"))
    self.assertLen(set(train + val + test), 1797)  # The digits are all distinct images.
    self.assertEmpty(set(train) & set(val))
    self.assertEmpty(set(trainval) & set(test))
    self.assertCountEqual(trainval, train + val)

  def test_validation_is_stratified(self):
    val = collections.Counter(label for _, label in self.examples["val"])
    pool = collections.Counter(label for _, label in self.examples["trainval"])
    for label, count in pool.items():
      self.assertLess(abs(val[label] - 0.2 * count), 1.0, label)

  def test_held_out_split_is_seeded(self):
    val = self.examples["val"]
    self.assertEqual(_examples(self._load(seed=0).val), val)
    other = self._load(seed=1)
    self.assertNotEqual(_examples(other.val), val)
    self.assertEqual(_examples(other.test), self.examples["test"])  # Test is fixed.

  def test_max_examples_caps_every_split(self):
    capped = self._load(seed=0, max_examples=20)
    self.assertEqual(capped.sizes, {"train": 20, "val": 20, "trainval": 40, "test": 20})
    for split, size in capped.sizes.items():
      self.assertLen(_examples(getattr(capped, split)), size)
    self.assertCountEqual(_images(capped.trainval),
                          _images(capped.train) + _images(capped.val))
    self.assertEqual(capped.info["max_examples"], 20)

  def test_examples_per_class_subset(self):
    low = self._load(seed=0, examples_per_class=3)
    train = _examples(low.train)
    self.assertEqual(collections.Counter(label for _, label in train), {c: 3 for c in range(10)})
    self.assertEqual(low.sizes, {"train": 30, "val": 288, "trainval": 30, "test": 359})
    self.assertFalse(low.refit_with_val)
    self.assertTrue(self.splits.refit_with_val)
    # The final model sees the subset alone; validation and test are the full-data ones.
    self.assertEqual(_examples(low.trainval), train)
    self.assertEqual(_examples(low.val), self.examples["val"])
    self.assertEqual(_examples(low.test), self.examples["test"])
    images = [image for image, _ in train]
    self.assertEmpty(set(images) & set(self._images("val")))
    self.assertEmpty(set(images) & set(self._images("test")))
    self.assertContainsSubset(images, self._images("train"))
    subset = low.info["subset"]
    self.assertEqual((subset["examples_per_class"], subset["seed"], subset["size"]), (3, 0, 30))
    self.assertEqual(subset["pool_size"], 1150)
    json.dumps(low.info)

  def test_examples_per_class_is_seeded(self):
    first = _images(self._load(seed=0, examples_per_class=2).train)
    self.assertEqual(_images(self._load(seed=0, examples_per_class=2).train), first)
    other = self._load(seed=1, examples_per_class=2)
    self.assertLen(_images(other.train), 20)
    self.assertNotEqual(set(_images(other.train)), set(first))
    # Each seed draws from the training part of its own held-out split.
    self.assertEmpty(set(_images(other.train)) & set(_images(other.val)))

  def test_pipeline_end_to_end(self):
    preprocess_fn = preprocessing.get_preprocess_fn("inception")
    train = pipeline.make_pipeline(self.splits.train, image_size=24, batch_size=32,
                                   preprocess_fn=preprocess_fn, training=True, seed=0)
    x, y = next(iter(train))
    self.assertEqual(x.shape, (32, 24, 24, 3))
    self.assertBetween(float(tf.reduce_min(x)), -1.0, 1.0)
    self.assertBetween(float(tf.reduce_max(x)), -1.0, 1.0)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # Grayscale -> RGB.
    self.assertEqual(y.dtype, tf.int64)
    test = pipeline.make_pipeline(self.splits.test, image_size=24, batch_size=100,
                                  preprocess_fn=preprocess_fn, training=False)
    labels = np.concatenate([y.numpy() for _, y in test])
    self.assertLen(labels, 359)
    np.testing.assert_array_equal(labels, [label for _, label in self.examples["test"]])


class ProjectBuildersThroughLoadSplitsTest(tf.test.TestCase):
  """The package's builders, built for real from dummy sources, via `load_splits`."""

  def test_fgvc_aircraft_from_the_archive_uses_official_splits(self):
    manual_dir = dummy.write_fgvc_aircraft(self.get_temp_dir() + "/manual", archive=True)
    splits = loading.load_splits(datasets.get_dataset_spec("fgvc_aircraft"),
                                  data_dir=self.get_temp_dir() + "/data",
                                  manual_dir=manual_dir, seed=3)
    self.assertEqual(splits.sizes, {"train": 3, "val": 2, "trainval": 5, "test": 2})
    self.assertNotIn("heldout_seed", splits.info)
    self.assertIn("official 'validation'", splits.info["validation"])
    label_names = [splits.class_names[label] for _, label in _examples(splits.val)]
    self.assertCountEqual(label_names, [v for _, v in dummy.AIRCRAFT_SPLITS["val"]])

  def test_birdsnap_records_found_counts(self):
    manual_dir = dummy.write_birdsnap(self.get_temp_dir() + "/manual")
    splits = loading.load_splits(datasets.get_dataset_spec("birdsnap"),
                                  data_dir=self.get_temp_dir() + "/data",
                                  manual_dir=manual_dir, seed=0)
    self.assertEqual(splits.sizes, {"train": 3, "val": 1, "trainval": 4, "test": 2})
    counts = splits.info["builder_metadata"]["image_counts"]
    self.assertEqual(counts["train"]["found"], dummy.BIRDSNAP_TRAIN_FOUND)
    self.assertEqual(counts["test"]["listed"], dummy.BIRDSNAP_TEST_FOUND)
    json.dumps(splits.info)


if __name__ == "__main__":
  tf.test.main()
