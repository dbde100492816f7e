"""The package's TFDS builders, built from dummy sources made in the tests (no network)."""

import io
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import dummy_data_images as dummy
from tfhub_transfer.data.builders import birdsnap
from tfhub_transfer.data.builders import digits
from tfhub_transfer.data.builders import fgvc_aircraft


class _TempExampleDirMixin:
  """Creates EXAMPLE_DIR before TFDS's test case reads it (it is a class attribute)."""

  @classmethod
  def write_dummy_data(cls, path):
    raise NotImplementedError

  @classmethod
  def setUpClass(cls):
    cls._example_dir = tempfile.TemporaryDirectory()
    cls.EXAMPLE_DIR = cls.write_dummy_data(cls._example_dir.name)
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    cls._example_dir.cleanup()


class FgvcAircraftBuilderTest(_TempExampleDirMixin, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = fgvc_aircraft.FgvcAircraft
  SPLITS = {"train": 3, "validation": 2, "test": 2}
  SKIP_CHECKSUMS = True  # The source comes from the manual dir here: nothing is downloaded.

  @classmethod
  def write_dummy_data(cls, path):
    return dummy.write_fgvc_aircraft(path)


class BirdsnapBuilderTest(_TempExampleDirMixin, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = birdsnap.Birdsnap
  SPLITS = {"train": dummy.BIRDSNAP_TRAIN_FOUND, "test": dummy.BIRDSNAP_TEST_FOUND}

  @classmethod
  def write_dummy_data(cls, path):
    return dummy.write_birdsnap(path)


class DigitsBuilderTest(_TempExampleDirMixin, tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = digits.Digits
  SPLITS = {"train": 1438, "test": 359}  # 1,797 digits, stratified 20% test.

  @classmethod
  def write_dummy_data(cls, path):
    return path  # Bundled with scikit-learn: no source files.


def _build(builder_cls, data_dir, manual_dir=None):
  builder = builder_cls(data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


class FgvcAircraftContentTest(tf.test.TestCase):

  def test_archive_in_manual_dir_builds_cropped_labelled_images(self):
    manual_dir = dummy.write_fgvc_aircraft(self.get_temp_dir() + "/manual", archive=True)
    self.assertFalse(os.path.exists(os.path.join(manual_dir, "fgvc-aircraft-2013b")))
    builder = _build(fgvc_aircraft.FgvcAircraft, self.get_temp_dir() + "/data", manual_dir)
    label = builder.info.features["label"]
    self.assertEqual(label.names, dummy.AIRCRAFT_VARIANTS)
    for split, pairs in dummy.AIRCRAFT_SPLITS.items():
      tfds_split = "validation" if split == "val" else split
      examples = list(tfds.as_numpy(builder.as_dataset(split=tfds_split)))
      self.assertEqual([(e["file_name"].decode(), label.int2str(e["label"]))
                        for e in sorted(examples, key=lambda e: e["file_name"])],
                       [(i + ".jpg", v) for i, v in pairs])
      for e in examples:
        # The 20-px banner (black in the dummy images) is cropped off the bottom.
        self.assertEqual(e["image"].shape,
                         (dummy.AIRCRAFT_HEIGHT - 20, dummy.AIRCRAFT_WIDTH, 3))
        self.assertGreater(e["image"][-3:].mean(), 60)

  def test_crop_banner(self):
    image = dummy.gradient_image(50, 30, noise=0)
    cropped = Image.open(io.BytesIO(fgvc_aircraft.crop_banner(dummy.encode(image, "PNG"))))
    self.assertEqual(cropped.size, (30, 30))
    self.assertEqual(cropped.format, "JPEG")
    self.assertLess(np.abs(np.asarray(cropped, np.float32) - image[:30]).mean(), 3)

  def test_trainval_that_is_not_train_plus_val_is_rejected(self):
    manual_dir = dummy.write_fgvc_aircraft(self.get_temp_dir() + "/manual")
    listing = os.path.join(manual_dir, "fgvc-aircraft-2013b/data/images_variant_trainval.txt")
    with open(listing, "a") as f:
      f.write("0000006 Cessna 172\n")
    with self.assertRaisesRegex(ValueError, "not train \\+ val"):
      _build(fgvc_aircraft.FgvcAircraft, self.get_temp_dir() + "/data", manual_dir)

  def test_offline_without_manual_files_says_what_to_place(self):

    class OfflineDownloadManager:

      @property
      def manual_dir(self):
        raise AssertionError("Manual directory /m does not exist or is empty.")

      def download_and_extract(self, url):
        raise ConnectionError(f"cannot resolve host of {url}")

    with self.assertRaisesRegex(FileNotFoundError,
                                "fgvc-aircraft-2013b.tar.gz.*manual dir") as caught:
      fgvc_aircraft._find_data_dir(OfflineDownloadManager())
    self.assertIn(fgvc_aircraft.URL, str(caught.exception))


class BirdsnapContentTest(tf.test.TestCase):

  def test_counts_found_images_in_metadata_and_log(self):
    manual_dir = dummy.write_birdsnap(self.get_temp_dir() + "/manual")
    data_dir = self.get_temp_dir() + "/data"
    with self.assertLogs("absl", level="WARNING") as logs:
      _build(birdsnap.Birdsnap, data_dir, manual_dir)
    listed_train = (dummy.BIRDSNAP_TRAIN_FOUND + dummy.BIRDSNAP_MISSING +
                    dummy.BIRDSNAP_MD5_MISMATCH)
    expected = {
        "train": {"listed": listed_train, "found": dummy.BIRDSNAP_TRAIN_FOUND,
                  "md5_mismatch": dummy.BIRDSNAP_MD5_MISMATCH},
        "test": {"listed": dummy.BIRDSNAP_TEST_FOUND, "found": dummy.BIRDSNAP_TEST_FOUND,
                 "md5_mismatch": 0},
    }
    reloaded = birdsnap.Birdsnap(data_dir=data_dir)  # Metadata survives a reload.
    self.assertEqual(dict(reloaded.info.metadata["image_counts"]), expected)
    self.assertTrue(any(f"{listed_train} listed, {dummy.BIRDSNAP_TRAIN_FOUND} used" in line
                        for line in logs.output), logs.output)
    label = reloaded.info.features["label"]
    self.assertEqual(label.num_classes, 500)
    self.assertEqual(label.names[:2], ["Bird 1", "Bird 2"])
    test = list(tfds.as_numpy(reloaded.as_dataset(split="test")))
    # Species ids in images.txt are 1-based; labels are 0-based.
    self.assertCountEqual([(e["file_name"].decode(), e["label"]) for e in test],
                          [("Bird_2/1004.jpg", 1), ("Bird_3/1005.jpg", 2)])

  def test_missing_images_folder_names_it(self):
    manual_dir = self.get_temp_dir() + "/manual"
    dummy.write_birdsnap(manual_dir)
    shutil.rmtree(os.path.join(manual_dir, "images"))
    with self.assertRaisesRegex(FileNotFoundError, "lacks \\['images/'\\]"):
      _build(birdsnap.Birdsnap, self.get_temp_dir() + "/data", manual_dir)


class DigitsContentTest(tf.test.TestCase):

  def test_images_are_the_sklearn_digits_upscaled(self):
    from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
    images, labels = digits.load_digit_images()
    reference = sk_datasets.load_digits()
    self.assertEqual(images.shape, (1797, 32, 32, 1))
    self.assertEqual(images.dtype, np.uint8)
    np.testing.assert_array_equal(labels, reference.target)
    # Each 4x4 block holds one original pixel, scaled from 0..16 to 0..255.
    np.testing.assert_allclose(images[:, ::4, ::4, 0], reference.images * 255 / 16, atol=0.5)
    np.testing.assert_array_equal(images[:, 3::4, 3::4], images[:, ::4, ::4])


if __name__ == "__main__":
  tf.test.main()
