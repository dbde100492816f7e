"""Measurements, figures and their ratios; the machine they were taken on.

A `Figure` holds two `Measurement`s taken in the same run: the thing measured and its
baseline, each a list of raw values (one per repetition, in the order taken). Its ratio is
computed from those raw values only, so anyone can recompute it from the printed numbers:
when both sides ran the same number of times, alternately, it is the median of the
per-repetition ratios and its spread their min-max; otherwise (figure 2's single slow
scikit-learn run) the ratio of the medians, with the ratios of the extremes as spread.
"""

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence, Union

from tfhub_transfer import devices

# Which side of a figure is the numerator of its ratio.
BASELINE_OVER_MEASURED = "baseline/measured"  # Throughput ratios and speed-ups.
MEASURED_OVER_BASELINE = "measured/baseline"  # Time or memory fractions.


@dataclasses.dataclass
class Measurement:
  """Raw values of one quantity, one per repetition.

  Attributes:
    label: what was measured, e.g. "full path, 256 images".
    unit: "s" or "MiB".
    values: one per repetition, in the order taken.
  """
  label: str
  unit: str
  values: list[float]

  @property
  def median(self) -> float:
    return statistics.median(self.values)

  @property
  def low(self) -> float:
    return min(self.values)

  @property
  def high(self) -> float:
    return max(self.values)

  def summary(self) -> str:
    return f"{format_value(self.median)} {self.unit} ({spread(self.low, self.high)})"


@dataclasses.dataclass
class Check:
  """A secondary condition of a figure, e.g. an accuracy difference."""
  label: str
  value: float
  goal: str  # "<= 0.5" and the like; see `meets`.

  @property
  def met(self) -> bool:
    return meets(self.value, self.goal)


@dataclasses.dataclass
class Figure:
  """One row of the table: a measurement divided by its baseline from the same run.

  Attributes:
    key: "1", "2a", ...: the issue's figure number, plus a letter per case.
    title: what the ratio says.
    measured, baseline: the raw measurements.
    ratio_of: `BASELINE_OVER_MEASURED` or `MEASURED_OVER_BASELINE`.
    goal: e.g. ">= 0.90", "<= 0.05", "< 1.10".
    setup: how it was measured (sizes, backbone, data), for the report.
    checks: secondary conditions that must also hold.
    extra: further raw measurements of the same run that explain the ratio (not part of it).
    rates: named rates derived from the run, read by other tools (figure 9's feed
      `tfhub_transfer.estimate`).
  """
  key: str
  title: str
  measured: Measurement
  baseline: Measurement
  ratio_of: str
  goal: str
  setup: str = ""
  checks: list[Check] = dataclasses.field(default_factory=list)
  extra: list[Measurement] = dataclasses.field(default_factory=list)
  rates: dict[str, float] = dataclasses.field(default_factory=dict)

  def _numerator_denominator(self):
    if self.ratio_of == BASELINE_OVER_MEASURED:
      return self.baseline, self.measured
    if self.ratio_of == MEASURED_OVER_BASELINE:
      return self.measured, self.baseline
    raise ValueError(f"Unknown ratio_of {self.ratio_of!r}; expected "
                     f"{BASELINE_OVER_MEASURED!r} or {MEASURED_OVER_BASELINE!r}.")

  @property
  def paired(self) -> bool:
    """Both sides have one value per repetition, taken back to back."""
    return len(self.measured.values) == len(self.baseline.values)

  @property
  def repetition_ratios(self) -> list[float]:
    """Numerator / denominator of each repetition (paired figures only)."""
    numerator, denominator = self._numerator_denominator()
    return [n / d for n, d in zip(numerator.values, denominator.values)]

  @property
  def ratio(self) -> float:
    """Paired: the median of the per-repetition ratios (each pair ran back to back, so a
    slow spell of a shared machine cancels); else the ratio of the two medians."""
    if self.paired:
      return statistics.median(self.repetition_ratios)
    numerator, denominator = self._numerator_denominator()
    return numerator.median / denominator.median

  @property
  def ratio_range(self) -> tuple[float, float]:
    """Paired: min and max of the per-repetition ratios; else the ratios of the extremes."""
    if self.paired:
      return min(self.repetition_ratios), max(self.repetition_ratios)
    numerator, denominator = self._numerator_denominator()
    return numerator.low / denominator.high, numerator.high / denominator.low

  @property
  def met(self) -> bool:
    return meets(self.ratio, self.goal) and all(check.met for check in self.checks)

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "ratio": self.ratio,
            "ratio_range": list(self.ratio_range), "met": self.met}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Figure":
    return cls(key=d["key"], title=d["title"], measured=Measurement(**d["measured"]),
               baseline=Measurement(**d["baseline"]), ratio_of=d["ratio_of"],
               goal=d["goal"], setup=d.get("setup", ""),
               checks=[Check(**c) for c in d.get("checks", [])],
               extra=[Measurement(**m) for m in d.get("extra", [])],
               rates=dict(d.get("rates", {})))


def meets(value: float, goal: str) -> bool:
  """Whether `value` satisfies a goal written as "<op> <number>" (op: >=, >, <=, <); an empty
  goal (a figure reported for information) is always met."""
  if not goal:
    return True
  op, _, number = goal.partition(" ")
  bound = float(number)
  comparisons = {">=": value >= bound, ">": value > bound, "<=": value <= bound,
                 "<": value < bound}
  if op not in comparisons:
    raise ValueError(f"Goal {goal!r} must read '<op> <number>' with op in "
                     f"{sorted(comparisons)}.")
  return comparisons[op]


def format_value(value: float) -> str:
  """Three significant digits, without scientific notation for the sizes used here."""
  if value == 0 or abs(value) >= 100:
    return f"{value:.0f}"
  if abs(value) >= 10:
    return f"{value:.1f}"
  if abs(value) >= 1:
    return f"{value:.2f}"
  return f"{value:.3g}"


def spread(low: float, high: float) -> str:
  return f"{format_value(low)}–{format_value(high)}"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  """(wall seconds, result) of one call."""
  start = time.perf_counter()
  result = fn()
  return time.perf_counter() - start, result


def interleave(fns: Sequence[Callable[[], Any]],
               repetitions: Union[int, Sequence[int]], *,
               warmup: bool = True) -> list[list[float]]:
  """Times each function `repetitions` times, alternating between them, so that a slow
  spell of a shared machine hits the measurement and its baseline alike.

  Args:
    fns: functions to time.
    repetitions: timed calls of each (one count for all, or one per function; a function
      with fewer stops early).
    warmup: one untimed call of each first (tracing, allocation, file cache).

  Returns:
    Per function, the wall seconds of each timed call, in order.
  """
  counts = ([repetitions] * len(fns) if isinstance(repetitions, int) else list(repetitions))
  if warmup:
    for fn in fns:
      fn()
  seconds = [[] for _ in fns]
  for repetition in range(max(counts)):
    for fn, count, out in zip(fns, counts, seconds):
      if repetition < count:
        out.append(timed(fn)[0])
  return seconds


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def memory_gib() -> Optional[float]:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  except (ValueError, OSError, AttributeError):
    return None


def machine_info() -> dict[str, Any]:
  """CPU, cores, memory, accelerators and load: what the numbers were measured on."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gpus = []
  for device in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(device)
    gpus.append(details.get("device_name", device.name))
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "usable_cores": usable,
          "memory_gib": round(memory_gib() or 0.0, 1), "gpus": gpus,
          "platform": platform.platform(), "load_average_at_start": list(os.getloadavg())}


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def error_line(error: BaseException) -> str:
  """One line saying what failed: the exception's type and its message's last line."""
  lines = [line for line in str(error).strip().splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[-1] if lines else ''}".strip()


def run_child(module: str, spec: dict) -> dict:
  """Runs `python -m <module> '<spec as JSON>'` in a fresh process (this checkout importable,
  TensorFlow quiet) and returns the last JSON line it printed.

  Raises:
    RuntimeError: the child failed or printed no JSON line (its stderr's end is included).
  """
  env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TF_CPP_MIN_LOG_LEVEL="2")
  devices.prepare_environment(env)  # GPU memory growth: the parent holds its share too.
  done = subprocess.run([sys.executable, "-m", module, json.dumps(spec)], cwd=_ROOT, env=env,
                        capture_output=True, text=True, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode or not lines:
    raise RuntimeError(f"{module} {spec} failed ({done.returncode}):\n{done.stderr[-3000:]}")
  return json.loads(lines[-1])
