"""`tfhub_transfer`: the command line. Flags -> one frozen config -> one library call.

  tfhub_transfer --model=mobilenet_v2 --dataset=caltech101 --regime=logreg --workdir=W
  tfhub_transfer --flagfile=flags/quickstart.cfg
  tfhub_transfer --model=resnet_50,densenet_121 --dataset=dtd,oxford_pets \
      --regime=logreg,finetune --seeds=0,1 --shard=0/2       # a resumable sweep
  tfhub_transfer --mode=report --workdir=W
  tfhub_transfer --list_models | --list_datasets

Every choice list comes from the library's registries; library modules that import TensorFlow
are imported where used, so `--help` and the listings answer quickly.
"""

import logging
import os
import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging

from tfhub_transfer import regimes
from tfhub_transfer.config import PRECISIONS, STRATEGIES, TUNERS, ExperimentConfig, FrozenKwargs

_MODE = flags.DEFINE_enum("mode", "run", ["run", "report"],
                          "run: run the cells; report: tables, correlations and plots.")
_LIST_MODELS = flags.DEFINE_bool("list_models", False, "Print the backbone zoo and exit.")
_LIST_DATASETS = flags.DEFINE_bool("list_datasets", False, "Print the datasets and exit.")
_MODEL = flags.DEFINE_list(
    "model", [], "Backbone(s): registry names (see --list_models), hub:<handle or "
    "SavedModel dir>, or keras:<Application>. Comma-separated for a sweep.")
_DATASET = flags.DEFINE_list(
    "dataset", [], "Dataset(s): registry names (see --list_datasets), digits, or "
    "folder:<path>. Comma-separated for a sweep.")
_REGIME = flags.DEFINE_list("regime", [], f"Regime(s): {', '.join(regimes.REGIMES)}.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seed(s) of splits, init and search.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir",
                               "Results store, feature cache, checkpoints, tuner state, logs.")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "imagenet, random, or a path (Keras weights file or SavedModel dir). "
    "Default: each regime's own (" + ", ".join(
        f"{name}: {spec.default_weights}" for name, spec in regimes.REGIMES.items()) + ").")
_MODEL_KWARGS = flags.DEFINE_string("model_kwargs", "{}",
                                    "JSON keras.applications kwargs, e.g. '{\"alpha\": 0.25}'.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Input resolution (0: the model's own).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "TFDS manual_dir for datasets downloaded by hand.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", 0, "Steps per finetune/scratch trial (0: a quick default; the paper "
    "flagfiles set the paper's budgets).")
_LEARNING_RATES = flags.DEFINE_list("learning_rates", [],
                                    "Learning-rate grid (empty: the paper's for the regime).")
_WEIGHT_DECAYS = flags.DEFINE_list("weight_decays", [],
                                   "Weight-decay grid (empty: the paper's for the regime).")
_TUNER = flags.DEFINE_enum("tuner", "grid", TUNERS, "keras-tuner oracle.")
_MAX_TRIALS = flags.DEFINE_integer("max_trials", 0, "Cap on trials (0: the whole grid).")
_L2_GRID_SIZE = flags.DEFINE_integer("l2_grid_size", 45,
                                     "Log-spaced L2 strengths in [1e-6, 1e5] (logreg).")
_STRATEGY = flags.DEFINE_enum("strategy", "auto", STRATEGIES,
                              "tf.distribute strategy of one trial.")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 0,
                                     "Cap on examples per split, for smoke runs (0: all).")
_PRECISION = flags.DEFINE_enum(
    "precision", "float32", PRECISIONS, "Keras dtype policy of the backbone in training and "
    "feature extraction; the head and the loss stay float32, float16 losses are scaled. "
    "Part of each result's key.")
_JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", False, "Compile the training step and the feature extractor with XLA. "
    "Part of each result's key.")
_IMAGENET_TOP1 = flags.DEFINE_list(
    "imagenet_top1", [], "For --mode=report: ImageNet top-1 (%) of models outside the zoo, "
    "as NAME=TOP1 with NAME as the report shows it, e.g. 'hub:/models/mine=77.2'.")
_SHARD = flags.DEFINE_string("shard", "0/1", "i/n: run every n-th cell of the grid from i.")
_PARALLEL_TRIALS = flags.DEFINE_integer(
    "parallel_trials", 0, "Run the search as a keras-tuner chief plus N worker processes, "
    "one per GPU (0: in this process).")
_GPUS_PER_TRIAL = flags.DEFINE_integer("gpus_per_trial", 1,
                                       "GPUs given to each worker of --parallel_trials.")

# Flags the launcher's children must not inherit: they would launch again.
_LAUNCHER_FLAGS = (_PARALLEL_TRIALS, _GPUS_PER_TRIAL)


class UsageError(ValueError):
  """A bad flag value: printed as one line, exit 2."""


def _floats(values, flag) -> tuple[float, ...]:
  try:
    return tuple(float(v) for v in values)
  except ValueError as e:
    raise UsageError(f"--{flag}={','.join(values)}: {e}. Expected numbers.") from e


def _ints(values, flag) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in values)
  except ValueError as e:
    raise UsageError(f"--{flag}={','.join(values)}: {e}. Expected integers, e.g. "
                     f"--{flag}=0,1,2.") from e


def _parse_top1(values) -> dict[str, float]:
  top1 = {}
  for item in values:
    name, sep, value = item.rpartition("=")
    try:
      top1[name] = float(value)
    except ValueError:
      sep = ""
    if not sep or not name:
      raise UsageError(f"--imagenet_top1 item {item!r} is not NAME=TOP1 (e.g. "
                       f"'keras:EfficientNetB0=77.1').")
  return top1


def _grid():
  """The sweep's dimensions, each name checked against its registry before anything runs."""
  from tfhub_transfer import backbones, sweep  # pylint: disable=g-import-not-at-top
  from tfhub_transfer.data import datasets  # pylint: disable=g-import-not-at-top
  missing = [f"--{f.name}" for f in (_MODEL, _DATASET, _REGIME) if not f.value]
  if missing:
    raise UsageError(f"{', '.join(missing)} required (see --list_models, --list_datasets; "
                     f"regimes: {', '.join(regimes.REGIMES)}).")
  kwargs = FrozenKwargs.parse(_MODEL_KWARGS.value)
  for model in _MODEL.value:
    backbones.get_backbone_spec(model, model_kwargs=kwargs)
  for dataset in _DATASET.value:
    datasets.get_dataset_spec(dataset)
  for regime in _REGIME.value:
    regimes.get_regime_spec(regime)
  return sweep.Grid(models=tuple(_MODEL.value), datasets=tuple(_DATASET.value),
                    regimes=tuple(_REGIME.value), seeds=_ints(_SEEDS.value, "seeds"),
                    shard=sweep.parse_shard(_SHARD.value))


def base_config(grid) -> ExperimentConfig:
  """The flags as one frozen config: the grid's first cell (a sweep varies the cell)."""
  return ExperimentConfig(
      model=grid.models[0], dataset=grid.datasets[0], regime=grid.regimes[0],
      seed=grid.seeds[0], workdir=_WORKDIR.value, weights=_WEIGHTS.value or None,
      model_kwargs=FrozenKwargs.parse(_MODEL_KWARGS.value), image_size=_IMAGE_SIZE.value,
      data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value, batch_size=_BATCH_SIZE.value,
      train_steps=_TRAIN_STEPS.value,
      learning_rates=_floats(_LEARNING_RATES.value, "learning_rates"),
      weight_decays=_floats(_WEIGHT_DECAYS.value, "weight_decays"), tuner=_TUNER.value,
      max_trials=_MAX_TRIALS.value, l2_grid_size=_L2_GRID_SIZE.value,
      strategy=_STRATEGY.value, max_examples=_MAX_EXAMPLES.value,
      precision=_PRECISION.value, jit_compile=_JIT_COMPILE.value)


def child_args() -> list[str]:
  """This run's flags as the arguments of a launched chief or worker: every flag given on
  the command line or in a flagfile, serialised from its parsed value, but the launcher's."""
  skip = {holder.name for holder in _LAUNCHER_FLAGS}
  return [flags.FLAGS[name].serialize() for name in flags.FLAGS
          if flags.FLAGS[name].present and name not in skip]


class _OwnInfoOnly(logging.Filter):
  """At the default verbosity, INFO lines of other libraries (TFDS reads, TensorFlow
  notices) are dropped: what is left is this tool's progress. --verbosity=1 shows all."""

  def filter(self, record):
    return (record.levelno > logging.INFO or
            f"{os.sep}tfhub_transfer{os.sep}" in record.pathname)


def main(argv: Sequence[str]) -> int:
  if flags.FLAGS["verbosity"].value <= 0:
    absl_logging.get_absl_handler().addFilter(_OwnInfoOnly())
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}: every option is a --flag.")
  try:
    return _dispatch()
  except (UsageError, ValueError, OSError) as e:  # Bad names or values, a missing folder.
    print(f"tfhub_transfer: {e}", file=sys.stderr)
    return 2


def _dispatch() -> int:
  """One library call per mode."""
  if _LIST_MODELS.value:
    from tfhub_transfer import backbones  # pylint: disable=g-import-not-at-top
    print(backbones.format_models_table())
    return 0
  if _LIST_DATASETS.value:
    from tfhub_transfer.data import datasets  # pylint: disable=g-import-not-at-top
    print(datasets.format_datasets_table())
    return 0
  if _MODE.value == "report":
    from tfhub_transfer.report import document  # pylint: disable=g-import-not-at-top
    paths = document.write_workdir_report(_WORKDIR.value,
                                          imagenet_top1=_parse_top1(_IMAGENET_TOP1.value))
    print(paths.markdown)
    print(f"Written to {paths.out_dir}/: {', '.join(paths.names())}", file=sys.stderr)
    return 0
  grid = _grid()
  config = base_config(grid)
  if _PARALLEL_TRIALS.value:
    from tfhub_transfer import launcher  # pylint: disable=g-import-not-at-top
    cells = grid.cells(config)
    if len(cells) != 1 or not config.regime_spec.searches_with_tuner:
      raise UsageError(f"--parallel_trials spreads the trials of one finetune/scratch cell; "
                       f"got {len(cells)} cells (regime {config.regime}). Run one cell at a "
                       f"time, or use --shard to split a sweep between processes.")
    return launcher.launch_parallel_trials(
        child_args(), config=config, num_workers=_PARALLEL_TRIALS.value,
        gpus_per_worker=_GPUS_PER_TRIAL.value)
  from tfhub_transfer import sweep  # pylint: disable=g-import-not-at-top
  summary = sweep.run_grid(config, grid, on_result=lambda result: print(result.summary_line()))
  if summary.cells > 1:
    print(summary.line())
  for failure in summary.failures:
    print(f"FAILED {failure}", file=sys.stderr)
  return 1 if summary.failed else 0


def run_main():
  """Console-script entry point."""
  # TensorFlow's C++ start-up chatter hides the progress lines; --verbosity still applies.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)


if __name__ == "__main__":
  run_main()
