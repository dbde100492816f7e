"""`folder:<path>` datasets: the layouts people have, skip reasons, and one scan per folder."""

import collections
import io
import os
import re
import struct
import zlib

from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import cli_runner
from tests import dummy_data_images as dummy
from tests import fakes
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import datasets
from tfhub_transfer.data import folder
from tfhub_transfer.data import loading
from tfhub_transfer.data import pipeline
from tfhub_transfer.data import preprocessing
from tfhub_transfer.results import store as results

_CLASSES = ("cat", "dog", "owl")


def _write_split(root, split, *, per_class, first_seed, classes=_CLASSES):
  """Unique images at <root>/<split>/<class>/ (split "" = flat); returns {bytes: label}."""
  written = {}
  for label, name in enumerate(classes):
    for i in range(per_class):
      data = dummy.encode(dummy.gradient_image(12 + label, 16 + i, seed=first_seed + 100 * label
                                               + i), "PNG" if i % 2 else "JPEG")
      path = os.path.join(root, split, name, f"{i:03d}.{'png' if i % 2 else 'jpg'}")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(data)
      written[data] = label
  return written


def _examples(ds):
  return {ex["image"]: int(ex["label"]) for ex in tfds.as_numpy(ds)}


def _load(root, **kwargs):
  return loading.load_splits(datasets.get_dataset_spec("folder:" + root), **kwargs)


class LayoutTest(parameterized.TestCase):
  """Which folder is which split: folder names only, no image read."""

  def test_flat(self):
    root = self.create_tempdir().full_path
    _write_split(root, "", per_class=2, first_seed=0)
    layout = folder.describe_layout(root)
    self.assertEqual((layout.kind, layout.train_dir, layout.val_dir, layout.test_dir),
                     ("flat", root, None, None))
    self.assertEqual(layout.class_names, _CLASSES)

  @parameterized.parameters(
      (("train", "val"), "train+val", None, "val"),
      (("train", "test"), "train+test", None, "test"),
      (("train",), "train", None, None),
      (("train", "validation", "test"), "train+val+test", "validation", "test"),
      (("Train", "Valid", "TEST"), "train+val+test", "Valid", "TEST"))
  def test_split_folders(self, splits, kind, val_dir, test_dir):
    root = self.create_tempdir().full_path
    for split in splits:
      _write_split(root, split, per_class=1, first_seed=0)
    layout = folder.describe_layout(root)
    self.assertEqual(layout.kind, kind)
    self.assertEqual(layout.train_dir, os.path.join(root, splits[0]))
    self.assertEqual(layout.val_dir, val_dir and os.path.join(root, val_dir))
    self.assertEqual(layout.test_dir, test_dir and os.path.join(root, test_dir))

  def test_the_train_val_rule_is_stated(self):
    root = self.create_tempdir().full_path
    for split in ("train", "val"):
      _write_split(root, split, per_class=1, first_seed=0)
    spec = datasets.get_dataset_spec("folder:" + root)
    self.assertIsNone(spec.val_split)
    self.assertIsNone(spec.test_fraction)
    self.assertIn("train/ and val/ without test/: val/ is the TEST split, and validation is a "
                  "stratified 20% of train/ (experiment seed)", spec.note)

  @parameterized.named_parameters(
      ("two_val_folders", ("train", "val", "validation"), ValueError,
       "has val, validation: keep one validation folder"),
      ("split_and_class_folders", ("train", "test", "zebra"), ValueError,
       r"has split folders \(test, train\) and other folders \(zebra\)"),
      ("no_train", ("val", "test"), ValueError, "has test, val but no train/ folder"))
  def test_ambiguous_layouts_are_errors(self, splits, error, message):
    root = self.create_tempdir().full_path
    for split in splits:
      _write_split(root, split, per_class=1, first_seed=0)
    with self.assertRaisesRegex(error, message):
      datasets.get_dataset_spec("folder:" + root)

  def test_one_class_fails_before_any_image_is_read(self):
    root = self.create_tempdir().full_path
    _write_split(root, "train", per_class=3, first_seed=0, classes=("cat",))
    with self.assertRaisesRegex(ValueError, r"only one class \('cat' in .*train\); a "
                                            r"classifier needs two class folders"):
      datasets.get_dataset_spec("folder:" + root)

  def test_val_or_test_class_without_training_folder_is_named(self):
    root = self.create_tempdir().full_path
    _write_split(root, "train", per_class=1, first_seed=0)
    _write_split(root, "val", per_class=1, first_seed=0, classes=("cat", "zebra"))
    with self.assertRaisesRegex(ValueError, r"classes \['zebra'\] of .*val have no folder in "):
      datasets.get_dataset_spec("folder:" + root)

  def test_missing_or_empty_folder_is_named(self):
    missing = os.path.join(self.create_tempdir().full_path, "nope")
    with self.assertRaisesRegex(FileNotFoundError, f"folder:{missing}: no such directory"):
      datasets.get_dataset_spec("folder:" + missing)
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(FileNotFoundError, "no class sub-folders"):
      datasets.get_dataset_spec("folder:" + empty)


class SplitsTest(tf.test.TestCase, parameterized.TestCase):
  """Each layout's splits, read through `load_splits`, checked against the files written."""

  def test_torchvision_train_val_folder(self):
    root = self.create_tempdir().full_path
    train = _write_split(root, "train", per_class=5, first_seed=0)
    val = _write_split(root, "val", per_class=2, first_seed=1000)
    with self.assertLogs("absl", level="INFO") as logs:
      splits = _load(root, seed=0)
    # val/ is the test split; validation is round(0.2 * 15) = 3 images held out of train/.
    self.assertEqual(splits.sizes, {"train": 12, "val": 3, "trainval": 15, "test": 6})
    self.assertEqual(_examples(splits.test), val)
    self.assertEqual(_examples(splits.trainval), train)
    self.assertEqual(set(_examples(splits.val)) | set(_examples(splits.train)), set(train))
    self.assertIn("val/ is the TEST split", splits.info["layout"])
    self.assertTrue(any("val/ is the TEST split" in line for line in logs.output))

  def test_train_validation_test_folder(self):
    root = self.create_tempdir().full_path
    train = _write_split(root, "train", per_class=4, first_seed=0)
    val = _write_split(root, "validation", per_class=2, first_seed=1000)
    test = _write_split(root, "test", per_class=3, first_seed=2000)
    spec = datasets.get_dataset_spec("folder:" + root)
    self.assertEqual(spec.val_split, "val")
    self.assertEqual(spec.describe_val(), "official 'val' split")
    splits = loading.load_splits(spec, seed=0)
    self.assertEqual(splits.sizes, {"train": 12, "val": 6, "trainval": 18, "test": 9})
    self.assertEqual(_examples(splits.train), train)
    self.assertEqual(_examples(splits.val), val)
    self.assertEqual(_examples(splits.test), test)
    self.assertEqual(_examples(splits.trainval), {**train, **val})
    self.assertIn("validation is validation/ (as an official validation split)",
                  splits.info["layout"])

  def test_train_test_folder_holds_validation_out_of_train(self):
    root = dummy.write_image_folder(self.create_tempdir().full_path, split_dirs=True)
    spec = datasets.get_dataset_spec("folder:" + root)
    self.assertIsNone(spec.test_fraction)
    splits = loading.load_splits(spec, seed=0)
    self.assertEqual(splits.sizes, {"train": 24, "val": 6, "trainval": 30, "test": 9})
    batches = list(pipeline.make_pipeline(splits.test, image_size=8, batch_size=9,
                                          preprocess_fn=preprocessing.get_preprocess_fn("unit"),
                                          training=False))
    self.assertEqual(batches[0][0].shape, (9, 8, 8, 3))

  def test_flat_folder_splits_are_disjoint_and_only_val_depends_on_the_seed(self):
    root = dummy.write_image_folder(self.create_tempdir().full_path)
    spec = datasets.get_dataset_spec("folder:" + root)
    first, second = (loading.load_splits(spec, seed=s) for s in (0, 1))
    train, val, test = (_examples(first.train), _examples(first.val), _examples(first.test))
    self.assertLen(set(train) | set(val) | set(test), 30)
    self.assertEqual(_examples(first.trainval), {**train, **val})
    self.assertEqual(_examples(second.test), test)
    self.assertNotEqual(_examples(second.val), val)
    self.assertEqual(_examples(second.trainval), _examples(first.trainval))

  def test_examples_per_class_in_a_flat_folder(self):
    root = dummy.write_image_folder(self.create_tempdir().full_path)
    full, low = _load(root, seed=0), _load(root, seed=0, examples_per_class=2)
    train = _examples(low.train)
    self.assertEqual(collections.Counter(train.values()), {0: 2, 1: 2, 2: 2})
    self.assertContainsSubset(train, _examples(full.train))  # Never validation or test.
    self.assertEqual(_examples(low.val), _examples(full.val))
    self.assertEqual(_examples(low.test), _examples(full.test))
    self.assertEqual(_examples(low.trainval), train)  # The final model sees the subset alone.
    self.assertEqual(low.sizes, {"train": 6, "val": 5, "trainval": 6, "test": 6})

  def test_examples_per_class_with_a_validation_folder(self):
    root = self.create_tempdir().full_path
    train = _write_split(root, "train", per_class=4, first_seed=0)
    val = _write_split(root, "val", per_class=2, first_seed=1000)
    _write_split(root, "test", per_class=3, first_seed=2000)
    low = _load(root, seed=1, examples_per_class=3)
    picked = _examples(low.train)
    self.assertEqual(collections.Counter(picked.values()), {0: 3, 1: 3, 2: 3})
    self.assertContainsSubset(picked, train)
    self.assertEqual(_examples(low.val), val)
    self.assertEqual(low.info["subset"]["pool_size"], 12)
    self.assertNotEqual(set(_examples(_load(root, seed=2, examples_per_class=3).train)),
                        set(picked))

  def test_flat_folder_skips_files_with_plain_reasons(self):
    root = dummy.write_image_folder(self.create_tempdir().full_path)
    dummy.write_corrupt_files(os.path.join(root, "dog"))  # truncated.jpg, notes.txt, scan.tif
    open(os.path.join(root, "owl", "empty.jpg"), "wb").close()
    os.makedirs(os.path.join(root, "cat", "more"))
    spec = datasets.get_dataset_spec("folder:" + root)
    with self.assertLogs("absl", level="WARNING") as logs:
      splits = loading.load_splits(spec, seed=0)
    expected = {"truncated.jpg": "truncated JPEG", "notes.txt": "not an image",
                "scan.tif": "TIFF image, which TensorFlow does not decode",
                "empty.jpg": "empty file", "more": "a folder inside a class folder"}
    for name, reason in expected.items():
      self.assertTrue(any(f"{os.sep}{name}: {reason}" in line for line in logs.output), name)
    self.assertEqual(splits.info["skipped_files"], 5)
    self.assertEqual(splits.info["skipped_reasons"], {
        "TIFF image, which TensorFlow does not decode": 1, "a folder inside a class folder": 1,
        "empty file": 1, "not an image": 1, "truncated JPEG": 1})
    # 30 good images: 6 (2 per class) to test; of the 24 left, round(0.2 * 24) = 5 to val.
    self.assertEqual(splits.sizes, {"train": 19, "val": 5, "trainval": 24, "test": 6})
    self.assertEqual(collections.Counter(_examples(splits.test).values()), {0: 2, 1: 2, 2: 2})

  @parameterized.parameters("empty", "only_unusable")
  def test_class_folder_without_usable_image_is_named(self, kind):
    root = self.create_tempdir().full_path
    _write_split(root, "train", per_class=3, first_seed=0)
    _write_split(root, "test", per_class=1, first_seed=100)
    owl = os.path.join(root, "test", "owl")
    for name in os.listdir(owl):
      os.remove(os.path.join(owl, name))
    if kind == "only_unusable":
      with open(os.path.join(owl, "readme.txt"), "w") as f:
        f.write("not an image")
    with self.assertRaisesRegex(ValueError,
                                f"the class folder {re.escape(owl)} has no usable image"):
      _load(root, seed=0)

  def test_webp_is_read_and_decoded_like_pil(self):
    root = self.create_tempdir().full_path
    for label, name in enumerate(_CLASSES):
      os.makedirs(os.path.join(root, name))
      for i in range(3):
        image = dummy.gradient_image(10 + i, 12, seed=10 * label + i)
        Image.fromarray(image).save(os.path.join(root, name, f"{i}.webp"), "WEBP",
                                    lossless=True)
    splits = _load(root, seed=0)
    self.assertEqual(splits.info["skipped_files"], 0)
    self.assertEqual(sum(splits.sizes[s] for s in ("trainval", "test")), 9)
    for encoded in _examples(splits.test):
      with Image.open(io.BytesIO(encoded)) as reference:
        self.assertEqual(reference.format, "WEBP")
        expected = np.asarray(reference.convert("RGB"))
      self.assertAllEqual(pipeline.decode_rgb(tf.constant(encoded)), expected)


def _png_header_only(width, height):
  """A PNG whose header claims width x height RGB pixels (a few bytes: no pixel data)."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0,
                                                                0, 0))
          + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


class UnreadableFileTest(parameterized.TestCase):
  """A file that cannot be read is skipped with its reason; a bad folder name is one line."""

  def setUp(self):
    super().setUp()
    folder._validated.cache_clear()  # pylint: disable=protected-access

  def test_bomb_loop_and_non_utf8_file_are_skipped_with_reasons(self):
    root = dummy.write_image_folder(self.create_tempdir().full_path)
    with open(os.path.join(root, "cat", "huge.png"), "wb") as f:
      f.write(_png_header_only(20000, 20000))
    os.symlink("loop.jpg", os.path.join(root, "dog", "loop.jpg"))  # Points at itself: ELOOP.
    with open(os.fsencode(os.path.join(root, "owl")) + b"/caf\xe9.jpg", "wb") as f:
      f.write(dummy.encode(dummy.gradient_image(12, 16, seed=99), "JPEG"))
    with self.assertLogs("absl", level="WARNING") as logs:
      splits = _load(root, seed=0)
    self.assertEqual(splits.info["skipped_files"], 3)
    self.assertEqual(splits.info["skipped_reasons"], {
        "its name is not UTF-8": 1, "too large to decode": 1, "unreadable": 1})
    for name, reason in (("huge.png", "too large to decode (Image size (400000000 pixels) "
                                      "exceeds limit of"),
                         ("loop.jpg", "unreadable (Too many levels of symbolic links)"),
                         ("caf", "its name is not UTF-8 (rename it)")):
      self.assertTrue(any(f"{os.sep}{name}" in line and reason in line
                          for line in logs.output), name)
    self.assertEqual(splits.sizes["trainval"] + splits.sizes["test"], 30)  # The 30 good ones.

  def test_a_class_folder_name_that_is_not_utf8_is_one_line(self):
    root = dummy.write_image_folder(self.create_tempdir().full_path)
    os.rename(os.path.join(root, "owl"), os.fsencode(root) + b"/\xe9t\xe9")
    code, lines = cli_runner.run_in_process(
        "--model=mobilenet_v1", "--dataset=folder:" + root, "--regime=logreg",
        "--weights=random", "--workdir=" + self.create_tempdir().full_path)
    self.assertEqual(code, 2)
    self.assertEqual(lines, [
        f"tfhub_transfer: --dataset=folder:{root}: the class folder name b'\\xe9t\\xe9' in "
        f"{root!r} is not UTF-8, so it cannot be a label; rename it (e.g. convmv -f latin1 -t "
        f"utf8 --notest)."])


class SmallFolderTest(parameterized.TestCase):
  """Split sizes are counted per class before any work: an empty split is refused, a tiny
  one is a warning that the result records."""

  def setUp(self):
    super().setUp()
    folder._validated.cache_clear()  # pylint: disable=protected-access

  def _cli(self, root):
    workdir = self.create_tempdir().full_path
    code, lines = cli_runner.run_in_process(
        "--model=mobilenet_v1", "--dataset=folder:" + root, "--regime=logreg",
        "--weights=random", "--workdir=" + workdir)
    self.assertEqual(results.store_paths(workdir), [])  # No row: nothing ran.
    return code, lines

  def test_zero_images_per_class_is_refused_naming_the_class(self):
    root = self.create_tempdir().full_path
    for name in _CLASSES:
      os.makedirs(os.path.join(root, name))
    code, lines = self._cli(root)
    self.assertEqual(code, 2)
    self.assertLen(lines, 1)
    self.assertIn(f"the class folder {os.path.join(root, 'cat')} has no usable image (empty",
                  lines[0])

  def test_one_image_per_class_is_refused_naming_the_class_and_the_minimum(self):
    root = self.create_tempdir().full_path
    _write_split(root, "", per_class=1, first_seed=0)
    code, lines = self._cli(root)
    self.assertEqual(code, 2)
    self.assertEqual(lines, [
        f"tfhub_transfer: --dataset=folder:{root}: the validation split would be empty (seed "
        f"0): "
        f"class 'cat' has 1 usable image(s), and the flat layout needs at least 7 per class "
        f"(one for each split it draws); add images to the smaller classes."])

  def test_two_images_per_class_warn_and_the_result_records_it(self):
    root = self.create_tempdir().full_path
    _write_split(root, "", per_class=2, first_seed=0)
    splits = _load(root, seed=0)
    # By hand: 6 images; test is round(0.2 * 6) = 1 of them, validation round(0.2 * 5) = 1.
    self.assertEqual(splits.sizes, {"train": 4, "val": 1, "trainval": 5, "test": 1})
    warnings = splits.info["warnings"]
    self.assertLen(warnings, 2)
    self.assertStartsWith(warnings[0], "the validation split has only 1 image(s) (seed 0): "
                                       "its accuracy moves in steps of 100%; 2 class(es) have "
                                       "no validation image (")
    self.assertStartsWith(warnings[1], "the test split has only 1 image(s) (seed 0)")
    self.assertEndsWith(warnings[1], "; 7 images per class give each one)")

  @parameterized.parameters((5, 0), (7, 0), (7, 3), (30, 1))
  def test_counted_sizes_are_the_splits_drawn(self, per_class, seed):
    root = self.create_tempdir().full_path
    _write_split(root, "", per_class=per_class, first_seed=0)
    splits = _load(root, seed=seed)
    layout = folder.describe_layout(root)
    sizes = folder.split_sizes(layout, folder.scan_folder(layout), test_fraction=0.2,
                               test_seed=datasets.FOLDER_TEST_SEED, val_fraction=0.2, seed=seed)
    for split in ("train", "val", "test"):
      drawn = collections.Counter(_examples(getattr(splits, split)).values())
      self.assertEqual([drawn[c] for c in range(len(_CLASSES))], list(sizes[split]), split)

  def test_the_minimum_gives_every_class_every_split_whatever_the_seed(self):
    layout = folder.FolderLayout("/r", "flat", "/r", None, None, _CLASSES)
    need = folder.min_images_per_class(layout, test_fraction=0.2, val_fraction=0.2)
    self.assertEqual(need, 7)
    listing = folder.FolderListing("k", tuple((f"{c}/{i}", c) for c in range(3)
                                              for i in range(need)), (), (), ())
    for seed in range(20):
      sizes = folder.split_sizes(layout, listing, test_fraction=0.2, test_seed=0,
                                 val_fraction=0.2, seed=seed)
      self.assertTrue(all(min(per_class) >= 1 for per_class in sizes.values()), seed)


class ScanOnceTest(parameterized.TestCase):
  """A folder state is validated once; its key (paths, sizes, mtimes) is in each result."""

  def setUp(self):
    super().setUp()
    folder._validated.cache_clear()  # pylint: disable=protected-access

  def _corrupt_keeping_size_and_mtime(self, path):
    stat = os.stat(path)
    with open(path, "r+b") as f:
      f.write(b"\0" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

  @parameterized.parameters(True, False)
  def test_same_state_is_not_validated_again(self, on_disk):
    root = dummy.write_image_folder(self.create_tempdir().full_path)
    cache_dir = self.create_tempdir().full_path if on_disk else None
    first = _load(root, seed=0, folder_cache_dir=cache_dir)
    key = first.info["folder_listing"]
    if on_disk:
      self.assertEqual(os.listdir(cache_dir), [f"{key}.json"])
      folder._validated.cache_clear()  # pylint: disable=protected-access  (a new process)
    victim = os.path.join(root, "cat", "000.jpg")
    self._corrupt_keeping_size_and_mtime(victim)
    again = _load(root, seed=0, folder_cache_dir=cache_dir)
    self.assertEqual(again.info["folder_listing"], key)
    self.assertEqual(again.sizes, first.sizes)  # Not opened again: still counted usable.
    os.utime(victim, ns=(os.stat(victim).st_atime_ns, os.stat(victim).st_mtime_ns + 10**9))
    changed = _load(root, seed=0, folder_cache_dir=cache_dir)
    self.assertNotEqual(changed.info["folder_listing"], key)
    self.assertEqual(changed.info["skipped_reasons"], {"not an image": 1})

  def test_a_sweep_validates_once_and_records_the_key(self):
    tmp = self.create_tempdir().full_path
    root = dummy.write_image_folder(os.path.join(tmp, "images"))
    hub = fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"))
    base = ExperimentConfig(model="hub:" + hub, dataset="folder:" + root, regime="logreg",
                            image_size=16, workdir=os.path.join(tmp, "work"), batch_size=16,
                            l2_grid_size=3)
    grid = sweep.Grid(models=(base.model,), datasets=(base.dataset,), regimes=("logreg",),
                      seeds=(0, 1))
    with self.assertLogs("absl", level="INFO") as logs:
      summary = sweep.run_grid(base, grid)
    self.assertEqual(summary.done, 2)
    self.assertLen([line for line in logs.output if "Validating 30 file(s)" in line], 1)
    stored = results.ResultsStore.for_workdir(base.workdir).records()
    keys = {r["splits"]["folder_listing"] for r in stored}
    self.assertLen(stored, 2)
    self.assertLen(keys, 1)
    self.assertEqual(os.listdir(os.path.join(base.workdir, "folders")), [f"{keys.pop()}.json"])


if __name__ == "__main__":
  tf.test.main()
