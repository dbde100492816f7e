"""A user's own images, one sub-folder per class (`--dataset=folder:<path>`).

Two layouts are read:
  * `<path>/train/<class>/*` and `<path>/test/<class>/*`: the user's own test split;
  * `<path>/<class>/*` (flat): the test split is a class-stratified `test_fraction` of the
    images, drawn with a fixed seed so every experiment sees the same test set.
Class ids follow the sorted class-folder names. Names starting with '.' are ignored.

Corrupt or unsupported files are skipped and counted, not fatal: a validation pass opens and
fully decodes every file with PIL and keeps only formats that `tf.io.decode_image` reads
(JPEG, PNG, GIF, BMP, WebP). Each skipped file is logged with its reason, and the count goes
into the result record, so a stray README or a half-downloaded JPEG never stops a run.
"""

import dataclasses
import os
from typing import Optional

from absl import logging
from PIL import Image
import tensorflow as tf

# PIL format names of the encodings tf.io.decode_image decodes.
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
SPLIT_DIRS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class FolderListing:
  """The validated files of an image folder, in deterministic (class, file name) order.

  Attributes:
    class_names: sorted class-folder names; a label is an index into it.
    train: (path, label) pairs of the training pool.
    test: (path, label) pairs of `<path>/test`, or None for the flat layout.
    skipped: (path, reason) for each file that failed validation.
  """
  class_names: tuple[str, ...]
  train: tuple[tuple[str, int], ...]
  test: Optional[tuple[tuple[str, int], ...]]
  skipped: tuple[tuple[str, str], ...]


def _visible(names):
  return sorted(n for n in names if not n.startswith("."))


def _subdirs(path):
  return [n for n in _visible(tf.io.gfile.listdir(path))
          if tf.io.gfile.isdir(os.path.join(path, n))]


def has_split_dirs(root: str) -> bool:
  return all(tf.io.gfile.isdir(os.path.join(root, d)) for d in SPLIT_DIRS)


def list_class_names(root: str) -> tuple[str, ...]:
  """The sorted class names of a folder dataset (the train classes in the split layout).

  Raises:
    FileNotFoundError: `root` is not a directory or has no class sub-folders.
  """
  if not tf.io.gfile.isdir(root):
    raise FileNotFoundError(f"--dataset=folder:{root}: no such directory. Expected "
                            f"<path>/<class>/<image> or <path>/{{train,test}}/<class>/<image>.")
  class_root = os.path.join(root, "train") if has_split_dirs(root) else root
  names = tuple(_subdirs(class_root))
  if not names:
    raise FileNotFoundError(
        f"--dataset=folder:{root}: no class sub-folders in {class_root}. Put each class's "
        f"images in its own folder: {class_root}/<class_name>/<image>.jpg.")
  return names


def check_image(path: str) -> Optional[str]:
  """Returns why `path` is not a usable image, or None if it is."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f, Image.open(f) as image:
      image_format = image.format
      image.load()  # Full decode: catches truncated files that open() alone accepts.
  except Exception as e:  # PIL raises many types for bad files; all mean "skip it".
    return f"unreadable ({type(e).__name__}: {e})"
  if image_format not in DECODABLE_FORMATS:
    return f"unsupported format {image_format} (expected one of {DECODABLE_FORMATS})"
  return None


def _list_split(split_root, class_names, skipped):
  """Validated (path, label) pairs under `split_root/<class>/`."""
  examples = []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(split_root, name)
    if not tf.io.gfile.isdir(class_dir):
      continue
    for file_name in _visible(tf.io.gfile.listdir(class_dir)):
      path = os.path.join(class_dir, file_name)
      if tf.io.gfile.isdir(path):
        continue
      reason = check_image(path)
      if reason:
        skipped.append((path, reason))
      else:
        examples.append((path, label))
  return tuple(examples)


def scan_folder(root: str) -> FolderListing:
  """Lists and validates every image of a folder dataset.

  Args:
    root: the dataset folder, in either layout.

  Returns:
    The listing, with the skipped files and why.

  Raises:
    FileNotFoundError: the folder or its class folders are missing.
    ValueError: the test split has a class the training split lacks, or no image is usable.
  """
  class_names = list_class_names(root)
  skipped = []
  if has_split_dirs(root):
    test_root = os.path.join(root, "test")
    unknown = sorted(set(_subdirs(test_root)) - set(class_names))
    if unknown:
      raise ValueError(f"--dataset=folder:{root}: test classes {unknown} have no folder in "
                       f"{os.path.join(root, 'train')}; every test class needs training images.")
    train = _list_split(os.path.join(root, "train"), class_names, skipped)
    test = _list_split(test_root, class_names, skipped)
  else:
    train, test = _list_split(root, class_names, skipped), None
  for path, reason in skipped:
    logging.warning("Skipping %s: %s", path, reason)
  if skipped:
    logging.warning("--dataset=folder:%s: skipped %d unusable file(s) of %d.", root,
                    len(skipped), len(skipped) + len(train) + len(test or ()))
  if not train:
    raise ValueError(f"--dataset=folder:{root}: no usable training image among "
                     f"{len(skipped)} file(s); see the logged reasons.")
  return FolderListing(class_names=class_names, train=train, test=test,
                       skipped=tuple(skipped))
