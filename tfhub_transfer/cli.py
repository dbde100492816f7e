"""`tfhub_transfer`: the command line. Flags -> one frozen config -> one library call.

  tfhub_transfer --model=mobilenet_v2 --dataset=caltech101 --regime=logreg --workdir=W
  tfhub_transfer --flagfile=flags/quickstart.cfg
  tfhub_transfer --model=resnet_50,densenet_121 --dataset=dtd,oxford_pets \
      --regime=logreg,finetune --seeds=0,1 --shard=0/2       # a resumable sweep
  tfhub_transfer --mode=report --workdir=W
  tfhub_transfer --list_models | --list_datasets
"""

import json
import os
import sys

import logging

from absl import app
from absl import flags
from absl import logging as absl_logging

from tfhub_transfer.config import REGIMES, ExperimentConfig, check_regime

# Library modules import TensorFlow; they are imported where used, so `--helpfull` is quick.

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
_REGIME = flags.DEFINE_list("regime", [], f"Regime(s): {', '.join(REGIMES)}.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seed(s) of splits, init and search.")
_WORKDIR = flags.DEFINE_string("workdir", "workdir",
                               "Results store, feature cache, checkpoints, tuner state, logs.")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "imagenet, random, or a path (Keras weights file or SavedModel dir). "
    "Default: imagenet for logreg/finetune, random for scratch.")
_MODEL_KWARGS = flags.DEFINE_string("model_kwargs", "{}",
                                    "JSON keras.applications kwargs, e.g. '{\"alpha\": 0.25}'.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Input resolution (0: the model's own).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "TFDS manual_dir for datasets downloaded by hand.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", 0, "Steps per finetune/scratch trial (0: a quick default; the paper "
    "flagfiles set 20000 / 40000).")
_LEARNING_RATES = flags.DEFINE_list("learning_rates", [],
                                    "Learning-rate grid (empty: the paper's for the regime).")
_WEIGHT_DECAYS = flags.DEFINE_list("weight_decays", [],
                                   "Weight-decay grid (empty: the paper's for the regime).")
_TUNER = flags.DEFINE_enum("tuner", "grid", ["grid", "bayesian"], "keras-tuner oracle.")
_MAX_TRIALS = flags.DEFINE_integer("max_trials", 0, "Cap on trials (0: the whole grid).")
_L2_GRID_SIZE = flags.DEFINE_integer("l2_grid_size", 45,
                                     "Log-spaced L2 strengths in [1e-6, 1e5] (logreg).")
_STRATEGY = flags.DEFINE_enum("strategy", "auto",
                              ["auto", "mirrored", "default", "one_device", "tpu"],
                              "tf.distribute strategy of one trial.")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 0,
                                     "Cap on examples per split, for smoke runs (0: all).")
_IMAGENET_TOP1 = flags.DEFINE_list(
    "imagenet_top1", [], "For --mode=report: ImageNet top-1 (%) of models outside the zoo, "
    "as NAME=TOP1 with NAME as the report shows it, e.g. 'hub:/models/mine=77.2'.")
_SHARD = flags.DEFINE_string("shard", "0/1", "i/n: run every n-th cell of the grid from i.")
_PARALLEL_TRIALS = flags.DEFINE_integer(
    "parallel_trials", 0, "Run the search as a keras-tuner chief plus N worker processes, "
    "one per GPU (0: in this process).")
_GPUS_PER_TRIAL = flags.DEFINE_integer("gpus_per_trial", 1,
                                       "GPUs given to each worker of --parallel_trials.")


def _floats(values, flag):
  try:
    return tuple(float(v) for v in values)
  except ValueError as e:
    raise ValueError(f"--{flag}={','.join(values)}: {e}. Expected numbers.") from e


def _seeds() -> list[int]:
  try:
    return [int(s) for s in _SEEDS.value]
  except ValueError as e:
    raise ValueError(f"--seeds={','.join(_SEEDS.value)}: {e}. Expected integers, "
                     f"e.g. --seeds=0,1,2.") from e


def base_config() -> ExperimentConfig:
  """The flags as one frozen config (the first model/dataset/regime; sweeps vary them)."""
  return ExperimentConfig(
      model=_MODEL.value[0], dataset=_DATASET.value[0], regime=_REGIME.value[0],
      seed=_seeds()[0], workdir=_WORKDIR.value, weights=_WEIGHTS.value or None,
      model_kwargs=_MODEL_KWARGS.value, image_size=_IMAGE_SIZE.value,
      data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value, batch_size=_BATCH_SIZE.value,
      train_steps=_TRAIN_STEPS.value,
      learning_rates=_floats(_LEARNING_RATES.value, "learning_rates"),
      weight_decays=_floats(_WEIGHT_DECAYS.value, "weight_decays"), tuner=_TUNER.value,
      max_trials=_MAX_TRIALS.value, l2_grid_size=_L2_GRID_SIZE.value,
      strategy=_STRATEGY.value, max_examples=_MAX_EXAMPLES.value)


def _check_required() -> None:
  missing = [f"--{f.name}" for f in (_MODEL, _DATASET, _REGIME) if not f.value]
  if missing:
    raise app.UsageError(f"{', '.join(missing)} required (see --list_models, "
                         f"--list_datasets; regimes: {', '.join(REGIMES)}).")


def _validate_names() -> None:
  """Every name of the grid is checked before anything runs."""
  from tfhub_transfer import backbones, datasets
  for model in _MODEL.value:
    backbones.get_backbone_spec(model, model_kwargs=json.loads(_MODEL_KWARGS.value))
  for dataset in _DATASET.value:
    datasets.get_dataset_spec(dataset)
  for regime in _REGIME.value:
    check_regime(regime)


def _parse_top1(values) -> dict[str, float]:
  top1 = {}
  for item in values:
    name, sep, value = item.rpartition("=")
    try:
      top1[name] = float(value)
    except ValueError:
      sep = ""
    if not sep or not name:
      raise ValueError(f"--imagenet_top1 item {item!r} is not NAME=TOP1 (e.g. "
                       f"'keras:EfficientNetB0=77.1').")
  return top1


def format_models_table() -> str:
  from tfhub_transfer import backbones
  rows = [("name", "source", "size", "feat dim", "paper top-1")]
  for spec in backbones.BACKBONES.values():
    rows.append((spec.name, backbones.describe_source(spec), str(spec.image_size),
                 str(spec.feature_dim), f"{spec.paper_top1:.2f}"))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class _OwnInfoOnly(logging.Filter):
  """At the default verbosity, INFO lines of other libraries (TFDS reads, TensorFlow
  notices) are dropped: what is left is this tool's progress. --verbosity=1 shows all."""

  def filter(self, record):
    return (record.levelno > logging.INFO or
            f"{os.sep}tfhub_transfer{os.sep}" in record.pathname)


def main(argv):
  if flags.FLAGS["verbosity"].value <= 0:
    absl_logging.get_absl_handler().addFilter(_OwnInfoOnly())
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}: every option is a --flag.")
  if _LIST_MODELS.value:
    print(format_models_table())
    return 0
  if _LIST_DATASETS.value:
    from tfhub_transfer import datasets
    print(datasets.format_datasets_table())
    return 0
  if _MODE.value == "report":
    from tfhub_transfer import report, results
    try:
      top1 = _parse_top1(_IMAGENET_TOP1.value)
    except ValueError as e:
      print(f"tfhub_transfer: {e}", file=sys.stderr)
      return 2
    store = results.ResultsStore.for_workdir(_WORKDIR.value)
    out_dir = os.path.join(_WORKDIR.value, "report")
    paths = report.write_report(store, out_dir, imagenet_top1=top1)
    # Every stored record, in full, for other tools.
    store.export_csv(os.path.join(out_dir, "results.csv"))
    store.export_json(os.path.join(out_dir, "results.json"))
    print(paths.markdown)
    print(f"Written to {out_dir}/: report.md, table_<regime>.csv, summary.csv, figure1.png, "
          f"results.csv, results.json", file=sys.stderr)
    return 0
  try:
    _check_required()
    config = base_config()  # Checks --model_kwargs is a JSON object first.
    _validate_names()
  except (ValueError, OSError) as e:  # Bad names or values, bad JSON, a missing folder.
    print(f"tfhub_transfer: {e}", file=sys.stderr)
    return 2
  return _run(config)


def _run(config: ExperimentConfig) -> int:
  from tfhub_transfer import launcher, results, sweep
  try:
    shard = sweep.parse_shard(_SHARD.value)
  except ValueError as e:
    print(f"tfhub_transfer: {e}", file=sys.stderr)
    return 2
  cells = sweep.make_cells(config, models=_MODEL.value, datasets=_DATASET.value,
                           regimes=_REGIME.value, seeds=_seeds(),
                           shard=shard)
  if _PARALLEL_TRIALS.value:
    if len(cells) != 1 or config.regime == "logreg":
      print(f"tfhub_transfer: --parallel_trials spreads the trials of one finetune/scratch "
            f"cell; got {len(cells)} cells (regime {config.regime}). Run one cell at a "
            f"time, or use --shard to split a sweep between processes.", file=sys.stderr)
      return 2
    return launcher.launch_parallel_trials(
        sys.argv[1:], workdir=config.workdir, num_workers=_PARALLEL_TRIALS.value,
        gpus_per_worker=_GPUS_PER_TRIAL.value)
  store = results.ResultsStore.for_workdir(config.workdir)
  summary = sweep.run_sweep(cells, store=store,
                            on_result=lambda result: print(result.summary_line()))
  if len(cells) > 1:
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
