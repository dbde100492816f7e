"""`run_benchmarks(profile, ...) -> Report`: every figure, in one process, in one run.

A figure that fails (a child out of memory, an error) is reported as failed, with its error's
last line, and the others still run: the report holds what was measured and what failed.
"""

import datetime
import os
import time
import traceback
from typing import Callable, Sequence

from absl import logging
import keras

from bench import cells
from bench import curves
from bench import extraction
from bench import finetune
from bench import growth
from bench import harness
from bench import logreg_path
from bench import precision
from bench import preprocessing
from bench import report as report_lib
from bench import shared
from bench import study
from bench.profiles import FIGURES
from bench.profiles import Profile
from tfhub_transfer import experiment


def _figure_fns(profile: Profile, workdir: str) -> dict[str, Callable[[], list]]:
  """Each figure's measurement: a list of `harness.Figure`s and `growth.Curve`s."""
  memory = {}

  def memory_runs():  # Figures 5 and 7 (its extraction curve) share the fresh processes.
    if not memory:
      memory.update(extraction.memory_runs(profile, workdir))
    return memory

  return {
      "1": lambda: [extraction.figure_throughput(profile, workdir, key=f"1{letter}",
                                                 model=model, num_images=n)
                    for letter, (model, n) in zip("abc", profile.extract_models)],
      "2": lambda: [logreg_path.figure_logreg(profile, case)
                    for case in profile.logreg_cases],
      "3": lambda: [cells.figure_second_run(profile, workdir)],
      "4": lambda: [finetune.figure_finetune(profile, workdir)],
      "5": lambda: extraction.figures_memory(profile, memory_runs()),
      "6": lambda: [shared.figure_shared_extraction(profile, workdir)],
      "7": lambda: ([curves.curve_extraction(profile, memory_runs())]
                    + curves.curves_logreg(profile) + [curves.curve_training(profile)]),
      "8": lambda: precision.figures_precision(profile),
      "9": lambda: preprocessing.figures_preprocessing(profile),
      "10": lambda: [study.figure_study(profile, workdir)],
  }


def check_figures(figures: Sequence[str]) -> None:
  """Raises ValueError naming any of `figures` that is not in `FIGURES`."""
  unknown = sorted(set(figures) - set(FIGURES))
  if unknown:
    raise ValueError(f"Unknown figure(s) {unknown}; valid: {', '.join(FIGURES)}.")


def run_benchmarks(profile: Profile, *, workdir: str, figures: Sequence[str] = FIGURES,
                   command: str = "python -m bench",
                   progress: Callable[[str], None] = print) -> report_lib.Report:
  """Measures the chosen figures and returns their report.

  Args:
    profile: sizes (`profiles.PROFILES`).
    workdir: scratch space (synthetic data, caches, checkpoints).
    figures: which of `FIGURES` to run.
    command: recorded as how the run was made.
    progress: called with one line per finished figure.

  Raises:
    ValueError: an unknown figure.
  """
  check_figures(figures)
  os.makedirs(workdir, exist_ok=True)
  machine = harness.machine_info()
  started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  start = time.perf_counter()
  fns = _figure_fns(profile, workdir)
  measured, measured_curves, failures = [], [], {}
  interactive, verbosity = keras.config.is_interactive_logging_enabled(), logging.get_verbosity()
  keras.config.disable_interactive_logging()  # Progress bars would drown the table.
  logging.set_verbosity(logging.ERROR)
  try:
    for key in FIGURES:
      if key in figures:
        try:
          seconds, new = harness.timed(fns[key])
        except Exception as e:  # pylint: disable=broad-except
          failures[key] = harness.error_line(e)
          progress(f"    figure {key} FAILED: {failures[key]}")
          logging.debug("Figure %s failed:\n%s", key, traceback.format_exc())
          continue
        for item in new:
          if isinstance(item, growth.Curve):
            measured_curves.append(item)
            progress(f"[{item.key}] time ~ size^{item.time_exponent:.2f}, memory ~ "
                     f"size^{item.memory_exponent:.2f}"
                     + (f" (goal {item.goal}: {'met' if item.met else 'MISSED'})"
                        if item.goal else "") + f"  ({item.title})")
          else:
            measured.append(item)
            progress(f"[{item.key}] ratio {item.ratio:.3g} "
                     + (f"(goal {item.goal}): {'met' if item.met else 'MISSED'}"
                        if item.goal else "(reported)") + f"  ({item.title})")
        progress(f"    figure {key} took {seconds:.0f} s")
  finally:
    if interactive:
      keras.config.enable_interactive_logging()
    logging.set_verbosity(verbosity)
  machine["load_average_at_end"] = list(os.getloadavg())
  return report_lib.Report(
      mode=profile.name, command=command, started_at=started,
      wall_s=time.perf_counter() - start, machine=machine,
      versions=experiment.library_versions(), figures=measured, curves=measured_curves,
      failures=failures)
