"""`python -m bench.score_scale`: wall time and memory of the transferability scores at scale.

Writes a synthetic N x D float32 feature matrix (class centres plus Gaussian noise) to a
temporary file, memory-maps it as the feature cache does, and times each estimator of
`transferability.score_features` on it, once, in wall and CPU seconds (all threads; on a
shared machine the CPU seconds say what the work costs): the shared two-pass statistics
(LogME and H-score), LogME's D x D eigendecomposition, H-score's solve, and k-NN
leave-one-out over `KNN_MAX_QUERIES` queries against all N. Memory: the process's peak
resident anonymous memory (sampled every 50 ms; the memory-mapped file's pages are the OS page
cache, not counted) and its peak RSS (which counts them).

  python -m bench.score_scale                       # 50,000 x 4,096, 100 classes
  python -m bench.score_scale --n=20000 --dim=2048  # smaller

Not part of `python -m bench` (it does not touch BENCHMARKS.md); bench/README.md records
what it printed.
"""

import argparse
import os
import platform
import resource
import sys
import tempfile
import threading
import time

import numpy as np

from tfhub_transfer import transferability


def _anon_kib() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("RssAnon:"):
        return int(line.split()[1])
  return 0


class _PeakAnon:
  """Samples RssAnon on a thread; `peak` is the largest value seen (KiB)."""

  def __init__(self):
    self.peak, self._stop = _anon_kib(), threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.wait(0.05):
      self.peak = max(self.peak, _anon_kib())

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _anon_kib())


def write_features(path: str, *, n: int, dim: int, classes: int, seed: int = 0,
                   chunk: int = 4096) -> np.ndarray:
  """Writes class centres + unit noise, float32, chunk by chunk; returns the labels."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, dim)).astype(np.float32) * 0.15
  labels = rng.integers(0, classes, n)
  with open(path, "wb") as f:
    for start in range(0, n, chunk):
      y = labels[start:start + chunk]
      f.write((centres[y] + rng.standard_normal((len(y), dim), dtype=np.float32)).tobytes())
  return labels


def run(*, n: int, dim: int, classes: int, workdir: str) -> dict:
  """Scores an n x dim synthetic matrix; returns the measured times, scores and memory."""
  path = os.path.join(workdir, "features.f32")
  start = time.perf_counter()
  labels = write_features(path, n=n, dim=dim, classes=classes)
  write_s = time.perf_counter() - start
  features = np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))
  data = transferability.LabelledFeatures(features, labels, num_classes=classes,
                                          multi_label=False)
  load, baseline = os.getloadavg()[0], _anon_kib()
  wall, cpu, values = {}, {}, {}
  with _PeakAnon() as anon:
    # The steps of `transferability.score_features`, each timed in wall and CPU seconds (all
    # threads): on a shared machine the CPU seconds say what the work costs.
    for name, fn in [("stats", lambda: data.stats)] + [
        (n, spec.fn) for n, spec in transferability.ESTIMATORS.items()]:
      start, start_cpu = time.perf_counter(), time.process_time()
      value = fn() if name == "stats" else fn(data)
      wall[name], cpu[name] = time.perf_counter() - start, time.process_time() - start_cpu
      if name != "stats":
        values[name] = value
  return {"n": n, "dim": dim, "classes": classes, "write_s": write_s, "wall": wall,
          "cpu": cpu, "values": values, "knn_queries": min(n, transferability.KNN_MAX_QUERIES),
          "peak_anon_mib": anon.peak / 1024, "baseline_anon_mib": baseline / 1024,
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "load_before": load, "load_after": os.getloadavg()[0]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=50_000)
  parser.add_argument("--dim", type=int, default=4096)
  parser.add_argument("--classes", type=int, default=100)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory(prefix="score_scale-") as workdir:
    out = run(n=args.n, dim=args.dim, classes=args.classes, workdir=workdir)
  print(f"{out['n']:,} x {out['dim']:,} float32 features (memory-mapped), {out['classes']} "
        f"classes; {os.cpu_count()} CPUs, {platform.machine()}, NumPy {np.__version__}; "
        f"load average {out['load_before']:.1f} before, {out['load_after']:.1f} after")
  print(f"  {'step':10s} {'wall s':>8s} {'CPU s':>8s}")
  for name in out["wall"]:
    print(f"  {name:10s} {out['wall'][name]:8.1f} {out['cpu'][name]:8.1f}")
  print(f"  {'total':10s} {sum(out['wall'].values()):8.1f} {sum(out['cpu'].values()):8.1f}"
        f"   (writing the file: {out['write_s']:.1f} s wall, not counted)")
  print("  scores: " + " ".join(f"{k}={v:.4g}" for k, v in out["values"].items())
        + f"; k-NN queries: {out['knn_queries']}")
  print(f"  peak anonymous memory {out['peak_anon_mib']:.0f} MiB, "
        f"{out['baseline_anon_mib']:.0f} MiB before scoring (the features file is "
        f"{out['n'] * out['dim'] * 4 / 2**20:.0f} MiB); peak RSS incl. mapped file pages "
        f"{out['peak_rss_mib']:.0f} MiB")
  return 0


if __name__ == "__main__":
  sys.exit(main())
