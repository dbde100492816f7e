"""Readers: one split of a dataset -> `tf.data` of {"image": encoded bytes, "label": ...}.

A reader is built from a `datasets.DatasetSpec` and offers `read(split)` (images not
decoded, deterministic order), `labels(split)` (the label column alone, as numpy, for
stratified held-out splits and per-class subsets) and `size(split)`. `TfdsReader` covers
TFDS and this package's builders (it builds them on first use); `FolderReader` covers
`folder:<path>` datasets.
"""

import collections
import contextlib
import logging
import os

from absl import logging as absl_logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfhub_transfer import progress
from tfhub_transfer.data import builders  # noqa: F401  (imported to register them)
from tfhub_transfer.data import folder
from tfhub_transfer.data import splits as splits_lib


class TfdsReader:
  """Reads splits of a TFDS builder, preparing it first if needed.

  Attributes:
    class_names: label names of the builder.
    info: facts for the result record (source, version, builder metadata).
  """

  def __init__(self, spec, *, data_dir, manual_dir):
    self._spec = spec
    self._builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    label_feature = check_features(spec, self._builder)
    prepare(spec, self._builder, manual_dir)
    self.class_names = tuple(label_feature.names)
    self.info = {"source": f"tfds:{spec.tfds_name}:{self._builder.version}"}
    if spec.difficult_label_key:
      # Part of the feature-cache key: the labels it stores follow this rule.
      self.info["labels"] = (f"1: in '{spec.label_key}'; -1 (ignored): in "
                             f"'{spec.difficult_label_key}' only; 0: neither")
    if self._builder.info.metadata:
      self.info["builder_metadata"] = dict(self._builder.info.metadata)

  def _as_dataset(self, split, keys):
    image_key = self._spec.image_key
    # Parse only the needed features; keep images encoded (decoding happens in the pipeline).
    decoders = tfds.decode.PartialDecoding(
        {key: True for key in keys},
        decoders={image_key: tfds.decode.SkipDecoding()} if image_key in keys else None)
    with _without_tfds_dtype_notice():
      return self._builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)

  def read(self, split):
    spec = self._spec
    to_label = make_label_fn(spec)
    keys = (spec.image_key,) + label_keys(spec)
    return self._as_dataset(split, keys).map(
        lambda ex: {"image": ex[spec.image_key], "label": to_label(ex)},
        num_parallel_calls=tf.data.AUTOTUNE)

  def labels(self, split):
    """[N] int64 class ids, or [N, C] float32 labels for a multi-label spec (`make_label_fn`:
    1 present, -1 difficult only, 0 absent)."""
    spec = self._spec
    ds = self._as_dataset(split, label_keys(spec)).map(make_label_fn(spec))
    batches = list(tfds.as_numpy(ds.batch(65536)))
    if batches:
      return np.concatenate(batches)
    return np.zeros([0, spec.num_classes] if spec.multi_label else [0],
                    np.float32 if spec.multi_label else np.int64)

  def size(self, split):
    ds = self._as_dataset(split, (self._spec.label_key,))
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(0, lambda count, _: count + 1))


class _TfdsDtypeNotice(logging.Filter):
  """Drops TFDS's "`FeatureConnector.dtype` is deprecated" warning: TFDS's own
  PartialDecoding reads that field (TFDS 4.9), so no change on our side removes it."""

  def filter(self, record):
    return "is deprecated. Please change your code to use NumPy" not in record.getMessage()


@contextlib.contextmanager
def _without_tfds_dtype_notice():
  notice = _TfdsDtypeNotice()
  absl_logging.get_absl_logger().addFilter(notice)
  try:
    yield
  finally:
    absl_logging.get_absl_logger().removeFilter(notice)


def label_keys(spec) -> tuple[str, ...]:
  """The TFDS features a label is made from."""
  return (spec.label_key,) + ((spec.difficult_label_key,) if spec.difficult_label_key else ())


def make_label_fn(spec):
  """TFDS example -> int64 class, or float32 [num_classes] for multi-label specs: 1 where
  the class is in `label_key`, -1 where it is only in `difficult_label_key` (ignored by the
  metric), 0 elsewhere."""
  if not spec.multi_label:
    return lambda example: tf.cast(example[spec.label_key], tf.int64)

  def multi_hot(labels):
    return tf.minimum(tf.reduce_sum(tf.one_hot(labels, spec.num_classes, dtype=tf.float32),
                                    axis=0), 1.0)

  def to_label(example):
    positive = multi_hot(example[spec.label_key])
    if not spec.difficult_label_key:
      return positive
    annotated = multi_hot(example[spec.difficult_label_key])
    return tf.where(positive > 0, 1.0, tf.where(annotated > 0, -1.0, 0.0))
  return to_label


def check_features(spec, builder):
  """Checks the builder's features against the spec; returns the label ClassLabel.

  Raises:
    ValueError: a feature is missing or the class count differs.
  """
  features = builder.info.features
  for key in (spec.image_key,) + label_keys(spec):
    if key not in features:
      raise ValueError(f"--dataset={spec.name}: TFDS {spec.tfds_name} has no feature {key!r} "
                       f"(it has {sorted(features)}).")
  for key in label_keys(spec):
    label = features[key]
    label = label.feature if spec.multi_label else label
    if label.num_classes != spec.num_classes:
      raise ValueError(f"--dataset={spec.name}: TFDS {spec.tfds_name} has "
                       f"{label.num_classes} classes in {key!r}, the spec says "
                       f"{spec.num_classes}.")
  return features[spec.label_key].feature if spec.multi_label else features[spec.label_key]


def prepare(spec, builder, manual_dir):
  """download_and_prepare, failing fast with instructions when manual files are missing.

  Raises:
    FileNotFoundError: `spec.manual_files` are not all in the manual dir.
    RuntimeError: TFDS failed; the message adds which files TFDS would take from manual_dir.
  """
  manual_dir = os.fspath(manual_dir or builder.data_dir_root / "downloads" / "manual")
  if not progress.is_live():
    tfds.disable_progress_bar()  # Its tqdm bars redraw with \r and escape codes.
  if spec.manual_files and not builder.is_prepared():
    missing = [f for f in spec.manual_files
               if not tf.io.gfile.exists(os.path.join(manual_dir, f.rstrip("/")))]
    if missing:
      raise FileNotFoundError(
          f"--dataset={spec.name} ({spec.tfds_name}) must be downloaded by hand: put "
          f"{', '.join(spec.manual_files)} in {manual_dir} (missing: {', '.join(missing)}), "
          f"or pass --manual_dir=DIR where they are. {spec.note}.")
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except Exception as e:  # TFDS and its downloader raise many types; add what to do.
    files = sorted({u.filename for u in (builder.url_infos or {}).values() if u.filename})
    hint = (f" Offline, put the files TFDS downloads ({', '.join(files)}) in {manual_dir}."
            if files else "")
    raise RuntimeError(f"Could not download and prepare --dataset={spec.name} "
                       f"(TFDS {spec.tfds_name}) in {builder.data_dir_root}: "
                       f"{type(e).__name__}: {e}.{hint} {spec.note}") from e


class FolderReader:
  """Reads a validated `folder:` dataset; its layout's rule (`folder.RULES`) makes the splits.

  Without a test folder, the test split is a fixed class-stratified `spec.test_fraction` of
  train (seed `test_seed`).

  Attributes:
    class_names: sorted class-folder names.
    info: facts for the result record (source, the layout's rule, the listing's key, the
      skipped files by reason).
  """

  def __init__(self, spec, *, test_seed, cache_dir=None):
    layout = folder.describe_layout(spec.folder)
    listing = folder.scan_folder(layout, cache_dir=cache_dir)
    self._spec, self._test_seed = spec, test_seed
    self._layout, self._listing = layout, listing
    self.class_names = layout.class_names
    train, test = listing.train, listing.test
    if layout.test_dir is None:
      mask = splits_lib.stratified_split([label for _, label in train],
                                         fraction=spec.test_fraction, seed=test_seed)
      train = tuple(ex for ex, is_test in zip(listing.train, mask) if not is_test)
      test = tuple(ex for ex, is_test in zip(listing.train, mask) if is_test)
    self._pools = {"train": train, "val": listing.val, "test": test}
    rule = layout.rule(test_fraction=spec.test_fraction or 0.0, test_seed=test_seed,
                       val_fraction=spec.val_fraction)
    absl_logging.info("folder:%s: %s.", spec.folder, rule)
    reasons = collections.Counter(reason.split(" (")[0] for _, reason in listing.skipped)
    self.info = {"source": f"folder:{spec.folder}", "layout": rule,
                 "folder_listing": listing.key, "skipped_files": len(listing.skipped),
                 "skipped_reasons": dict(sorted(reasons.items()))}

  def check_split_sizes(self, seed):
    """`folder.check_split_sizes` for the experiment seed: raises where a split would be
    empty; returns the warnings (tiny splits)."""
    return folder.check_split_sizes(self._layout, self._listing, seeds=(seed,),
                                    test_fraction=self._spec.test_fraction or 0.0,
                                    test_seed=self._test_seed,
                                    val_fraction=self._spec.val_fraction)

  def read(self, split):
    paths = [path for path, _ in self._pools[split]]
    labels = [label for _, label in self._pools[split]]
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string, shape=[len(paths)]),
         tf.constant(labels, tf.int64, shape=[len(labels)])))
    return ds.map(lambda path, label: {"image": tf.io.read_file(path), "label": label},
                  num_parallel_calls=tf.data.AUTOTUNE)

  def labels(self, split):
    return np.array([label for _, label in self._pools[split]], dtype=np.int64)

  def size(self, split):
    return len(self._pools[split])
