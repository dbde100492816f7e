"""The paper's 12 transfer datasets, the `digits` smoke set and `folder:` datasets.

Every fact about a dataset (where it comes from, its features, classes, metric, how its
validation split is made, the paper's sizes, what a user must download by hand) lives in its
`DatasetSpec`. `loading.load_splits` turns a spec into train / val / trainval / test
`tf.data` datasets. This registry is TF-free, so `--list_datasets` and flag checks are fast.

Validation splits follow the paper: the official one where a dataset has it (FGVC Aircraft,
VOC2007, DTD, Flowers); otherwise a class-stratified `val_fraction` of train drawn from the
experiment seed (`splits.stratified_split`). `trainval` = train + val, for the final refit.
"""

import dataclasses
import os
from typing import Optional

from tfhub_transfer import columns
from tfhub_transfer import metrics
from tfhub_transfer.data import folder
from tfhub_transfer.data import manual_files

TOP1 = metrics.TOP1
MEAN_PER_CLASS = metrics.MEAN_PER_CLASS
MAP_11POINT = metrics.MAP_11POINT

TFDS = "tfds"
PROJECT_BUILDER = "tfhub_transfer"  # A TFDS builder of this package (`builders/`).
FOLDER = "folder"

FOLDER_PREFIX = "folder:"
# A flat folder's test split: fixed seed, so it is the same for every experiment.
FOLDER_TEST_FRACTION = 0.2
FOLDER_TEST_SEED = 0
SPLIT_NAMES = ("train", "val", "trainval", "test")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One transfer dataset.

  Attributes:
    name: registry name (or `folder:<path>`).
    source: `tfds`, `tfhub_transfer` (a TFDS builder of this package) or `folder`.
    tfds_name: TFDS `name[/config]` (None for folders).
    num_classes: number of classes.
    metric: the paper's metric: `top1`, `mean_per_class` or `map_11point`.
    paper_train_size: the paper's training-set size, i.e. train + val (None: not in paper).
    paper_test_size: the paper's test-set size.
    image_key: TFDS feature holding the image.
    label_key: TFDS feature holding the label (a sequence of labels when multi-label).
    difficult_label_key: multi-label only: a TFDS feature listing every annotated class,
      difficult objects included, where `label_key` lists the classes with a non-difficult
      object. A class in the former but not the latter is ignored by the metric (label -1)
      and is a negative in training (None: no such distinction).
    multi_label: labels are float32 [num_classes] (1 positive, 0 negative, -1 ignored)
      instead of an int64 class.
    train_split: TFDS split of the training pool.
    val_split: official TFDS validation split; None: held out of `train_split`.
    test_split: TFDS split used as test.
    val_fraction: share of `train_split` held out for validation when `val_split` is None.
    test_fraction: share of a flat folder held out as test (None: the source has a test split).
    manual_files: files (a trailing '/' marks a folder) the user must put in the TFDS manual
      dir before the first build.
    status: short source status, for listings.
    note: provenance and caveats, for errors and the result record.
    smoke: not a paper dataset; for quick end-to-end runs.
    folder: root of a `folder:` dataset.
  """
  name: str
  source: str
  tfds_name: Optional[str]
  num_classes: int
  metric: str
  paper_train_size: Optional[int]
  paper_test_size: Optional[int]
  image_key: str = "image"
  label_key: str = "label"
  difficult_label_key: Optional[str] = None
  multi_label: bool = False
  train_split: str = "train"
  val_split: Optional[str] = None
  test_split: str = "test"
  val_fraction: float = 0.2
  test_fraction: Optional[float] = None
  manual_files: tuple[str, ...] = ()
  status: str = "TFDS download"
  note: str = ""
  smoke: bool = False
  folder: Optional[str] = None

  @property
  def heldout_val(self) -> bool:
    return self.val_split is None

  def describe_val(self) -> str:
    if self.heldout_val:
      return f"{self.val_fraction:.0%} stratified held-out of train (experiment seed)"
    return f"official '{self.val_split}' split"


_CARS_FILES = ("cars_train.tgz", "cars_test.tgz", "car_devkit.tgz",
               "cars_test_annos_withlabels.mat")
_BIRDSNAP_FILES = manual_files.BIRDSNAP_LIST_FILES + (manual_files.BIRDSNAP_IMAGES_DIR + "/",)

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("food101", TFDS, "food101", 101, TOP1, 75750, 25250, test_split="validation",
                note="TFDS 'validation' is the official test list; food-101.tar.gz is 5 GB"),
    DatasetSpec("cifar10", TFDS, "cifar10", 10, TOP1, 50000, 10000),
    DatasetSpec("cifar100", TFDS, "cifar100", 100, TOP1, 50000, 10000),
    DatasetSpec(
        "birdsnap", PROJECT_BUILDER, "birdsnap", 500, TOP1, 47386, 2443,
        manual_files=_BIRDSNAP_FILES, status="manual: URL lists, fetch images",
        note=("Birdsnap ships only Flickr URL lists: fetch the images with the official "
              "get_birdsnap.py; many are gone, so the sizes are those found (the builder's "
              "metadata records listed/found counts)")),
    DatasetSpec(
        "sun397", TFDS, "sun397/standard-part1-120k", 397, TOP1, 19850, 19850,
        manual_files=("SUN397.tar.gz", "Partitions.zip"), status="manual: URL unreliable",
        note=("first official partition (19,850 / 19,850), images resized by TFDS to at most "
              "120k pixels; the Princeton URL is often unreachable")),
    DatasetSpec("stanford_cars", TFDS, "cars196", 196, TOP1, 8144, 8041,
                manual_files=_CARS_FILES, status="manual: TFDS URL dead",
                note="TFDS cars196; its Stanford download URLs are dead"),
    DatasetSpec(
        "fgvc_aircraft", PROJECT_BUILDER, "fgvc_aircraft", 100, MEAN_PER_CLASS, 6667, 3333,
        val_split="validation", status="download or manual",
        note=("fgvc-aircraft-2013b, 100 variants, official train/val/test; the 20-px "
              "copyright banner is cropped; offline, put fgvc-aircraft-2013b.tar.gz in "
              "manual_dir")),
    DatasetSpec(
        "voc2007", TFDS, "voc/2007", 20, MAP_11POINT, 5011, 4952,
        label_key="labels_no_difficult", difficult_label_key="labels", multi_label=True,
        val_split="validation",
        note=("multi-label, as the VOC07 devkit scores it: a class is positive if a "
              "non-difficult object of it is annotated (TFDS 'labels_no_difficult'); a class "
              "whose only objects are 'difficult' is ignored in that class's AP and is a "
              "negative in training; official train/val/test")),
    DatasetSpec("dtd", TFDS, "dtd", 47, TOP1, 3760, 1880, val_split="validation",
                note="first of the 10 official splits (train1/val1/test1)"),
    DatasetSpec("oxford_pets", TFDS, "oxford_iiit_pet", 37, MEAN_PER_CLASS, 3680, 3669),
    DatasetSpec(
        "caltech101", TFDS, "caltech101", 102, MEAN_PER_CLASS, 3060, 6084,
        note=("TFDS train is already 30 random images per class (TFDS's fixed seed), test the "
              "other 6,084; 102 classes including BACKGROUND_Google")),
    DatasetSpec("oxford_flowers", TFDS, "oxford_flowers102", 102, MEAN_PER_CLASS, 2040, 6149,
                val_split="validation"),
    DatasetSpec("digits", PROJECT_BUILDER, "digits", 10, TOP1, None, None, smoke=True,
                status="bundled (smoke)",
                note="SMOKE dataset: scikit-learn's 8x8 digits at 32x32, offline"),
]}


def folder_spec(name: str) -> DatasetSpec:
  """The spec of `folder:<path>` (lists the split and class folders, validates no image).

  Raises:
    FileNotFoundError: the folder or its class folders are missing.
    ValueError: the layout is ambiguous, or has fewer than two classes.
  """
  root = os.path.abspath(os.path.expanduser(name[len(FOLDER_PREFIX):]))
  layout = folder.describe_layout(root)
  test_fraction = FOLDER_TEST_FRACTION if layout.test_dir is None else None
  spec = DatasetSpec(
      name=name, source=FOLDER, tfds_name=None, num_classes=len(layout.class_names),
      metric=TOP1, paper_train_size=None, paper_test_size=None,
      val_split="val" if layout.val_dir else None, test_fraction=test_fraction,
      status="user folder", folder=root)
  rule = layout.rule(test_fraction=FOLDER_TEST_FRACTION, test_seed=FOLDER_TEST_SEED,
                     val_fraction=spec.val_fraction)
  return dataclasses.replace(spec, note=f"images in {root}; {rule}")


def check_folder_splits(spec: DatasetSpec, *, seeds, cache_dir=None) -> tuple[str, ...]:
  """Validates a `folder:` dataset's images and refuses a split it would leave empty, for
  each seed, before any work (`folder.check_split_sizes`); returns the warnings.

  Raises:
    ValueError: a class folder without a usable image, or a split that would be empty.
  """
  layout = folder.describe_layout(spec.folder)
  listing = folder.scan_folder(layout, cache_dir=cache_dir)
  return folder.check_split_sizes(layout, listing, seeds=seeds,
                                  test_fraction=spec.test_fraction or 0.0,
                                  test_seed=FOLDER_TEST_SEED, val_fraction=spec.val_fraction)


def get_dataset_spec(name: str) -> DatasetSpec:
  """Resolves a `--dataset` value.

  Args:
    name: a registry name or `folder:<path>`.

  Returns:
    The spec.

  Raises:
    ValueError: unknown name.
    FileNotFoundError: a `folder:` path without class folders.
    ValueError: a `folder:` path with an ambiguous layout or a single class.
  """
  if name.startswith(FOLDER_PREFIX):
    return folder_spec(name)
  if name in DATASETS:
    return DATASETS[name]
  raise ValueError(f"Unknown --dataset={name!r}. Valid choices: {', '.join(DATASETS)}; or "
                   f"'{FOLDER_PREFIX}<path>' for class-per-subfolder images.")


def format_datasets_table() -> str:
  """A text table of the registry, for `--list_datasets`."""
  header = ("name", "classes", "train", "test", "metric", "validation", "source")
  rows = [header]
  for spec in DATASETS.values():
    rows.append((
        spec.name + (" (smoke)" if spec.smoke else ""), str(spec.num_classes),
        f"{spec.paper_train_size:,}" if spec.paper_train_size else "-",
        f"{spec.paper_test_size:,}" if spec.paper_test_size else "-", spec.metric,
        f"{spec.val_fraction:.0%} held-out" if spec.heldout_val else "official",
        f"{spec.tfds_name}: {spec.status}"))
  return (columns.align(rows, rule=True) + "\ntrain/test: the paper's sizes (train = train + "
          f"val). Also: {FOLDER_PREFIX}<path>: <path>/<class>/*, or <path>/train/<class>/* "
          f"with <path>/val/ (or valid/, validation/) and/or <path>/test/ (docs/data.md: Your own "
          f"images).")
