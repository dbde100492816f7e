r"""`tfhub_transfer`: the command line. Flags -> one frozen config -> one library call.

  tfhub_transfer --model=mobilenet_v2 --dataset=caltech101 --regime=logreg --workdir=W
  tfhub_transfer --flagfile=flags/quickstart.cfg
  tfhub_transfer --model=resnet_50,densenet_121 --dataset=dtd,oxford_pets \
      --regime=logreg,finetune --seeds=0,1 --shard=0/2       # a resumable sweep
  tfhub_transfer --mode=report --workdir=W
  tfhub_transfer --mode=score --model=resnet_50,densenet_121 --dataset=dtd --workdir=W
  tfhub_transfer --mode=forget --model=... --dataset=... --regime=... --workdir=W
  tfhub_transfer --flagfile=flags/paper_low_data.cfg    # the paper's other experiments
  tfhub_transfer --list_models | --list_datasets

Every choice list, default and bound comes from the library (registries, `ExperimentConfig`,
`config.BOUNDS`, `protocol`); library modules that import TensorFlow are imported where used,
so `--help`, the listings, `--mode=report` and `--mode=forget` never import it. One error
path: a usage error (a bad flag value, a stray argument, a name no registry knows, a setting
the machine cannot run; `config.UsageError`) is one line and exit 2, before anything runs; a
failure of a run (a failed cell, a storage fault `storage.StoreError`, a full disk
`faults.MachineFault`, another OSError, a failed `--parallel_trials` process) is one line
naming what failed and exit 1; anything else is a bug and shows its traceback. Ctrl-C is one
line and exit 130; SIGTERM one line and exit 143.
"""

import contextlib
import dataclasses
import os
import signal
import sys
import textwrap
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

import tfhub_transfer
from tfhub_transfer import devices
from tfhub_transfer import faults
from tfhub_transfer import launcher
from tfhub_transfer import oracle_auth
from tfhub_transfer import progress
from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer import sweep
from tfhub_transfer.config import BOUNDS
from tfhub_transfer.config import GRID_ITEMS
from tfhub_transfer.config import PRECISIONS
from tfhub_transfer.config import STRATEGIES
from tfhub_transfer.config import TUNERS
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.config import FrozenKwargs
from tfhub_transfer.config import UsageError
from tfhub_transfer.data import crops
from tfhub_transfer.results import merged
from tfhub_transfer.results import storage

# Each flag that sets a config or grid field defaults to the field's default.
_DEFAULT = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
_GRID_DEFAULT = {f.name: f.default for f in dataclasses.fields(sweep.Grid)}

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
_SEEDS = flags.DEFINE_list("seeds", [str(_DEFAULT["seed"])],
                           "Seed(s) of splits, init and search.")
_WORKDIR = flags.DEFINE_string("workdir", _DEFAULT["workdir"],
                               "Results store, feature cache, checkpoints, tuner state, logs.")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "imagenet, random, or a path (Keras weights file, SavedModel dir, or "
    "for inception_v4 a TF-slim checkpoint). "
    "Default: each regime's own (" + ", ".join(
        f"{name}: {spec.default_weights}" for name, spec in regimes.REGIMES.items()) + ").")
_MODEL_KWARGS = flags.DEFINE_string("model_kwargs", "{}",
                                    "JSON keras.applications kwargs, e.g. '{\"alpha\": 0.25}'.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", _DEFAULT["image_size"],
                                   "Input resolution (0: the model's own).")
_DATA_DIR = flags.DEFINE_string("data_dir", _DEFAULT["data_dir"], "TFDS data_dir.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", _DEFAULT["manual_dir"],
                                  "TFDS manual_dir for datasets downloaded by hand.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _DEFAULT["batch_size"], "Global batch size.")
_TRAIN_STEPS = flags.DEFINE_list(
    "train_steps", [str(_DEFAULT["train_steps"])], "Steps per finetune/scratch trial (0: a "
    "quick default; the paper flagfiles set the paper's budgets; 'paper': each regime's, "
    "finetune 20000, scratch 40000). Comma-separated for a step-budget study: each budget is "
    "a cell of its own, with its own search.")
_EXAMPLES_PER_CLASS = flags.DEFINE_list(
    "examples_per_class", [str(_DEFAULT["examples_per_class"])], "Train on a class-balanced "
    "random subset of K training images per class, drawn with the cell's seed (0: all). "
    "Comma-separated for a low-data study; with --seeds=0,1,2 each K gets three independent "
    "subsets. 'paper': the paper's Figure 9, K = 1, 2, 4, ... up to each dataset's maximum "
    "on its axes.")
_LEARNING_RATES = flags.DEFINE_list("learning_rates", [],
                                    "Learning-rate grid (empty: the paper's for the regime).")
_WEIGHT_DECAYS = flags.DEFINE_list("weight_decays", [],
                                   "Weight-decay grid (empty: the paper's for the regime).")
_TUNER = flags.DEFINE_enum("tuner", _DEFAULT["tuner"], TUNERS, "keras-tuner oracle.")
_MAX_TRIALS = flags.DEFINE_integer("max_trials", _DEFAULT["max_trials"],
                                   "Cap on trials (0: the whole grid).")
_L2_GRID_SIZE = flags.DEFINE_integer(
    "l2_grid_size", _DEFAULT["l2_grid_size"],
    "L2 strengths, log-spaced in [{:g}, {:g}].".format(*protocol.L2_RANGE))
_STRATEGY = flags.DEFINE_enum("strategy", _DEFAULT["strategy"], STRATEGIES,
                              "tf.distribute strategy of one trial.")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", _DEFAULT["max_examples"],
                                     "Cap on examples per split (0: all).")
_PRECISION = flags.DEFINE_enum(
    "precision", _DEFAULT["precision"], PRECISIONS, "Keras dtype policy of the backbone in "
    "training and feature extraction; the head and the loss stay float32, float16 losses "
    "are scaled. Part of each result's key.")
_JIT_COMPILE = flags.DEFINE_bool(
    "jit_compile", _DEFAULT["jit_compile"],
    "XLA (training, extraction; 1 replica). Keyed.")
_EVAL_PREPROCESSING = flags.DEFINE_enum(
    "eval_preprocessing", _DEFAULT["eval_preprocessing"], list(crops.EVAL_PREPROCESSINGS),
    "Evaluation crop: slim = shorter side to S/0.875, central S, bilinear (the ImageNet "
    "evaluation crop); simclr = shorter side to S, central S, bicubic (SimCLR B.8). Keyed.")
_FAST_DECODE = flags.DEFINE_bool(
    "fast_decode", _DEFAULT["fast_decode"], "Decode only each JPEG's crop window, at "
    "reduced DCT scale; box-filter resize (BENCHMARKS.md, figure 9). Keyed.")
_RESIZE_ON_DEVICE = flags.DEFINE_bool(
    "resize_on_device", _DEFAULT["resize_on_device"], "With --fast_decode: logreg's "
    "resize runs on the GPU, the host only decodes (figure 9). Keyed.")
_IMAGENET_TOP1 = flags.DEFINE_list(
    "imagenet_top1", [], "For --mode=report: ImageNet top-1 (%) of models without a published "
    "checkpoint top-1 (the default for zoo models, see --list_models), or overrides of it, "
    "as NAME=TOP1 with NAME as the report shows it, e.g. 'hub:/models/mine=77.2'.")
_TSNE = flags.DEFINE_list(
    "tsne", [], "For --mode=report: t-SNE maps of cached test features (Figure 4), as "
    "MODEL/DATASET items as the report names them, or 'all' for every cached pair.")
_CONVERGENCE_THRESHOLD = flags.DEFINE_float(
    "convergence_threshold", protocol.CONVERGENCE_THRESHOLD, "For --mode=report: a step "
    "budget has converged when the odds p/(1-p) of its test accuracy reach this fraction of "
    "the best budget's (Figure 8).")
_SHARD = flags.DEFINE_string("shard", "{}/{}".format(*_GRID_DEFAULT["shard"]),
                             "i/n: run every n-th cell of the grid from i.")
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

# `--help`: this tool's flags by what they are for (absl's own: --helpfull).
FLAG_GROUPS = (
    ("run", (_MODEL, _DATASET, _REGIME, _SEEDS, _WORKDIR, _WEIGHTS, _MODEL_KWARGS, _IMAGE_SIZE,
             _BATCH_SIZE, _TRAIN_STEPS, _EXAMPLES_PER_CLASS, _MODE, _LIST_MODELS,
             _LIST_DATASETS)),
    ("search", (_LEARNING_RATES, _WEIGHT_DECAYS, _TUNER, _MAX_TRIALS, _L2_GRID_SIZE)),
    ("data", (_DATA_DIR, _MANUAL_DIR, _MAX_EXAMPLES, _EVAL_PREPROCESSING, _FAST_DECODE,
              _RESIZE_ON_DEVICE)),
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
  for title, holders in FLAG_GROUPS:
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


def _usage_exit(message: str) -> None:
  print(f"tfhub_transfer: {message} (see --help)", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, but `--help` is `help_text` (absl's lists every module's flags
  alphabetically and exits 1), and a bad value (a bound, a validator, an unknown flag) or a
  stray argument is one line and exit 2, not absl's usage text."""
  if any(arg in _HELP_ARGS for arg in argv[1:]):
    try:
      print(help_text(), flush=True)
    except BrokenPipeError:  # `--help | head`: the reader has seen enough.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _usage_exit(str(e))
  if len(rest) > 1:
    _usage_exit(f"unexpected argument(s) {' '.join(rest[1:])}: every option is a --flag")
  return rest


# Every flag value is checked when the flags are parsed, before anything runs, by these
# validators (flags.ValidationError names the flag): the bounds and checks are the library's
# (`config.BOUNDS`, `config.GRID_ITEMS`, `sweep.parse_shard`, ...). The names of the grid
# are checked next, before the first cell (`sweep.check_grid`).


def _validator(flag, check):
  """Registers check(value) -> None (raising ValueError with the reason) for `flag`."""
  def validate(value):
    try:
      check(value)
    except ValueError as e:
      raise flags.ValidationError(str(e)) from e
    return True
  flags.register_validator(flag.name, validate)


def _check_items(values, *, kind, valid, expected):
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
      _check_items(values, kind=int, valid=bound.contains, expected=bound.describe())
  else:
    def check(value):
      if not bound.contains(value):
        raise ValueError(f"{value!r} is not {bound.describe()}")
  _validator(flag, check)


def _grid_items(flag):
  valid, expected = GRID_ITEMS[flag.name]
  _validator(flag, lambda values: _check_items(values, kind=float, valid=valid,
                                               expected=expected))


def _check_weights(value):
  from tfhub_transfer import backbones  # pylint: disable=g-import-not-at-top
  if value and value not in (regimes.IMAGENET, regimes.RANDOM):
    backbones.weights_format(value)  # Reads the header: one line on what is wrong.


def _check_manual_dir(value):
  if value and not os.path.isdir(value):
    raise ValueError("no such directory; create it and place the dataset's files there")


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
      raise ValueError(f"item {item!r} is not NAME=TOP1 (e.g. 'keras:EfficientNetB0=77.1')")
  return top1


_bounded(_SEEDS, "seed")
_bounded(_TRAIN_STEPS, "train_steps", empty_means_zero=True, paper=True)
_bounded(_EXAMPLES_PER_CLASS, "examples_per_class", empty_means_zero=True, paper=True)
_bounded(_IMAGE_SIZE, "image_size")
_bounded(_BATCH_SIZE, "batch_size")
_bounded(_MAX_TRIALS, "max_trials")
_bounded(_L2_GRID_SIZE, "l2_grid_size")
_bounded(_MAX_EXAMPLES, "max_examples")
_grid_items(_LEARNING_RATES)
_grid_items(_WEIGHT_DECAYS)
_validator(_SHARD, sweep.parse_shard)
_validator(_MODEL_KWARGS, FrozenKwargs.parse)
_validator(_WEIGHTS, _check_weights)
_validator(_MANUAL_DIR, _check_manual_dir)
_validator(_IMAGENET_TOP1, _parse_top1)
_validator(_CONVERGENCE_THRESHOLD, protocol.check_convergence_threshold)


@contextlib.contextmanager
def _checking():
  """Checks before anything runs: the ValueError of a registry getter or a library check
  (each names the flag and the fix) is a usage error here, and only here."""
  try:
    yield
  except UsageError:
    raise
  except ValueError as e:
    raise UsageError(str(e)) from e


def _require_grid_flags(regime_values):
  missing = [f"--{f.name}" for f, value in ((_MODEL, _MODEL.value), (_DATASET, _DATASET.value),
                                            (_REGIME, regime_values)) if not value]
  if missing:
    raise UsageError(f"{', '.join(missing)} required (see --list_models, --list_datasets; "
                     f"regimes: {', '.join(regimes.REGIMES)}).")


def _existing_workdir() -> str:
  if not os.path.isdir(_WORKDIR.value):
    raise UsageError(f"--workdir={_WORKDIR.value}: no such directory; pass the workdir the "
                     f"runs wrote to.")
  return _WORKDIR.value


def _ints(flag) -> tuple[int, ...]:
  """A list flag of integers, checked at parse time (the empty list means 0)."""
  return tuple(int(v) for v in flag.value) or (0,)


def _counts(flag):
  """`_ints`, or `sweep.PAPER` (a study dimension with the paper's own values)."""
  return sweep.PAPER if flag.value == [sweep.PAPER] else _ints(flag)


def _grid_and_config(*, build_models: bool = True) -> tuple[sweep.Grid, ExperimentConfig]:
  """The flags as the sweep's grid and one frozen config (the grid's first cell), every name
  checked against its registry before anything runs (`build_models`: see
  `sweep.check_grid`)."""
  with _checking():
    regime_values = (regimes.score_regimes(_REGIME.value) if _MODE.value == "score"
                     else tuple(_REGIME.value))
    _require_grid_flags(regime_values)
    grid = sweep.make_grid(models=_MODEL.value, datasets=_DATASET.value,
                           regimes=regime_values, seeds=_ints(_SEEDS),
                           shard=sweep.parse_shard(_SHARD.value),
                           examples_per_class=_counts(_EXAMPLES_PER_CLASS),
                           train_steps=_counts(_TRAIN_STEPS))
    config = ExperimentConfig(
        model=grid.models[0], dataset=grid.datasets[0], regime=grid.regimes[0],
        seed=grid.seeds[0], workdir=_WORKDIR.value, weights=_WEIGHTS.value or None,
        model_kwargs=FrozenKwargs.parse(_MODEL_KWARGS.value), image_size=_IMAGE_SIZE.value,
        data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value, batch_size=_BATCH_SIZE.value,
        train_steps=grid.train_steps[0], examples_per_class=grid.examples_per_class[0],
        learning_rates=tuple(float(v) for v in _LEARNING_RATES.value),
        weight_decays=tuple(float(v) for v in _WEIGHT_DECAYS.value), tuner=_TUNER.value,
        max_trials=_MAX_TRIALS.value, l2_grid_size=_L2_GRID_SIZE.value,
        strategy=_STRATEGY.value, max_examples=_MAX_EXAMPLES.value,
        precision=_PRECISION.value, jit_compile=_JIT_COMPILE.value,
        eval_preprocessing=_EVAL_PREPROCESSING.value, fast_decode=_FAST_DECODE.value,
        resize_on_device=_RESIZE_ON_DEVICE.value)
    sweep.check_grid(grid, config, build_models=build_models)
  return grid, config


def main(argv: Sequence[str]) -> int:
  del argv  # `_parse_flags` refused any argument that is not a flag.
  progress.show_own_info_only()
  try:
    with faults.interrupts_raised():  # Reported as the interrupt, not as what it became.
      return _dispatch()
  except UsageError as e:
    print(f"tfhub_transfer: {e}", file=sys.stderr)
    return 2
  except (storage.StoreError, faults.MachineFault, launcher.LaunchFailed) as e:
    print(f"tfhub_transfer: {e}", file=sys.stderr)  # A damaged or full store or disk, a
    return 1  # failed process: each names the file or log and what to do.
  except OSError as e:  # A full disk no layer named, a missing or unreadable file.
    message = faults.describe_disk_full(e) if faults.is_disk_full(e) else str(e)
    print(f"tfhub_transfer: {message}", file=sys.stderr)
    return 1
  except faults.Terminated:  # SIGTERM (SLURM, Kubernetes): as Ctrl-C, with its own code.
    print(TERMINATED, file=sys.stderr)
    return faults.TERMINATED_EXIT_CODE
  except KeyboardInterrupt:  # Ctrl-C: finished cells, trials and caches are kept.
    print(INTERRUPTED, file=sys.stderr)
    return 130
  finally:
    faults.clear_interrupt()  # Reported: whatever this process runs next starts afresh.


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
    _require_grid_flags(_REGIME.value)
    forgotten = merged.forget(_existing_workdir(), models=_MODEL.value,
                              datasets=_DATASET.value, regimes=_REGIME.value,
                              seeds=_ints(_SEEDS), include_ok=_FORGET_OK.value)
    for record in forgotten:
      print(f"forgot {record.status_line()}")
    print(f"{len(forgotten)} stored result(s) forgotten in {_WORKDIR.value}"
          + ("" if _FORGET_OK.value else " (failed ones only; --forget_ok for ok ones)"))
    return 0
  launching = _MODE.value == "run" and _PARALLEL_TRIALS.value
  # TensorFlow starts quietly before the grid's checks, which may build a Keras model; the
  # launcher's process never starts it (its children check the model).
  devices_line = None if launching else devices.import_tensorflow_quietly(
      keep_all=flags.FLAGS["verbosity"].value > 0)
  grid, config = _grid_and_config(build_models=not launching)
  with _checking():  # A chief or worker of a distributed search has its secret.
    oracle_auth.check_environment()
  if launching:
    return _launch(grid, config)  # Without TensorFlow in this process: see the launcher.
  logging.info("tfhub_transfer %s: %s.", tfhub_transfer.__version__, devices_line)
  if _MODE.value == "plan":
    print("\n".join(sweep.plan_lines(grid.cells(config), config.workdir)))
    return 0
  with _checking():  # Before any work: a GPU strategy without a GPU, XLA x replicas.
    devices.check_local_strategy(config.strategy, jit_compile=config.jit_compile)
  if _MODE.value == "score":
    from tfhub_transfer import scoring  # pylint: disable=g-import-not-at-top
    summary = scoring.run_score_grid(config, grid,
                                     on_result=lambda result: print(result.summary_line()))
    return _finish(summary, show_line=summary.cells > 1)
  summary = sweep.run_grid(config, grid, on_result=lambda result: print(result.summary_line()))
  return _finish(summary, show_line=summary.cells > 1 or summary.skipped)


def _launch(grid, config) -> int:
  """`--parallel_trials`: the launcher, without TensorFlow in this process."""
  with _checking():
    config = launcher.one_cell(grid.cells(config))
    launcher.check_parallel_trials(config, num_workers=_PARALLEL_TRIALS.value,
                                   gpus_per_worker=_GPUS_PER_TRIAL.value,
                                   gpu_ids=devices.visible_gpu_ids())
  record = launcher.launch_parallel_trials(config, num_workers=_PARALLEL_TRIALS.value,
                                           gpus_per_worker=_GPUS_PER_TRIAL.value)
  if record is not None:
    print(record.summary_line())
  return 0 if record is not None and record.status == "ok" else 1


def _finish(summary, *, show_line: bool) -> int:
  """Prints a sweep's or a score grid's summary line and each failure; the exit code."""
  if show_line:
    print(summary.line())
  for failure in summary.failures:  # Its first line; the stored record holds the rest.
    print(f"tfhub_transfer: FAILED {failure.splitlines()[0]}", file=sys.stderr)
  return 1 if summary.failures else 0


def run_main():
  """Console-script entry point."""
  # Before TensorFlow starts: GPU memory growth, and its C++ log level (the start-up
  # chatter hides the progress lines; --verbosity still applies).
  devices.prepare_environment()
  signal.signal(signal.SIGTERM, faults.raise_terminated)  # Ends like Ctrl-C (`faults`).
  if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Not if ignored (nohup).
    signal.signal(signal.SIGINT, faults.raise_interrupted)
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run_main()
