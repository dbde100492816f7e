"""How big each figure runs: `cpu` (2 cores, under 10 minutes), `device` (one GPU, under 5
minutes) and `tiny` (the test: seconds, numbers meaningless)."""

import dataclasses

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
        memory_counts=(1000, 4000, 16000), memory_repetitions=2),
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
        memory_counts=(1000, 4000, 16000), memory_repetitions=2),
    "tiny": Profile(
        name="tiny", image_size=32,
        extract_models=(("mobilenet_v2", 8),), extract_batch=4, extract_repetitions=2,
        logreg_cases=(LogregCase("2a", "tiny", 60, 16, 3, "mean_per_class", "test size"),),
        logreg_repetitions=2, sklearn_repetitions=1,
        cell_model="mobilenet_v2", cell_image_size=32, cell_max_examples=12, cell_batch=8,
        cell_repetitions=2,
        train_model="mobilenet_v2", train_image_size=32, train_batch=4, train_steps=2,
        train_repetitions=2,
        memory_model="mobilenet_v2", memory_image_size=32, memory_batch=8,
        memory_counts=(16, 32), memory_repetitions=1),
}


def get_profile(name: str) -> Profile:
  if name not in PROFILES:
    raise ValueError(f"Unknown benchmark profile {name!r}. Valid: {', '.join(PROFILES)}.")
  return PROFILES[name]
