"""`load_splits`: a `datasets.DatasetSpec` -> train / val / trainval / test `tf.data` datasets.

The splits are encoded images in deterministic order, for `pipeline.make_pipeline`.
Validation splits follow the paper: the official one where a dataset has it (FGVC Aircraft,
VOC2007, DTD, Flowers, a folder's val/); otherwise a class-stratified `val_fraction` of train
drawn from the experiment seed (`splits.stratified_split`). `trainval` = train + val, for the
final refit.

A low-data cell (`examples_per_class=K`) trains on a class-balanced subset of K images per
class (`splits.per_class_subset`), drawn with the experiment seed from the training part only
(never from validation or test). Validation and test stay whole; the final model is trained
on the subset alone (`trainval` = the subset), since adding validation to it would add
images the study withholds.
"""

import dataclasses
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tfhub_transfer.data import datasets
from tfhub_transfer.data import readers
from tfhub_transfer.data import splits as splits_lib


@dataclasses.dataclass(frozen=True)
class Splits:
  """The four splits of one dataset, as encoded-image `tf.data` datasets.

  Attributes:
    train, val, trainval, test: datasets of {"image": encoded bytes (tf.string), "label":
      int64 scalar, or float32 multi-hot [num_classes]}, in deterministic order, not decoded.
    sizes: split name -> number of examples.
    info: facts for the result record (source, version, how val was made, its fraction and
      seed, caps, skipped files, notes, and a folder's `warnings`: tiny splits).
    class_names: label names, indexed by class id.
    refit_with_val: whether the final model is refitted on train + val (False in a low-data
      cell, whose final model sees only its subset: `trainval` is then the subset).
  """
  train: tf.data.Dataset
  val: tf.data.Dataset
  trainval: tf.data.Dataset
  test: tf.data.Dataset
  sizes: dict[str, int]
  info: dict[str, Any]
  class_names: tuple[str, ...]
  refit_with_val: bool = True


def load_splits(spec: datasets.DatasetSpec, *, data_dir: Optional[str] = None,
                manual_dir: Optional[str] = None, seed: int = 0,
                max_examples: int = 0, folder_cache_dir: Optional[str] = None,
                examples_per_class: int = 0) -> Splits:
  """Builds (if needed) and reads a dataset's train / val / trainval / test splits.

  Args:
    spec: the dataset.
    data_dir: TFDS data dir (None: TFDS's default, ~/tensorflow_datasets).
    manual_dir: TFDS manual dir (None: <data_dir>/downloads/manual).
    seed: experiment seed; draws the held-out validation split.
    max_examples: caps each split (0: no cap), for smoke runs. Held-out splits are drawn
      from the whole training pool first, then capped.
    folder_cache_dir: where a `folder:` dataset's validated listing is kept, so that a sweep
      validates its images once (None: for this process only).
    examples_per_class: K > 0 trains on a class-balanced random subset of K images per
      class of the training part (fewer where a class has fewer), drawn with `seed`; the
      refit split is then that subset alone (see the module docstring). 0: all.

  Returns:
    The splits.

  Raises:
    FileNotFoundError: files the user must download by hand are missing; the message says
      which, and where to put them.
    RuntimeError: TFDS could not download or prepare the dataset.
    ValueError: the TFDS features disagree with the spec, a folder's class has no usable
      image, a folder's split would be empty, or examples_per_class < 0.
  """
  if examples_per_class < 0:
    raise ValueError(f"--examples_per_class={examples_per_class} must be >= 0 (0: all "
                     f"training images).")
  if spec.heldout_val and spec.multi_label:
    raise ValueError(f"--dataset={spec.name}: a held-out validation split is stratified by "
                     f"class and needs single labels; give the spec an official val_split.")
  if spec.source == datasets.FOLDER:
    reader = readers.FolderReader(spec, test_seed=datasets.FOLDER_TEST_SEED,
                                  cache_dir=folder_cache_dir)
  else:
    reader = readers.TfdsReader(spec, data_dir=data_dir, manual_dir=manual_dir)
  info = {"dataset": spec.name, **reader.info, "validation": spec.describe_val(),
          "max_examples": max_examples, "note": spec.note}
  if spec.source == datasets.FOLDER:
    warnings = reader.check_split_sizes(seed)
    if warnings:
      info["warnings"] = list(warnings)
  if spec.heldout_val:
    pool, labels = reader.read(spec.train_split), reader.labels(spec.train_split)
    val_mask = splits_lib.stratified_split(labels, fraction=spec.val_fraction, seed=seed)
    train_mask = ~val_mask
    if examples_per_class:
      train_mask, info["subset"] = _subset(labels, train_mask, examples_per_class, seed)
    train_mask = splits_lib.cap_mask(train_mask, max_examples)
    val_mask = splits_lib.cap_mask(val_mask, max_examples)
    train, val = _select(pool, train_mask), _select(pool, val_mask)
    trainval = _select(pool, train_mask | val_mask)
    sizes = {"train": int(train_mask.sum()), "val": int(val_mask.sum())}
    info.update(val_fraction=spec.val_fraction, heldout_seed=seed)
  else:
    if examples_per_class:
      labels = reader.labels(spec.train_split)
      train_mask, info["subset"] = _subset(labels, np.ones(len(labels), bool),
                                           examples_per_class, seed)
      train_mask = splits_lib.cap_mask(train_mask, max_examples)
      train, train_size = _select(reader.read(spec.train_split), train_mask), train_mask.sum()
    else:
      train, train_size = _cap(reader.read(spec.train_split), reader.size(spec.train_split),
                               max_examples)
    val, val_size = _cap(reader.read(spec.val_split), reader.size(spec.val_split),
                         max_examples)
    trainval = train.concatenate(val)
    sizes = {"train": int(train_size), "val": val_size}
  test, sizes["test"] = _cap(reader.read(spec.test_split), reader.size(spec.test_split),
                             max_examples)
  sizes["trainval"] = sizes["train"] + sizes["val"]
  if examples_per_class:
    trainval, sizes["trainval"] = train, sizes["train"]
    info["refit"] = "the subset alone (validation only selects hyperparameters)"
  sizes = {name: sizes[name] for name in datasets.SPLIT_NAMES}
  return Splits(train=train, val=val, trainval=trainval, test=test, sizes=sizes,
                info={**info, "sizes": sizes}, class_names=reader.class_names,
                refit_with_val=not examples_per_class)


def _subset(labels, allowed, examples_per_class, seed):
  """The per-class subset of the `allowed` examples, as a mask over all, and its facts."""
  allowed_index = np.flatnonzero(allowed)
  picked = splits_lib.per_class_subset(labels[allowed_index],
                                       examples_per_class=examples_per_class, seed=seed)
  mask = np.zeros(len(labels), dtype=bool)
  mask[allowed_index[picked]] = True
  return mask, splits_lib.describe_subset(labels[allowed_index], picked,
                                          examples_per_class=examples_per_class, seed=seed)


def _select(ds, mask):
  """The examples of `ds` whose index is True in `mask`, in order."""
  keep = tf.constant(mask, dtype=tf.bool)

  def is_kept(index, unused_example):
    return tf.gather(keep, index)

  def drop_index(unused_index, example):
    return example

  kept = np.flatnonzero(mask)
  # Stop reading after the last kept example (a capped split keeps only the first ones).
  ds = ds.take(int(kept[-1]) + 1 if kept.size else 0)
  ds = ds.enumerate().filter(is_kept).map(drop_index)
  return ds.apply(tf.data.experimental.assert_cardinality(int(mask.sum())))


def _cap(ds, size, max_examples):
  if max_examples and size > max_examples:
    return ds.take(max_examples), max_examples
  return ds, size
