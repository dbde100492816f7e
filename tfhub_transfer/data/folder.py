"""A user's own images, one sub-folder per class (`--dataset=folder:<path>`).

Layouts (split-folder names match in any case; names starting with '.' are ignored):
  * `<path>/<class>/*` (flat): the test split is a class-stratified `test_fraction` of the
    images, drawn with a fixed seed so every experiment sees the same test set.
  * `<path>/train/<class>/*` with `<path>/val/<class>/*` (or `valid/`, `validation/`) and/or
    `<path>/test/<class>/*`. `RULES` says how each combination becomes the train / val / test
    splits; the rule in use is logged with each cell and stored in its record.
Class ids follow the sorted class-folder names (of train/ in the split layout); a val/ or test/
class needs a train/ folder. Every class folder needs a usable image, and two classes at least.

Every file is validated once per folder state: a pass opens and fully decodes it with PIL and
keeps the formats `tf.io.decode_image` reads (JPEG, PNG, GIF, BMP, WebP). A skipped file is
logged with a plain reason ("not an image", "empty file", "truncated JPEG") and counted in the
result. The validated listing is kept for the process and, given `cache_dir`, on disk, under a
key made of every file's path, size and modification time (`FolderListing.key`, recorded in
each result): a sweep validates a folder once, and a changed folder is validated again.

TFDS's `tfds.folder_dataset.ImageFolder` also reads `<path>/<split>/<label>/`, but does not
fit: it lists only .jpg/.jpeg/.png names (WebP, GIF and BMP files are dropped silently),
validates nothing (one corrupt JPEG fails the run when the pipeline reaches it), finds no
split in a flat folder, and gives a class that only test/ has a label of its own.

Before any work, `check_split_sizes` counts each class's images in each split the layout's
rule makes (the same draws as the reader's): a split left empty is refused, naming the
smallest class and how many images per class the layout needs; a tiny split, or a class
without validation or test images, is a warning that each result records.

TF-free (`os`, numpy and PIL), so `--list_datasets` and flag checks stay fast.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import math
import os
import tempfile
import time
from typing import Optional, Sequence

from absl import logging
import numpy as np

from tfhub_transfer import progress
from tfhub_transfer.data import splits as splits_lib

# PIL format names of the encodings tf.io.decode_image decodes.
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
TRAIN_DIR = "train"
VAL_DIRS = ("val", "valid", "validation")
TEST_DIR = "test"
SPLIT_DIRS = (TRAIN_DIR,) + VAL_DIRS + (TEST_DIR,)
LISTING_FORMAT = 1  # Bump when validation changes what a cached listing holds.
# A split with fewer images is tiny: its accuracy moves in steps of 10% or more (a warning,
# recorded in each result's `splits.warnings`).
TINY_SPLIT = 10

# How a layout becomes the train / val / test splits, by the split folders it has.
RULES = {
    "flat": "no split folders: test is a fixed stratified {test_fraction:.0%} of the images "
            "(seed {test_seed}), validation a stratified {val_fraction:.0%} of the rest "
            "(experiment seed)",
    "train": "train/ only: test is a fixed stratified {test_fraction:.0%} of train/ (seed "
             "{test_seed}), validation a stratified {val_fraction:.0%} of the rest "
             "(experiment seed)",
    "train+test": "train/ and test/: validation is a stratified {val_fraction:.0%} of train/ "
                  "(experiment seed), test is test/",
    "train+val+test": "train/, {val}/ and test/: validation is {val}/ (as an official "
                      "validation split), test is test/",
    "train+val": "train/ and {val}/ without test/: {val}/ is the TEST split, and validation "
                 "is a stratified {val_fraction:.0%} of train/ (experiment seed), as the "
                 "torchvision tutorials use val/; hyperparameters are never chosen on the "
                 "images that are scored",
}


@dataclasses.dataclass(frozen=True)
class FolderLayout:
  """Where a folder dataset's splits and classes are (folder names only; no file read).

  Attributes:
    root: the dataset folder (absolute).
    kind: a key of `RULES`.
    train_dir: the folder of the training classes (`root` when flat).
    val_dir: the folder used as the validation split, or None (held out of train).
    test_dir: the folder used as the test split, or None (a fixed share of train).
    class_names: sorted class-folder names of `train_dir`; a label is an index into it.
  """
  root: str
  kind: str
  train_dir: str
  val_dir: Optional[str]
  test_dir: Optional[str]
  class_names: tuple[str, ...]

  @property
  def val_name(self) -> Optional[str]:
    """The user's name of the val folder (`val`, `valid` or `validation`), if any."""
    names = [os.path.basename(d) for d in (self.val_dir, self.test_dir)
             if d and os.path.basename(d).lower() in VAL_DIRS]
    return names[0] if names else None

  def rule(self, *, test_fraction: float, test_seed: int, val_fraction: float) -> str:
    """The sentence saying how this layout's splits are made."""
    return RULES[self.kind].format(test_fraction=test_fraction, test_seed=test_seed,
                                   val_fraction=val_fraction, val=self.val_name)


@dataclasses.dataclass(frozen=True)
class FolderListing:
  """The validated files of an image folder, in deterministic (class, file name) order.

  Attributes:
    key: id of the folder state validated (every file's path, size and modification time).
    train, val, test: (path, label) pairs of the layout's train, val and test folders (empty
      where the layout has no such folder).
    skipped: (path, reason) for each file that failed validation.
  """
  key: str
  train: tuple[tuple[str, int], ...]
  val: tuple[tuple[str, int], ...]
  test: tuple[tuple[str, int], ...]
  skipped: tuple[tuple[str, str], ...]


def _visible(names):
  return sorted(n for n in names if not n.startswith("."))


def _subdirs(path):
  return [n for n in _visible(os.listdir(path)) if os.path.isdir(os.path.join(path, n))]


def _flag(root):
  return f"--dataset=folder:{root}"


def describe_layout(root: str) -> FolderLayout:
  """Finds the layout and the classes of a folder dataset (lists folders, reads no file).

  Raises:
    FileNotFoundError: `root` is not a directory, or has no class folders.
    ValueError: the split folders are ambiguous or incomplete, a val/test class has no
      train/ folder, or there are fewer than two classes.
  """
  expected = (f"Expected <path>/<class>/<image> or <path>/train/<class>/<image> with "
              f"optional <path>/{{{','.join(VAL_DIRS)}}}/ and <path>/test/.")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{_flag(root)}: no such directory. {expected}")
  subdirs = _subdirs(root)
  splits = {n.lower(): n for n in subdirs if n.lower() in SPLIT_DIRS}
  if not splits:
    return _checked(FolderLayout(root, "flat", root, None, None, tuple(subdirs)), expected)
  others = [n for n in subdirs if n.lower() not in SPLIT_DIRS]
  vals = [splits[n] for n in VAL_DIRS if n in splits]
  if TRAIN_DIR not in splits or others or len(vals) > 1:
    problem = (f"has {', '.join(vals)}: keep one validation folder" if len(vals) > 1 else
               f"has split folders ({', '.join(splits.values())}) and other folders "
               f"({', '.join(others)}): move the others out" if others else
               f"has {', '.join(splits.values())} but no train/ folder")
    raise ValueError(f"{_flag(root)} {problem}. {expected}")
  val = os.path.join(root, vals[0]) if vals else None
  test = os.path.join(root, splits[TEST_DIR]) if TEST_DIR in splits else None
  kind = "+".join(["train"] + (["val"] if val else []) + (["test"] if test else []))
  train_dir = os.path.join(root, splits[TRAIN_DIR])
  # Without test/, val/ is the test split (RULES["train+val"]).
  layout = FolderLayout(root, kind, train_dir, val if test else None, test or val,
                        tuple(_subdirs(train_dir)))
  return _checked(layout, expected)


def _checked(layout: FolderLayout, expected: str) -> FolderLayout:
  flag = _flag(layout.root)
  for split_dir in (d for d in (layout.train_dir, layout.val_dir, layout.test_dir) if d):
    for name in _subdirs(split_dir):
      if not _is_utf8(name):
        raise ValueError(f"{flag}: the class folder name {os.fsencode(name)!r} in {split_dir!r} "
                         f"is not UTF-8, so it cannot be a label; rename it (e.g. convmv -f "
                         f"latin1 -t utf8 --notest).")
  if not layout.class_names:
    raise FileNotFoundError(
        f"{flag}: no class sub-folders in {layout.train_dir}. Put each class's images in "
        f"its own folder: {layout.train_dir}/<class_name>/<image>.jpg. {expected}")
  if len(layout.class_names) < 2:
    raise ValueError(f"{flag}: only one class ({layout.class_names[0]!r} in "
                     f"{layout.train_dir}); a classifier needs two class folders or more.")
  for split_dir in (d for d in (layout.val_dir, layout.test_dir) if d):
    if not _subdirs(split_dir):
      raise FileNotFoundError(f"{flag}: no class sub-folders in {split_dir}. Put its images "
                              f"in {split_dir}/<class_name>/, as in {layout.train_dir}.")
    unknown = sorted(set(_subdirs(split_dir)) - set(layout.class_names))
    if unknown:
      raise ValueError(f"{flag}: classes {unknown} of {split_dir} have no folder in "
                       f"{layout.train_dir}; every class needs training images.")
  return layout


def _is_utf8(name: str) -> bool:
  """Whether a name os.listdir gave is valid UTF-8 (other bytes come as lone surrogates)."""
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def check_image(path: str) -> Optional[str]:
  """Returns why `path` is not a usable image (a short plain phrase), or None if it is."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not _is_utf8(path):
    return "its name is not UTF-8 (rename it)"
  try:
    if os.path.getsize(path) == 0:
      return "empty file"
  except OSError as e:  # A symlink loop (ELOOP), a dangling link, no permission.
    return f"unreadable ({e.strerror})"
  try:
    with Image.open(path) as image:
      image_format = image.format
      try:
        image.load()  # Full decode: catches truncated files that open() alone accepts.
      except (OSError, SyntaxError, ValueError) as e:
        if "truncated" in str(e).lower() or "broken data stream" in str(e):
          return f"truncated {image_format}"
        return f"corrupt {image_format} ({e})"
  except Image.UnidentifiedImageError:
    return "not an image"
  except Image.DecompressionBombError as e:  # Its size alone: nothing is decoded.
    return f"too large to decode ({str(e).split(', could be')[0]}; downscale it)"
  except (OSError, SyntaxError, ValueError) as e:  # A header PIL knows but cannot parse.
    return "truncated image" if "truncated" in str(e).lower() else f"corrupt image ({e})"
  if image_format not in DECODABLE_FORMATS:
    return (f"{image_format} image, which TensorFlow does not decode (convert it to one of "
            f"{', '.join(DECODABLE_FORMATS)})")
  return None


def _list_files(layout: FolderLayout):
  """Every candidate file: (role, label, path, size, mtime_ns); and (path, reason) of the
  entries that are not (nested folders, unreadable links)."""
  files, unlisted = [], []
  for role, split_dir in (("train", layout.train_dir), ("val", layout.val_dir),
                          ("test", layout.test_dir)):
    if split_dir is None:
      continue
    present = set(_subdirs(split_dir))
    for label, name in enumerate(layout.class_names):
      if name not in present:
        continue
      class_dir = os.path.join(split_dir, name)
      for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
        if entry.name.startswith("."):
          continue
        try:
          if entry.is_dir():
            unlisted.append((entry.path, "a folder inside a class folder (its files are not "
                                         "read)"))
            continue
          stat = entry.stat()
        except OSError as e:  # A symlink loop (ELOOP), a dangling link, no permission.
          unlisted.append((entry.path, f"unreadable ({e.strerror})"))
          continue
        files.append((role, label, entry.path, stat.st_size, stat.st_mtime_ns))
  return tuple(files), tuple(unlisted)


def listing_key(files) -> str:
  """The id of a folder state: its files' paths, sizes and modification times."""
  blob = json.dumps([LISTING_FORMAT, [f[2:] for f in files]])
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def scan_folder(layout: FolderLayout, *, cache_dir: Optional[str] = None) -> FolderListing:
  """Lists and validates every image of a folder dataset, once per folder state.

  Args:
    layout: the folder (`describe_layout`).
    cache_dir: where validated listings are kept between processes (None: this process).

  Returns:
    The listing, with the skipped files and why.

  Raises:
    ValueError: a class folder has no usable image.
  """
  files, unlisted = _list_files(layout)
  listing = _validated(files, unlisted, listing_key(files), cache_dir)
  if listing.skipped:
    logging.warning("%s: %d unusable file(s) of %d skipped (listing %s).", _flag(layout.root),
                    len(listing.skipped), len(files) + len(unlisted), listing.key)
  _check_every_class_has_images(layout, files, listing)
  return listing


def _check_every_class_has_images(layout, files, listing):
  usable = {path for split in (listing.train, listing.val, listing.test) for path, _ in split}
  found, kept = collections.Counter(), collections.Counter()
  for _, _, path, _, _ in files:
    found[os.path.dirname(path)] += 1
    kept[os.path.dirname(path)] += path in usable
  for split_dir in (layout.train_dir, layout.val_dir, layout.test_dir):
    for name in sorted(set(_subdirs(split_dir)) & set(layout.class_names)) if split_dir else ():
      class_dir = os.path.join(split_dir, name)
      if not kept[class_dir]:
        skipped = f"{found[class_dir]} file(s), all skipped" if found[class_dir] else "empty"
        raise ValueError(f"{_flag(layout.root)}: the class folder {class_dir} has no usable "
                         f"image ({skipped}; see the logged reasons). Add images to it or "
                         f"remove it.")


@functools.lru_cache(maxsize=8)
def _validated(files, unlisted, key: str, cache_dir: Optional[str]) -> FolderListing:
  """The validated listing of `files` (memoised per process, and on disk in `cache_dir`);
  logs why each skipped file is skipped, once per process."""
  path = os.path.join(cache_dir, f"{key}.json") if cache_dir else None
  saved = _read_saved_listing(path) if path and os.path.exists(path) else None
  if saved is not None:
    logging.info("Folder listing %s: validated before (%s).", key, path)
  else:
    saved = _validate(files)
    if path:
      os.makedirs(cache_dir, exist_ok=True)
      with tempfile.NamedTemporaryFile("w", dir=cache_dir, suffix=".partial",
                                       delete=False) as f:
        json.dump(saved, f)
      os.replace(f.name, path)  # Atomic: a reader sees the whole listing or none.
  skipped = [tuple(row) for row in saved["skipped"]] + list(unlisted)
  for file_path, reason in skipped:
    logging.warning("Skipping %s: %s.", file_path, reason)
  return FolderListing(key=key, train=_pairs(saved["train"]), val=_pairs(saved["val"]),
                       test=_pairs(saved["test"]), skipped=tuple(skipped))


def _read_saved_listing(path: str) -> Optional[dict]:
  """A listing saved by an earlier run; None, after moving the file aside with one log line
  naming it, when it is not one (garbled, truncated, edited): the folder is validated anew."""
  try:
    with open(path) as f:
      saved = json.load(f)
    if not isinstance(saved, dict) or saved.get("format") != LISTING_FORMAT:
      raise ValueError(f"not a listing of format {LISTING_FORMAT}")
    for role in ("train", "val", "test"):
      _pairs(saved[role])
    for file_path, reason in saved["skipped"]:
      if not isinstance(file_path, str) or not isinstance(reason, str):
        raise ValueError("a skipped entry is not (path, reason)")
    return saved
  except (OSError, ValueError, KeyError, TypeError) as e:  # JSONDecodeError: a ValueError.
    aside = f"{path}.corrupt-{int(time.time())}"
    try:
      os.replace(path, aside)
    except OSError:
      aside = "(could not be moved aside)"
    logging.warning("Folder listing %s is damaged (%s: %s); moved to %s, validating the "
                    "folder again.", path, type(e).__name__, e, aside)
    return None


def _validate(files) -> dict:
  """Checks every file (in parallel: PIL decodes without the GIL); JSON-ready listing."""
  logging.info("Validating %d file(s), once per folder state.", len(files))
  bar = progress.Progress(len(files), description="validate images", unit="file")
  reasons = []
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    for reason in pool.map(check_image, [f[2] for f in files]):
      reasons.append(reason)
      bar.update(len(reasons))
  saved = {"format": LISTING_FORMAT, "train": [], "val": [], "test": [], "skipped": []}
  for (role, label, file_path, _, _), reason in zip(files, reasons):
    if reason:
      saved["skipped"].append((file_path, reason))
    else:
      saved[role].append((file_path, label))
  return saved


def _pairs(rows) -> tuple[tuple[str, int], ...]:
  return tuple((str(path), int(label)) for path, label in rows)


def state_key(layout: FolderLayout) -> str:
  """The listing key of a folder as it is now (`listing_key`): walks it, decodes nothing."""
  files, _ = _list_files(layout)
  return listing_key(files)


_SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


def split_sizes(layout: FolderLayout, listing: FolderListing, *, test_fraction: float,
                test_seed: int, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
  """Per-class image counts of the train, val and test splits the layout's rule makes.

  The counts of the draws `readers.FolderReader` (test, seed `test_seed`) and
  `loading.load_splits` (validation, the experiment seed) make: `splits.heldout_counts`
  with the seeded generator `splits.stratified_split` uses, so no image is read.
  """
  num_classes = len(layout.class_names)

  def count(pairs):
    return np.bincount([label for _, label in pairs], minlength=num_classes).astype(np.int64)

  train = count(listing.train)
  if layout.test_dir is None:
    test = _heldout(train, test_fraction, test_seed)
    train = train - test
  else:
    test = count(listing.test)
  if layout.val_dir is None:
    val = _heldout(train, val_fraction, seed)
    train = train - val
  else:
    val = count(listing.val)
  return {"train": train, "val": val, "test": test}


def _heldout(counts, fraction, seed):
  """`splits.stratified_split`'s per-class counts (over the classes present, in order)."""
  held = np.zeros_like(counts)
  present = counts > 0
  held[present] = splits_lib.heldout_counts(counts[present], fraction=fraction,
                                            rng=np.random.default_rng(seed))
  return held


def min_images_per_class(layout: FolderLayout, *, test_fraction: float,
                         val_fraction: float) -> int:
  """The fewest images a class of `train_dir` needs so that every draw leaves it one image
  in each split the layout draws from it (a held-out fraction f gives a class of m images
  floor(f * m) of them, or one more)."""
  fractions = [f for f, drawn in ((test_fraction, layout.test_dir is None),
                                  (val_fraction, layout.val_dir is None)) if drawn]
  n = 1
  while True:
    left, ok = n, True
    for fraction in fractions:
      ok = ok and math.floor(fraction * left) >= 1
      left -= min(math.floor(fraction * left) + 1, left - 1)
    if ok and left >= 1:
      return n
    n += 1


def check_split_sizes(layout: FolderLayout, listing: FolderListing, *, seeds: Sequence[int],
                      test_fraction: float, test_seed: int,
                      val_fraction: float) -> tuple[str, ...]:
  """Refuses a folder whose layout would leave a split empty; returns warnings of tiny ones.

  Args:
    layout, listing: the folder (`describe_layout`, `scan_folder`).
    seeds: the experiment seeds to run (each draws its own validation split).
    test_fraction, test_seed, val_fraction: the dataset spec's draws.

  Returns:
    One line per warning: a split under `TINY_SPLIT` images, a class with no validation or
    test image.

  Raises:
    ValueError: a split would be empty (one line naming the smallest class and the images
      per class the layout needs).
  """
  flag = _flag(layout.root)
  need = min_images_per_class(layout, test_fraction=test_fraction, val_fraction=val_fraction)
  warnings = []
  for seed in seeds:
    sizes = split_sizes(layout, listing, test_fraction=test_fraction, test_seed=test_seed,
                        val_fraction=val_fraction, seed=seed)
    total = sizes["train"] + sizes["val"] + sizes["test"]
    for split, per_class in sizes.items():
      if not per_class.sum():
        smallest = int(np.argmin(total))
        raise ValueError(
            f"{flag}: the {_SPLIT_WORDS[split]} split would be empty (seed {seed}): class "
            f"{layout.class_names[smallest]!r} has {total[smallest]} usable image(s), and the "
            f"{layout.kind} layout needs at least {need} per class (one for each split it "
            f"draws); add images to the smaller classes.")
    for split in ("val", "test"):  # The splits that are measured.
      per_class, word = sizes[split], _SPLIT_WORDS[split]
      missing = [name for name, n in zip(layout.class_names, per_class) if not n]
      line = None
      if per_class.sum() < TINY_SPLIT:
        line = (f"the {word} split has only {per_class.sum()} image(s) (seed {seed}): its "
                f"accuracy moves in steps of {1 / per_class.sum():.0%}")
      if missing:
        drawn = {"val": layout.val_dir, "test": layout.test_dir}[split] is None
        line = (line + "; " if line else f"seed {seed}: ") + (
            f"{len(missing)} class(es) have no {word} image ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}"
            + (f"; {need} images per class give each one)" if drawn else ")"))
      if line and line not in warnings:
        warnings.append(line)
        logging.warning("%s: %s.", flag, line)
  return tuple(warnings)
