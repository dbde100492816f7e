"""`tfhub_transfer`: the command line. Flags -> one frozen config -> one library call.

  tfhub_transfer --model=mobilenet_v2 --dataset=caltech101 --regime=logreg --workdir=W
  tfhub_transfer --flagfile=flags/quickstart.cfg
  tfhub_transfer --model=resnet_50,densenet_121 --dataset=dtd,oxford_pets \
      --regime=logreg,finetune --seeds=0,1 --shard=0/2       # a resumable sweep
  tfhub_transfer --mode=report --workdir=W
  tfhub_transfer --mode=score --model=resnet_50,densenet_121 --dataset=dtd --workdir=W
  tfhub_transfer --mode=forget --model=... --dataset=... --regime=... --workdir=W
  tfhub_transfer --flagfile=flags/paper_low_data.cfg    # the paper's other experiments
  tfhub_transfer --list_models | --list_datasets

Every choice list comes from the library's registries; library modules that import TensorFlow
are imported where used, so `--help`, the listings, `--mode=report` and `--mode=forget` never
import it. Every flag value is checked when the flags are parsed (bounds and validators),
before anything runs: a bad one is one line naming the flag, exit 2. A storage fault
(`storage.StoreError`) or a full disk (`faults.MachineFault`) is one line naming the file and
what to do, exit 1. Ctrl-C is one line and exit 130; SIGTERM one line and exit 143.
"""

import logging
import math
import os
import signal
import sys
import textwrap
from typing import Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging

from tfhub_transfer import devices
from tfhub_transfer import faults
from tfhub_transfer import regimes
from tfhub_transfer import sweep
from tfhub_transfer.config import (BOUNDS, PRECISIONS, STRATEGIES, TUNERS, ExperimentConfig,
                                   FrozenKwargs)
from tfhub_transfer.results import merged
from tfhub_transfer.results import storage
from tfhub_transfer.results import workdir as workdir_lib
from tfhub_transfer.data import crops

_MODE = flags.DEFINE_enum(
    "mode", "run", ["run", "plan", "report", "score", "forget"],
    "run: run the cells; plan: list the cells a run would run (this shard's) and which are "
    "already stored as ok, checking every name, and run nothing; report: tables, "
    "correlations and plots (reads the workdir, writes only --report_dir); score: "
    "transferability scores of the --model x --dataset x --seeds grid from frozen (cached) "
    "features, before any training; forget: remove the stored "
    "failed results of the grid's cells, under every protocol, with their trials and folders "
    "(with --forget_ok, ok results too).")
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
    "weights", None, "imagenet, random, or a path (Keras weights file, SavedModel dir, or "
    "for inception_v4 a TF-slim checkpoint). "
    "Default: each regime's own (" + ", ".join(
        f"{name}: {spec.default_weights}" for name, spec in regimes.REGIMES.items()) + ").")
_MODEL_KWARGS = flags.DEFINE_string("model_kwargs", "{}",
                                    "JSON keras.applications kwargs, e.g. '{\"alpha\": 0.25}'.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Input resolution (0: the model's own).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "TFDS manual_dir for datasets downloaded by hand.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_TRAIN_STEPS = flags.DEFINE_list(
    "train_steps", ["0"], "Steps per finetune/scratch trial (0: a quick default; the paper "
    "flagfiles set the paper's budgets; 'paper': each regime's, finetune 20000, scratch "
    "40000). Comma-separated for a step-budget study: each budget is a cell of its own, "
    "with its own search.")
_EXAMPLES_PER_CLASS = flags.DEFINE_list(
    "examples_per_class", ["0"], "Train on a class-balanced random subset of K training "
    "images per class, drawn with the cell's seed (0: all). Comma-separated for a low-data "
    "study; with --seeds=0,1,2 each K gets three independent subsets. 'paper': the paper's "
    "Figure 9, K = 1, 2, 4, ... up to each dataset's maximum on its axes.")
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
    "jit_compile", False, "XLA for training and feature extraction (1 replica; keyed).")
_EVAL_PREPROCESSING = flags.DEFINE_enum(
    "eval_preprocessing", crops.DEFAULT_EVAL_PREPROCESSING, list(crops.EVAL_PREPROCESSINGS),
    "Evaluation crop: slim = shorter side to S/0.875, central S, bilinear (the ImageNet "
    "evaluation crop); simclr = shorter side to S, central S, bicubic (SimCLR B.8). Keyed.")
_FAST_DECODE = flags.DEFINE_bool(
    "fast_decode", False, "Decode only each JPEG's crop window, at a reduced DCT scale from "
    "2x the target on; resize with a box filter (BENCHMARKS.md, figure 9). Keyed.")
_IMAGENET_TOP1 = flags.DEFINE_list(
    "imagenet_top1", [], "For --mode=report: ImageNet top-1 (%) of models without a published "
    "checkpoint top-1 (the default for zoo models, see --list_models), or overrides of it, "
    "as NAME=TOP1 with NAME as the report shows it, e.g. 'hub:/models/mine=77.2'.")
_TSNE = flags.DEFINE_list(
    "tsne", [], "For --mode=report: t-SNE maps of cached test features (Figure 4), as "
    "MODEL/DATASET items as the report names them, or 'all' for every cached pair.")
_CONVERGENCE_THRESHOLD = flags.DEFINE_float(
    "convergence_threshold", 0.9, "For --mode=report: a step budget has converged when the "
    "odds p/(1-p) of its test accuracy reach this fraction of the best budget's (Figure 8).")
_SHARD = flags.DEFINE_string("shard", "0/1", "i/n: run every n-th cell of the grid from i.")
_PARALLEL_TRIALS = flags.DEFINE_integer(
    "parallel_trials", 0, "Run the search as a keras-tuner chief plus N worker processes, "
    "one per GPU (0: in this process).", lower_bound=0)
_GPUS_PER_TRIAL = flags.DEFINE_integer("gpus_per_trial", 1,
                                       "GPUs given to each worker of --parallel_trials.",
                                       lower_bound=1)
_REPORT_DIR = flags.DEFINE_string("report_dir", None,
                                  "For --mode=report: where to write (default <workdir>/report).")
_FORGET_OK = flags.DEFINE_bool("forget_ok", False,
                               "For --mode=forget: remove ok results too, not only failed ones.")

# Flags the launcher's children must not inherit: they would launch again.
_LAUNCHER_FLAGS = (_PARALLEL_TRIALS, _GPUS_PER_TRIAL)

# `--help`: this tool's flags by what they are for (absl's own: --helpfull).
FLAG_GROUPS = (
    ("run", (_MODEL, _DATASET, _REGIME, _SEEDS, _WORKDIR, _WEIGHTS, _MODEL_KWARGS, _IMAGE_SIZE,
             _BATCH_SIZE, _TRAIN_STEPS, _EXAMPLES_PER_CLASS, _MODE, _LIST_MODELS,
             _LIST_DATASETS)),
    ("search", (_LEARNING_RATES, _WEIGHT_DECAYS, _TUNER, _MAX_TRIALS, _L2_GRID_SIZE)),
    ("data", (_DATA_DIR, _MANUAL_DIR, _MAX_EXAMPLES, _EVAL_PREPROCESSING, _FAST_DECODE)),
    ("scale-out", (_STRATEGY, _SHARD, _PARALLEL_TRIALS, _GPUS_PER_TRIAL)),
    ("compute", (_PRECISION, _JIT_COMPILE)),
    ("report (--mode=report)", (_IMAGENET_TOP1, _REPORT_DIR, _TSNE, _CONVERGENCE_THRESHOLD)),
    ("forget (--mode=forget, with the grid's flags)", (_FORGET_OK,)),
)
_HELP_ARGS = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort")
INTERRUPTED = "interrupted; rerun the same command to resume"
TERMINATED = "terminated (SIGTERM); rerun the same command to resume"


def own_flags() -> list[flags.FlagHolder]:
  """Every flag this module defines."""
  return [v for v in globals().values() if isinstance(v, flags.FlagHolder)]


def help_text(width: int = 80) -> str:
  """`--help`: usage lines, then this tool's flags by group, then where the others are."""
  usage = __doc__.split("\n\n")[1]
  lines = ["tfhub_transfer: how well do ImageNet models transfer? (Kornblith, Shlens & Le, "
           "CVPR 2019)", "", "Usage:", *usage.splitlines()]
  grouped = {holder.name for _, holders in FLAG_GROUPS for holder in holders}
  ungrouped = tuple(holder for holder in own_flags() if holder.name not in grouped)
  for title, holders in FLAG_GROUPS + ((("other", ungrouped),) if ungrouped else ()):
    lines += ["", f"{title}:"]
    for holder in holders:
      flag = flags.FLAGS[holder.name]
      default = (flag.default_as_str or "").strip("'")
      text = f"--{flag.name}: {flag.help}" + (f" (default: {default})" if default else "")
      lines.append(textwrap.fill(text, width=width, initial_indent="  ",
                                 subsequent_indent="      "))
  lines += ["", textwrap.fill(
      "Also: --flagfile=FILE reads flags from a file (flags/*.cfg: the quickstart and the "
      "paper's settings; later flags override it); --verbosity=-1 logs warnings only, "
      "--verbosity=1 everything, TensorFlow's start-up lines included; --helpfull lists "
      "every flag, absl's included.", width=width)]
  return "\n".join(lines)


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, but `--help` is `help_text` (absl's lists every module's flags
  alphabetically and exits 1), and a bad value (a bound, a validator, an unknown flag) is one
  line naming the flag and exit 2, not absl's usage text."""
  if any(arg in _HELP_ARGS for arg in argv[1:]):
    try:
      print(help_text(), flush=True)
    except BrokenPipeError:  # `--help | head`: the reader has seen enough.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"tfhub_transfer: {e} (see --help)", file=sys.stderr)
    sys.exit(2)


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
  """`--imagenet_top1` items NAME=TOP1 -> {NAME: TOP1}."""
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


# Checked at parse time, before anything runs, by validators registered below, which raise
# flags.ValidationError with a message naming the flag. The bounds of a setting the config
# holds are the config's (`config.BOUNDS`), read here; a flag of the CLI's own carries its
# bound (`lower_bound=`). The backbone, its kwargs, the weights file and the machine are
# checked next, before the first cell (`_grid`, `_check_fits_memory`).


def _validator(flag, check):
  """Registers check(value) -> None (raising ValueError with the reason) for `flag`."""
  def validate(value):
    try:
      check(value)
    except ValueError as e:
      raise flags.ValidationError(str(e)) from e
    return True
  flags.register_validator(flag.name, validate)


def _check_numbers(values, *, kind, valid, expected):
  """Each item of a list flag parses with `kind` and passes `valid`."""
  for value in values:
    try:
      ok = valid(kind(value))
    except ValueError:
      ok = False
    if not ok:
      raise ValueError(f"{value!r} is not {expected}")


def _bounded(flag, field, *, empty_means_zero=False, paper=False):
  """Validates an integer flag, or each item of a list flag, with `config.BOUNDS[field]`
  (`paper`: the list may also be `sweep.PAPER` alone)."""
  bound = BOUNDS[field]
  if isinstance(flag.default, list):
    def check(values):
      if paper and values == [sweep.PAPER]:
        return
      if not values and not empty_means_zero:
        raise ValueError(f"no value given; expected {bound.describe()}, e.g. --{flag.name}=0")
      _check_numbers(values, kind=int, valid=bound.contains, expected=bound.describe())
  else:
    def check(value):
      if not bound.contains(value):
        raise ValueError(f"{value!r} is not {bound.describe()}")
  _validator(flag, check)


def _check_weights(value):
  from tfhub_transfer import backbones  # pylint: disable=g-import-not-at-top
  if value and value not in (regimes.IMAGENET, regimes.RANDOM):
    backbones.weights_format(value)  # Reads the header: one line on what is wrong.


def _check_manual_dir(value):
  if value and not os.path.isdir(value):
    raise ValueError("no such directory; create it and place the dataset's files there")


_bounded(_SEEDS, "seed")
_bounded(_TRAIN_STEPS, "train_steps", empty_means_zero=True, paper=True)
_bounded(_EXAMPLES_PER_CLASS, "examples_per_class", empty_means_zero=True, paper=True)
_bounded(_IMAGE_SIZE, "image_size")
_bounded(_BATCH_SIZE, "batch_size")
_bounded(_MAX_TRIALS, "max_trials")
_bounded(_L2_GRID_SIZE, "l2_grid_size")
_bounded(_MAX_EXAMPLES, "max_examples")
_validator(_LEARNING_RATES, lambda v: _check_numbers(
    v, kind=float, valid=lambda x: 0 < x < math.inf, expected="a positive number, e.g. 0.1,0.01"))
_validator(_WEIGHT_DECAYS, lambda v: _check_numbers(
    v, kind=float, valid=lambda x: 0 <= x < math.inf,
    expected="a non-negative number, e.g. 0,1e-4"))
_validator(_SHARD, sweep.parse_shard)
_validator(_MODEL_KWARGS, FrozenKwargs.parse)
_validator(_WEIGHTS, _check_weights)
_validator(_MANUAL_DIR, _check_manual_dir)
_validator(_IMAGENET_TOP1, _parse_top1)


def _require_grid_flags(regime_flag=None):
  regime_flag = _REGIME.value if regime_flag is None else regime_flag
  missing = [f"--{f.name}" for f, value in ((_MODEL, _MODEL.value), (_DATASET, _DATASET.value),
                                            (_REGIME, regime_flag)) if not value]
  if missing:
    raise UsageError(f"{', '.join(missing)} required (see --list_models, --list_datasets; "
                     f"regimes: {', '.join(regimes.REGIMES)}).")


def _existing_workdir() -> str:
  if not os.path.isdir(_WORKDIR.value):
    raise UsageError(f"--workdir={_WORKDIR.value}: no such directory; pass the workdir the "
                     f"runs wrote to.")
  return _WORKDIR.value


def _grid(*, build_models: bool = True):
  """The sweep's dimensions, each name checked against its registry before anything runs
  (`build_models`: Keras models given kwargs or a size are built once to check them)."""
  regime_flag = _REGIME.value
  if _MODE.value == "score":
    # Scores read the logreg regime's frozen features (its weights rule and feature cache).
    if regime_flag not in ([], ["logreg"]):
      raise UsageError(f"--mode=score scores frozen features (the logreg regime's); got "
                       f"--regime={','.join(regime_flag)}. Drop --regime.")
    regime_flag = ["logreg"]
  from tfhub_transfer import backbones  # pylint: disable=g-import-not-at-top
  from tfhub_transfer.data import datasets  # pylint: disable=g-import-not-at-top
  _require_grid_flags(regime_flag)
  kwargs = FrozenKwargs.parse(_MODEL_KWARGS.value)
  for model in _MODEL.value:
    spec = backbones.check_backbone(model, model_kwargs=kwargs, image_size=_IMAGE_SIZE.value,
                                    weights=_WEIGHTS.value, build=build_models)
    _check_fits_memory(spec)
  seeds = _ints(_SEEDS.value, "seeds")
  for dataset in _DATASET.value:
    spec = datasets.get_dataset_spec(dataset)
    if spec.source == datasets.FOLDER:  # Its images are validated once, for the cells too.
      datasets.check_folder_splits(spec, seeds=seeds,
                                   cache_dir=workdir_lib.Workdir(_WORKDIR.value).folders)
  for regime in regime_flag:
    regimes.get_regime_spec(regime)
  return sweep.make_grid(models=_MODEL.value, datasets=_DATASET.value, regimes=regime_flag,
                         seeds=seeds, shard=sweep.parse_shard(_SHARD.value),
                         examples_per_class=_counts(_EXAMPLES_PER_CLASS),
                         train_steps=_counts(_TRAIN_STEPS))


def _check_fits_memory(spec):
  """One batch of input pixels (float32) must fit in this machine's memory: a larger one
  could only fail, cell after cell, once its data is loaded."""
  pixels = _BATCH_SIZE.value * spec.image_size**2 * 3 * 4
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if pixels > memory:
    raise UsageError(
        f"--batch_size={_BATCH_SIZE.value} at {spec.image_size} px (--model={spec.name}): one "
        f"input batch is {pixels / 2**30:,.1f} GiB of float32 pixels, more than this "
        f"machine's {memory / 2**30:,.1f} GiB of memory; lower --batch_size to at most "
        f"{memory // (spec.image_size**2 * 12):,} (or --image_size).")


def _counts(flag):
  """A comma list of integers >= 0, checked at parse time (the empty list means 0), or
  `sweep.PAPER`."""
  return sweep.PAPER if flag.value == [sweep.PAPER] else _ints(flag.value, flag.name) or (0,)


def base_config(grid) -> ExperimentConfig:
  """The flags as one frozen config: the grid's first cell (a sweep varies the cell)."""
  return ExperimentConfig(
      model=grid.models[0], dataset=grid.datasets[0], regime=grid.regimes[0],
      seed=grid.seeds[0], workdir=_WORKDIR.value, weights=_WEIGHTS.value or None,
      model_kwargs=FrozenKwargs.parse(_MODEL_KWARGS.value), image_size=_IMAGE_SIZE.value,
      data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value, batch_size=_BATCH_SIZE.value,
      train_steps=grid.train_steps[0], examples_per_class=grid.examples_per_class[0],
      learning_rates=_floats(_LEARNING_RATES.value, "learning_rates"),
      weight_decays=_floats(_WEIGHT_DECAYS.value, "weight_decays"), tuner=_TUNER.value,
      max_trials=_MAX_TRIALS.value, l2_grid_size=_L2_GRID_SIZE.value,
      strategy=_STRATEGY.value, max_examples=_MAX_EXAMPLES.value,
      precision=_PRECISION.value, jit_compile=_JIT_COMPILE.value,
      eval_preprocessing=_EVAL_PREPROCESSING.value, fast_decode=_FAST_DECODE.value)


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
  except (storage.StoreError, faults.MachineFault) as e:  # A damaged, read-only or full
    print(f"tfhub_transfer: {e}", file=sys.stderr)  # store or disk: the machine's fault.
    return 1
  except (UsageError, ValueError, OSError) as e:  # Bad names or values, a missing folder.
    if faults.is_disk_full(e):  # A full disk that no layer named.
      print(f"tfhub_transfer: {faults.describe_disk_full(e)}", file=sys.stderr)
      return 1
    print(f"tfhub_transfer: {e}", file=sys.stderr)
    return 2
  except faults.Terminated:  # SIGTERM (SLURM, Kubernetes): as Ctrl-C, with its own code.
    print(TERMINATED, file=sys.stderr)
    return faults.TERMINATED_EXIT_CODE
  except KeyboardInterrupt:  # Ctrl-C: finished cells, trials and caches are kept.
    print(INTERRUPTED, file=sys.stderr)
    return 130


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
    paths = document.write_workdir_report(
        _existing_workdir(), imagenet_top1=_parse_top1(_IMAGENET_TOP1.value),
        out_dir=_REPORT_DIR.value, tsne=tuple(_TSNE.value),
        convergence_threshold=_CONVERGENCE_THRESHOLD.value)
    print(paths.markdown)
    print(f"Written to {paths.out_dir}/: {', '.join(paths.names())}", file=sys.stderr)
    return 0
  if _MODE.value == "forget":
    _require_grid_flags()
    forgotten = merged.forget(_existing_workdir(), models=_MODEL.value,
                              datasets=_DATASET.value, regimes=_REGIME.value,
                              seeds=_ints(_SEEDS.value, "seeds"), include_ok=_FORGET_OK.value)
    for r in forgotten:
      print(f"forgot {r.display_model} / {r.display_dataset} / {r.regime} / seed {r.seed} "
            f"[protocol {r.protocol}]: {r.status}" + (f": {r.error}" if r.error else ""))
    print(f"{len(forgotten)} stored result(s) forgotten in {_WORKDIR.value}"
          + ("" if _FORGET_OK.value else " (failed ones only; --forget_ok for ok ones)"))
    return 0
  launching = _MODE.value == "run" and _PARALLEL_TRIALS.value
  # TensorFlow starts quietly before the checks of the grid, which may build a Keras model;
  # the launcher's process never starts it (its children check the model).
  devices_line = None if launching else devices.import_tensorflow_quietly(
      keep_all=flags.FLAGS["verbosity"].value > 0)
  grid = _grid(build_models=not launching)
  config = base_config(grid)
  if "KERASTUNER_ORACLE_IP" in os.environ:  # A chief or worker of a distributed search.
    from tfhub_transfer import oracle_auth  # pylint: disable=g-import-not-at-top
    oracle_auth.token_from_env()  # Its secret is set, or one line before the first cell.
  if launching:
    return _launch(grid, config)  # Without TensorFlow in this process: see the launcher.
  absl_logging.info("tfhub_transfer %s: %s.", _version(), devices_line)
  if _MODE.value != "plan":  # Before any work: a GPU strategy without a GPU, XLA x replicas.
    devices.check_local_strategy(config.strategy, jit_compile=config.jit_compile)
  if _MODE.value == "plan":
    return _plan(grid.cells(config))
  if _MODE.value == "score":
    from tfhub_transfer import scoring  # pylint: disable=g-import-not-at-top
    scored = scoring.run_score_grid(config, grid,
                                    on_result=lambda result: print(result.summary_line()))
    return _finish(scored, show_line=scored.cells > 1)
  summary = sweep.run_grid(config, grid, on_result=lambda result: print(result.summary_line()))
  # A lone finished cell says so, too.
  return _finish(summary, show_line=summary.cells > 1 or summary.skipped)


def _launch(grid, config) -> int:
  """`--parallel_trials`: the launcher (it imports no TensorFlow)."""
  from tfhub_transfer import launcher  # pylint: disable=g-import-not-at-top
  cells = grid.cells(config)
  if len(cells) != 1 or not config.regime_spec.searches_with_tuner:
    raise UsageError(f"--parallel_trials spreads the trials of one finetune/scratch cell; "
                     f"got {len(cells)} cells (regime {config.regime}). Run one cell at a "
                     f"time, or use --shard to split a sweep between processes.")
  return launcher.launch_parallel_trials(
      child_args(), config=config, num_workers=_PARALLEL_TRIALS.value,
      gpus_per_worker=_GPUS_PER_TRIAL.value)


def _finish(summary, *, show_line: bool) -> int:
  """Prints a sweep's or a score grid's summary line and each failure; the exit code."""
  if show_line:
    print(summary.line())
  for failure in summary.failures:
    print(f"FAILED {failure}", file=sys.stderr)
  return 1 if summary.failures else 0


def _plan(cells) -> int:
  """`--mode=plan`: one line per cell, `done` where any host stored it as ok."""
  stored = merged.read_workdir(_WORKDIR.value) if os.path.isdir(_WORKDIR.value) else None
  done = 0
  for config in cells:
    ok = stored is not None and stored.has_ok(*config.cell)
    done += ok
    print(f"{'done' if ok else 'to run':6}  {sweep.plan_line(config)}")
  print(f"plan: {len(cells)} cells, {done} already done, {len(cells) - done} to run")
  from tfhub_transfer import estimate  # pylint: disable=g-import-not-at-top
  print(estimate.plan_line([c for c in cells if stored is None or not stored.has_ok(*c.cell)]))
  return 0


def _version() -> str:
  import tfhub_transfer  # pylint: disable=g-import-not-at-top
  return tfhub_transfer.__version__


def run_main():
  """Console-script entry point."""
  # Before TensorFlow starts: GPU memory growth, and its C++ log level (the start-up
  # chatter hides the progress lines; --verbosity still applies).
  devices.prepare_environment()
  signal.signal(signal.SIGTERM, faults.raise_terminated)  # Ends like Ctrl-C (`faults`).
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run_main()
