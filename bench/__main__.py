"""`python -m bench [--device] [--figures=1,2 | --part=NAME] [--logreg_features=F,...]
[--nowrite]`.

Prints the table and every raw value. A full run (every figure, on the profile's own data)
is then stored as bench/results/<mode>.json, and BENCHMARKS.md is rendered from the CPU and
GPU JSONs there (unless --nowrite); a partial run, or one on a user's features, only prints,
so that it never replaces a full run's numbers. A run in named parts (`--part`, see
`profiles.PARTS`: each part at most ~8 minutes on one GPU) stores each part as
bench/results/<mode>.parts/<part>.json, and once every part is there, their merge as
<mode>.json. A figure that fails is reported as failed; the others still run and are
stored, and the exit status is 1.
"""

import dataclasses
import os
import shutil
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

from bench import profiles  # pylint: disable=g-import-not-at-top
from tfhub_transfer import devices  # pylint: disable=g-import-not-at-top

# GPU memory growth, before TensorFlow starts (here and in the figures' child processes).
devices.prepare_environment()

# bench's own flags, apart from absl's global registry (`parse_flags` parses both): `main`
# can then run in a process that also holds the CLI's flags (--workdir is both tools'), as
# tests/test_bench.py runs a partial run.
FLAGS = flags.FlagValues()
_DEVICE = flags.DEFINE_bool("device", False,
                            "Sizes for one GPU (a few minutes) instead of 2 CPU cores.",
                            flag_values=FLAGS)
_FIGURES = flags.DEFINE_list("figures", list(profiles.FIGURES), "Figures to run.",
                             flag_values=FLAGS)
_PART = flags.DEFINE_enum(
    "part", None, list(profiles.PARTS), "Run one named part of the figures ("
    + "; ".join(f"{name}: {','.join(keys)}" for name, keys in profiles.PARTS.items())
    + "), stored on its own; the parts together make a full run.", flag_values=FLAGS)
_LOGREG_FEATURES = flags.DEFINE_list(
    "logreg_features", [],
    "Run figure 2 on these features instead of synthetic ones: .npz files with arrays "
    "'features' [N, D] and 'labels' [N], or feature-cache entries (<workdir>/features/<key>/).",
    flag_values=FLAGS)
_LOGREG_METRIC = flags.DEFINE_enum("logreg_metric", "top1",
                                   list(profiles.SINGLE_LABEL_METRICS),
                                   "Validation metric of figure 2 on --logreg_features.",
                                   flag_values=FLAGS)
_WRITE = flags.DEFINE_bool("write", True,
                           "Store bench/results/<mode>.json and rewrite BENCHMARKS.md.",
                           flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Scratch directory (default: a temporary one, removed after).",
                               flag_values=FLAGS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
MARKDOWN = os.path.join(ROOT, "BENCHMARKS.md")


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from bench import logreg_path  # pylint: disable=g-import-not-at-top
  from bench import report  # pylint: disable=g-import-not-at-top
  from bench import run  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()  # Preparing `digits` for figure 3 would draw bars.
  # training.train leaves model.fit's shuffle default on a tf.data input; Keras says so.
  warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
  mode = "device" if _DEVICE.value else "cpu"
  if mode == "device" and not tf.config.list_physical_devices("GPU"):
    sys.exit("--device sizes the figures for a GPU, but TensorFlow sees none "
             "(tf.config.list_physical_devices('GPU') is empty). Run without --device.")
  profile = profiles.get_profile(mode)
  if _LOGREG_FEATURES.value:
    try:
      profile = dataclasses.replace(profile, logreg_cases=logreg_path.cases_from_files(
          _LOGREG_FEATURES.value, _LOGREG_METRIC.value))
    except ValueError as e:
      sys.exit(f"--logreg_features: {e}")
  try:
    run.check_figures(_FIGURES.value)
  except ValueError as e:
    sys.exit(f"--figures: {e}")
  if _PART.value and FLAGS["figures"].present:
    sys.exit("--part and --figures both choose the figures: pass one of them.")
  figures = list(profiles.PARTS[_PART.value]) if _PART.value else _FIGURES.value
  full_run = set(figures) == set(run.FIGURES) and not _LOGREG_FEATURES.value
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="tfhub_transfer_bench_")
  command = "python -m bench" + " " + " ".join(sys.argv[1:])
  try:
    result = run.run_benchmarks(profile, workdir=workdir,
                                figures=figures, command=command.strip())
  finally:
    if not _WORKDIR.value:
      shutil.rmtree(workdir, ignore_errors=True)
  print()
  print(report.format_text(result))
  if _WRITE.value and _PART.value and not _LOGREG_FEATURES.value:
    store_part(result, mode, _PART.value)
  elif _WRITE.value and not full_run:
    print(f"\nNot written: only a full run (every figure, on the profile's own data) "
          f"replaces bench/results/{mode}.json and BENCHMARKS.md.")
  elif _WRITE.value:
    store_full(result, mode)
  if result.failures:
    sys.exit(f"{len(result.failures)} figure(s) failed: {', '.join(result.failures)}.")


def store_full(result, mode: str) -> None:
  """bench/results/<mode>.json, and BENCHMARKS.md rendered from every mode's JSON."""
  from bench import report  # pylint: disable=g-import-not-at-top
  report.save_json(result, os.path.join(RESULTS_DIR, f"{mode}.json"))
  reports = {m: report.load_json(os.path.join(RESULTS_DIR, f"{m}.json"))
             for m in report.MODES}
  with open(MARKDOWN, "w") as f:
    f.write(report.render_markdown(reports, report.read_notes(RESULTS_DIR)))
  print(f"\nWrote {os.path.relpath(MARKDOWN, ROOT)} and "
        f"{os.path.relpath(RESULTS_DIR, ROOT)}/{mode}.json")


def store_part(result, mode: str, part: str) -> None:
  """bench/results/<mode>.parts/<part>.json; with every part there, their merge as a full
  run (`store_full`)."""
  from bench import report  # pylint: disable=g-import-not-at-top
  parts_dir = os.path.join(RESULTS_DIR, f"{mode}.parts")
  report.save_json(result, os.path.join(parts_dir, f"{part}.json"))
  print(f"\nWrote {os.path.relpath(parts_dir, ROOT)}/{part}.json")
  parts = {name: report.load_json(os.path.join(parts_dir, f"{name}.json"))
           for name in profiles.PARTS}
  missing = [name for name, stored in parts.items() if stored is None]
  if missing:
    print(f"Parts still to run before {mode}.json is written: {', '.join(missing)} "
          f"(python -m bench{' --device' if mode == 'device' else ''} --part=NAME).")
  else:
    store_full(report.merge(list(parts.values())), mode)


def parse_flags(argv):
  """absl's own flags (--help, --verbosity, ...) and bench's, from `argv` (`app.run`'s
  flags_parser). Returns the other arguments."""
  flags.FLAGS.append_flag_values(FLAGS)
  for name in FLAGS:  # --help lists them as this module's.
    flags.declare_key_flag(name)
  rest = app.parse_flags_with_usage(argv)
  FLAGS.mark_as_parsed()  # The same flags: their holders read the values just parsed.
  return rest


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
