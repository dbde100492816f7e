"""Figure 5's worker: `python -m bench.memory_child '<json>'` extracts `count` images in this
fresh process and prints one JSON line with its peak resident memory.

The JSON names: count, model, image_size, batch, records (a TFRecord of JPEG examples, cycled
lazily to `count`), cache_dir.
"""

import json
import resource
import sys
import time

import keras
import numpy as np
import psutil
import tensorflow as tf


def peak_rss_mib() -> float:
  """This process's peak resident memory.

  Linux's VmHWM belongs to the address space made by exec, so it counts this process only;
  `ru_maxrss` would start from the forking parent's peak (Linux carries it across exec).
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024  # kB.
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux.


def main(argv):
  spec = json.loads(argv[1])
  keras.config.disable_interactive_logging()
  from bench import data  # pylint: disable=g-import-not-at-top
  from bench import extraction  # pylint: disable=g-import-not-at-top
  from tfhub_transfer import features  # pylint: disable=g-import-not-at-top

  feature_fn, backbone, _ = extraction.build_extractor(spec["model"], spec["image_size"])
  # Trace before measuring, so the baseline RSS includes the compiled function.
  np.asarray(feature_fn(tf.zeros([spec["batch"], backbone.image_size,
                                  backbone.image_size, 3])))
  rss_before = psutil.Process().memory_info().rss / 2**20
  start = time.perf_counter()
  ds = data.read_jpeg_tfrecord(spec["records"], num_examples=spec["count"])
  cached = features.extract_features(
      feature_fn, extraction.extraction_pipeline(ds, backbone, spec["batch"]),
      cache_dir=spec["cache_dir"], key="memory", description="bench memory")
  if cached.features.shape[0] != spec["count"]:
    raise AssertionError(f"extracted {cached.features.shape[0]} of {spec['count']} images")
  peak = peak_rss_mib()
  print(json.dumps({"count": spec["count"], "peak_rss_mib": peak,
                    "rss_before_mib": rss_before,
                    "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
  main(sys.argv)
