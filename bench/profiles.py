"""How big each figure runs: `cpu` (2 cores, about 10 minutes), `device` (one GPU, a few
minutes) and `tiny` (the test: seconds, numbers meaningless)."""

import dataclasses
import os

# The checkout, and the real weights and photos beside it (figures 9 and 10): through this
# file's real path, since under Bazel it is a runfiles link to the checkout's file.
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10")

# `python -m bench --part=NAME`: the figures in named parts, each meant to take at most about
# 8 minutes of the `device` profile (an estimate from the CPU run's figure times scaled by the
# sizes: no GPU run has been made yet), so a GPU session can run and store them one at a
# time. Figures 5 and 7 share their fresh-process extraction runs, so they share a part.
PARTS = {
    "extract": ("1", "6"),
    "logreg": ("2",),
    "cells": ("3", "4"),
    "memory": ("5", "7"),
    "precision": ("8",),
    "preprocessing": ("9",),
    "study": ("10",),
}

# The `metrics.METRICS` that figure 2 can compare: scikit-learn's side is one softmax.
SINGLE_LABEL_METRICS = ("top1", "mean_per_class")


@dataclasses.dataclass(frozen=True)
class LogregCase:
  """Cached features of one dataset's size for figure 2.

  Attributes:
    key: the figure key ("2a", ...).
    name: the dataset whose size this is.
    num_examples: train + val (the paper's training-set size, or a subsample of it).
    dim: feature size (that of the backbone the features would come from).
    num_classes: classes.
    metric: the dataset's metric (`metrics.METRICS`).
    note: how it relates to the real dataset (e.g. subsampled, and why), or where the
      features come from.
    features_path: features and labels to load (`data.load_features`) instead of making
      synthetic ones of this size.
  """
  key: str
  name: str
  num_examples: int
  dim: int
  num_classes: int
  metric: str
  note: str = ""
  features_path: str = ""


@dataclasses.dataclass(frozen=True)
class Profile:
  """Sizes and repetitions of every figure (medians and spreads are over the repetitions).

  Attributes:
    name: profile name.
    image_size: input resolution of figures 1 and 4 (0: each backbone's own).
    extract_models: (backbone, images) per row of figure 1: forward alone vs full path.
    extract_batch: batch size of figure 1.
    extract_repetitions: timed runs of each side of figure 1.
    logreg_cases: figure 2's feature sets.
    logreg_repetitions: timed paths of the project's solver per case.
    sklearn_repetitions: timed paths of scikit-learn per case (the slow side).
    cell_model, cell_image_size, cell_max_examples, cell_batch: figure 3's logreg cell on
      `digits` (max_examples caps each split).
    cell_repetitions: first/second run pairs, each in a fresh workdir.
    train_model, train_image_size, train_batch, train_steps: figure 4 (steps per timed run).
    train_repetitions: timed runs of each side of figure 4.
    memory_model, memory_image_size, memory_batch, memory_counts: figure 5 (the first count
      is the baseline), on small JPEGs cycled lazily from disk.
    memory_repetitions: fresh processes per count.
    shared_models: figure 6's backbones (one resolution), extracted in one decode pass, at
      `image_size` and `extract_batch`.
    shared_images: images per run of figure 6.
    shared_repetitions: timed runs of each side of figure 6.
    curve_examples, curve_dims: figure 7's logreg path sizes, in examples (at
      `curve_fixed_dim` features) and in feature dims (at `curve_fixed_examples` examples).
    curve_classes: classes of figure 7's logreg features.
    curve_examples_goal: goal on the logreg path's time exponent in examples.
    curve_train_model, curve_train_image_size, curve_train_batches, curve_train_steps:
      figure 7's training-step curve: backbone, resolution, batch sizes, steps per run.
    curve_repetitions: timed runs per size of figure 7's in-process curves (its extraction
      curve is figure 5's runs).
    precision_model, precision_image_size, precision_batch, precision_steps: figure 8's
      training steps (steps per timed run).
    precision_settings: (precision, jit_compile) pairs compared with float32 without XLA.
    precision_repetitions: timed runs of each setting of figure 8.
    preprocess_image_size: figure 9's output resolution.
    preprocess_photos: pets37 photos per pass of figure 9 (0: all 370).
    preprocess_synthetic: synthetic TFDS-size JPEGs per pass of figure 9.
    preprocess_repetitions: timed passes of each side of figure 9.
    preprocess_photos_dir: figure 9's photos, `<dir>/<class>/*.jpg` (empty: pets37 in the
      shared data beside the repository).
    study_image_size, study_batch, study_steps: figure 10's mini-study: resolution, batch
      size and step budget of each trial and refit.
    study_learning_rates: its trials (one per learning rate; weight decay 0).
    study_l2_grid_size: its logreg cells' L2 path length.
    study_max_examples: cap on each split of its datasets (0: all).
    study_datasets: its folders in ../shared/data/ (or `study_data_dir`).
    study_data_dir: where `study_datasets` are (empty: the shared data beside the
      repository).
    study_model: its backbone, pretrained side with the model's own weights (empty: Keras
      MobileNet alpha 0.25 with the shared ImageNet weights file; the test uses a tiny Hub
      SavedModel, hermetic and cheap to trace).
    study_reference_rate: also time ResNet-50's forward pass, for the rates the study
      records for `tfhub_transfer.estimate` (off in the test: a ResNet-50 build).
  """
  name: str
  image_size: int
  extract_models: tuple[tuple[str, int], ...]
  extract_batch: int
  extract_repetitions: int
  logreg_cases: tuple[LogregCase, ...]
  logreg_repetitions: int
  sklearn_repetitions: int
  cell_model: str
  cell_image_size: int
  cell_max_examples: int
  cell_batch: int
  cell_repetitions: int
  train_model: str
  train_image_size: int
  train_batch: int
  train_steps: int
  train_repetitions: int
  memory_model: str
  memory_image_size: int
  memory_batch: int
  memory_counts: tuple[int, ...]
  memory_repetitions: int
  shared_models: tuple[str, ...]
  shared_images: int
  shared_repetitions: int
  curve_examples: tuple[int, ...]
  curve_dims: tuple[int, ...]
  curve_fixed_dim: int
  curve_fixed_examples: int
  curve_classes: int
  curve_examples_goal: str
  curve_train_model: str
  curve_train_image_size: int
  curve_train_batches: tuple[int, ...]
  curve_train_steps: int
  curve_repetitions: int
  precision_model: str
  precision_image_size: int
  precision_batch: int
  precision_steps: int
  precision_settings: tuple[tuple[str, bool], ...]
  precision_repetitions: int
  preprocess_image_size: int
  preprocess_photos: int
  preprocess_synthetic: int
  preprocess_repetitions: int
  preprocess_photos_dir: str = ""
  study_image_size: int = 64
  study_batch: int = 32
  study_steps: int = 40
  study_learning_rates: tuple[float, ...] = (0.01, 0.1)
  study_l2_grid_size: int = 12
  study_max_examples: int = 0
  study_datasets: tuple[str, ...] = ("cub_birds20", "pets37")
  study_data_dir: str = ""
  study_model: str = ""
  study_reference_rate: bool = True


# Figure 8: each mixed precision, then XLA (in float32), against float32 without XLA.
_PRECISION_SETTINGS = (("mixed_bfloat16", False), ("mixed_float16", False), ("float32", True))

_CALTECH = LogregCase("2a", "Caltech-101", 3060, 1280, 102, "mean_per_class",
                      "full size: 3,060 = 2,448 train + 612 val (20% stratified)")

PROFILES = {
    "cpu": Profile(
        name="cpu", image_size=0,
        extract_models=(("mobilenet_v2", 256), ("resnet_50", 96)), extract_batch=32,
        extract_repetitions=5,
        logreg_cases=(
            _CALTECH,
            LogregCase("2b", "Food-101", 1010, 2048, 101, "top1",
                       "Food-101's feature size and classes, subsampled to 1,010 examples "
                       "(10 per class) on CPU: scikit-learn's side takes 20-100 s here, "
                       "and each of its iterations would cost 75x more on all 75,750")),
        logreg_repetitions=3, sklearn_repetitions=1,
        cell_model="mobilenet_v2", cell_image_size=224, cell_max_examples=0, cell_batch=32,
        cell_repetitions=3,
        train_model="mobilenet_v2", train_image_size=160, train_batch=32, train_steps=8,
        train_repetitions=6,
        memory_model="mobilenet_v2", memory_image_size=48, memory_batch=128,
        memory_counts=(1000, 4000, 16000), memory_repetitions=2,
        shared_models=("mobilenet_v1", "mobilenet_v2", "mobilenet_v2_140", "nasnet_mobile"),
        shared_images=256, shared_repetitions=4,
        curve_examples=(1000, 4000, 16000), curve_dims=(512, 2048, 4096), curve_fixed_dim=512,
        curve_fixed_examples=4000, curve_classes=100, curve_examples_goal="<= 1.2",
        curve_train_model="mobilenet_v1", curve_train_image_size=96,
        curve_train_batches=(8, 16, 32), curve_train_steps=3, curve_repetitions=2,
        precision_model="mobilenet_v1", precision_image_size=96, precision_batch=16,
        precision_steps=2, precision_repetitions=3,
        # float16 has no fast CPU kernels (a MobileNetV2 step took 30 times float32's).
        precision_settings=(("mixed_bfloat16", False), ("float32", True)),
        preprocess_image_size=224, preprocess_photos=0, preprocess_synthetic=256,
        preprocess_repetitions=5),
    "device": Profile(
        name="device", image_size=0,
        extract_models=(("mobilenet_v2", 2048), ("resnet_50", 1024)), extract_batch=256,
        extract_repetitions=5,
        logreg_cases=(
            _CALTECH,
            LogregCase("2b", "Food-101", 10100, 2048, 101, "top1",
                       "Food-101's feature size and classes, subsampled to 10,100 examples "
                       "(100 per class): scikit-learn runs on the host CPU and would not "
                       "finish all 75,750 within the device budget")),
        logreg_repetitions=3, sklearn_repetitions=1,
        cell_model="resnet_50", cell_image_size=224, cell_max_examples=0, cell_batch=256,
        cell_repetitions=3,
        train_model="resnet_50", train_image_size=224, train_batch=128, train_steps=30,
        train_repetitions=5,
        memory_model="mobilenet_v2", memory_image_size=224, memory_batch=256,
        memory_counts=(1000, 4000, 16000), memory_repetitions=2,
        shared_models=("mobilenet_v2", "resnet_50", "resnet_101", "densenet_121"),
        shared_images=1024, shared_repetitions=3,
        curve_examples=(4000, 16000, 64000), curve_dims=(512, 2048, 4096),
        curve_fixed_dim=2048, curve_fixed_examples=16000, curve_classes=100,
        curve_examples_goal="<= 1.2", curve_train_model="resnet_50", curve_train_image_size=224,
        curve_train_batches=(32, 64, 128), curve_train_steps=10, curve_repetitions=2,
        precision_model="resnet_50", precision_image_size=224, precision_batch=128,
        precision_steps=10, precision_repetitions=3,
        precision_settings=_PRECISION_SETTINGS,
        preprocess_image_size=224, preprocess_photos=0, preprocess_synthetic=256,
        preprocess_repetitions=5,
        study_image_size=224, study_batch=64, study_steps=200),
    # One repetition per figure (each a trace-bound CPU cost in the test), except figure 1
    # (two: a paired median over several pairs) and figure 2 (2 vs 1: an unpaired ratio).
    "tiny": Profile(
        name="tiny", image_size=32,
        extract_models=(("mobilenet_v2", 8),), extract_batch=4, extract_repetitions=2,
        logreg_cases=(LogregCase("2a", "tiny", 60, 16, 3, "mean_per_class", "test size"),),
        logreg_repetitions=2, sklearn_repetitions=1,
        cell_model="mobilenet_v2", cell_image_size=32, cell_max_examples=12, cell_batch=8,
        cell_repetitions=1,
        train_model="mobilenet_v2", train_image_size=32, train_batch=4, train_steps=2,
        train_repetitions=1,
        memory_model="mobilenet_v2", memory_image_size=32, memory_batch=8,
        memory_counts=(16, 32), memory_repetitions=1,
        shared_models=("mobilenet_v2", "mobilenet_v1"), shared_images=8,
        shared_repetitions=1,
        curve_examples=(60, 120, 240), curve_dims=(8, 16, 32), curve_fixed_dim=8,
        curve_fixed_examples=60, curve_classes=3, curve_examples_goal="<= 1.2",
        curve_train_model="mobilenet_v2", curve_train_image_size=32,
        curve_train_batches=(2, 4, 8), curve_train_steps=1, curve_repetitions=1,
        precision_model="mobilenet_v2", precision_image_size=32, precision_batch=4,
        precision_steps=1, precision_repetitions=1,
        # A tiny Hub backbone runs in float32 only: the test times XLA alone.
        precision_settings=(("float32", True),),
        preprocess_image_size=32, preprocess_photos=8, preprocess_synthetic=8,
        preprocess_repetitions=1,
        study_image_size=32, study_batch=4, study_steps=1, study_learning_rates=(0.01,),
        study_l2_grid_size=3, study_max_examples=8, study_datasets=("pets37",),
        study_reference_rate=False),
}


def get_profile(name: str) -> Profile:
  if name not in PROFILES:
    raise ValueError(f"Unknown benchmark profile {name!r}. Valid: {', '.join(PROFILES)}.")
  return PROFILES[name]
