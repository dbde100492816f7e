"""Cost curves: one phase's cost at several sizes (seconds and peak memory, raw values per
size) and the growth exponent fitted to them, cost ~ size ** exponent; and how a call's peak
memory is taken."""

import dataclasses
import math
import statistics
import threading
import time
from typing import Any, Callable, Optional, Sequence

from bench.harness import meets


def fit_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
  """Least-squares slope of log(value) against log(size): value ~ size ** slope (NaN when a
  value is not positive, e.g. no measurable memory growth)."""
  if min(values) <= 0:
    return float("nan")
  xs = [math.log(s) for s in sizes]
  ys = [math.log(v) for v in values]
  mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
  return (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
          / sum((x - mean_x) ** 2 for x in xs))


@dataclasses.dataclass
class Curve:
  """One phase's cost at several sizes, all measured in the same run.

  Attributes:
    key: "7a", ...
    title: the phase and what grows.
    size_label: what the sizes count (e.g. "examples").
    sizes: the sizes, increasing.
    seconds: per size, the wall seconds of each repetition.
    peak_mib: per size, the peak resident memory above the phase's starting point, per
      repetition (see `setup` for how it was taken).
    goal: a goal on the time exponent (e.g. "<= 1.2"), or "" (reported for information).
    setup: how it was measured.
  """
  key: str
  title: str
  size_label: str
  sizes: list[float]
  seconds: list[list[float]]
  peak_mib: list[list[float]]
  goal: str = ""
  setup: str = ""

  @property
  def time_exponent(self) -> float:
    return fit_exponent(self.sizes, [statistics.median(v) for v in self.seconds])

  @property
  def memory_exponent(self) -> float:
    return fit_exponent(self.sizes, [statistics.median(v) for v in self.peak_mib])

  @property
  def met(self) -> bool:
    return meets(self.time_exponent, self.goal)

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "time_exponent": self.time_exponent,
            "memory_exponent": self.memory_exponent, "met": self.met}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Curve":
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _rss_mib(field: str) -> Optional[float]:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) / 1024  # kB.
  except OSError:
    pass
  return None


def measure_peak(fn: Callable[[], Any]) -> tuple[float, float, Any]:
  """(wall seconds, peak resident MiB during the call, result) of one call.

  On Linux the peak is the kernel's VmHWM, reset just before the call (`/proc/self/
  clear_refs`); where that cannot be reset, RSS sampled every 5 ms on a thread.
  """
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # Resets this process's peak RSS (VmHWM) to its current RSS.
    reset = _rss_mib("VmHWM") is not None
  except OSError:
    reset = False
  samples, done = [], threading.Event()

  def sample():
    import psutil  # pylint: disable=g-import-not-at-top
    process = psutil.Process()
    while not done.is_set():
      samples.append(process.memory_info().rss / 2**20)
      done.wait(0.005)

  sampler = None if reset else threading.Thread(target=sample, daemon=True)
  if sampler:
    sampler.start()
  start = time.perf_counter()
  try:
    result = fn()
  finally:
    seconds = time.perf_counter() - start
    done.set()
    if sampler:
      sampler.join()
  peak = _rss_mib("VmHWM") if reset else max(samples, default=0.0)
  return seconds, peak, result


def current_rss_mib() -> float:
  import psutil  # pylint: disable=g-import-not-at-top
  return psutil.Process().memory_info().rss / 2**20
