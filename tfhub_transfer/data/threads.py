"""Each process's share of the CPU cores (TF-free: a launcher parent imports it).

`--parallel_trials` runs several worker processes on one host. Pinned to disjoint cores
(`cpu_share`, `pin_to_cpus`), each sizes TensorFlow's intra-op and inter-op pools and tf.data's
default pool to its own cores: TensorFlow counts the schedulable CPUs (the process's affinity)
when it starts. `make_pipeline` gives each pipeline a private pool of `usable_cpus()` threads,
so the input pipeline stays inside the share too.
"""

import os
from typing import Iterable


def usable_cpus() -> int:
  """The CPUs this process may run on (its affinity; all of them where that is unknown)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def cpu_share(worker: int, num_workers: int, cpus: Iterable[int]) -> tuple[int, ...]:
  """Worker `worker`'s share of `cpus`: contiguous slices, disjoint, of sizes differing by at
  most one; with more workers than CPUs, one CPU each, round robin.

  Raises:
    ValueError: a worker index outside [0, num_workers), or no CPU.
  """
  cpus = sorted(cpus)
  if not 0 <= worker < num_workers:
    raise ValueError(f"worker={worker} must be in [0, {num_workers}) (num_workers).")
  if not cpus:
    raise ValueError("cpu_share needs at least one CPU; got none.")
  if num_workers >= len(cpus):
    return (cpus[worker % len(cpus)],)
  return tuple(cpus[worker * len(cpus) // num_workers:(worker + 1) * len(cpus) // num_workers])


def pin_to_cpus(cpus: Iterable[int]) -> None:
  """Restricts this process (and the threads it starts) to `cpus`. Call before TensorFlow
  starts (e.g. as a worker's `preexec_fn`), so that its thread pools are sized to them."""
  os.sched_setaffinity(0, set(cpus))
