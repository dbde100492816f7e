"""Figure 9: images per second per core of the input pipeline's preprocessing, the fast JPEG
path (`--fast_decode`) against the reference path, on real photos and on synthetic JPEGs; and
the host's share of evaluation preprocessing when the resize runs on the accelerator
(`--resize_on_device`: the host decodes windows, the forward function resamples them).
`python -m bench.preprocessing` prints where the evaluation time goes (`op_costs`).

Per core: each pipeline runs on one thread (tf.data private thread pool of 1, intra-op
parallelism 1), and each side is timed in CPU seconds of the whole process
(`time.process_time`, every thread), not wall seconds, so other processes on a shared
machine do not count; images per CPU-second is images per second on one core. The encoded
bytes are held in memory: reading files is not measured.
"""

import glob
import os
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

from bench import data
from bench import harness
from bench import profiles
from bench.profiles import Profile
from tfhub_transfer.data import device_resample
from tfhub_transfer.data import pipeline
from tfhub_transfer.data import transforms

# Real photos, beside the repository (never copied into it): 370 Oxford-IIIT Pet JPEGs at
# their original sizes (133-1725 px wide, median 500 x 375).
PHOTOS = os.path.join(profiles.SHARED, "data", "pets37")
_BATCH = 32  # At most: a small test set runs at a quarter of its size.


def read_photos(num_images: int, folder: str = PHOTOS) -> list[bytes]:
  """The first `num_images` JPEGs of `folder/<class>/` in name order (0: all).

  Raises:
    FileNotFoundError: no JPEG there (the message names the folder).
  """
  paths = sorted(glob.glob(os.path.join(folder, "*", "*.jpg")))
  if not paths:
    raise FileNotFoundError(f"Figure 9 reads real photos from {os.path.normpath(folder)}/"
                            f"<class>/*.jpg and found none: place the shared data beside "
                            f"the repository (../shared/data/pets37).")
  paths = paths[:num_images] if num_images else paths
  result = []
  for path in paths:
    with open(path, "rb") as f:
      result.append(f.read())
  return result


def synthetic_jpegs(num_images: int, seed: int = 9) -> list[bytes]:
  """Figure 1's kind of synthetic JPEGs (TFDS sizes: longer side 300-512 px)."""
  rng = np.random.default_rng(seed)
  return [data.encode_jpeg(rng, *data.image_shape(rng)) for _ in range(num_images)]


def single_thread(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


# The sides of figure 9: make_pipeline's keyword arguments.
_REFERENCE = {}
_FAST = {"fast_decode": True}
_ON_DEVICE = {"fast_decode": True, "resize_on_device": True}


def _source(encoded: list[bytes]) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(
      {"image": tf.constant(encoded), "label": tf.zeros([len(encoded)], tf.int64)})


def _pass_fn(encoded: list[bytes], image_size: int, batch: int, *, training: bool,
             side: dict):
  """A call makes one pass over `encoded` through `make_pipeline(**side)` (identity backbone
  scaling) and returns the CPU seconds of all but its first batch (start-up: iterator,
  functions). The stream is not repeated, so no work is left running when a pass ends to be
  counted against the next side."""
  ds = single_thread(pipeline.make_pipeline(
      _source(encoded), image_size=image_size, preprocess_fn=lambda images: images,
      batch_size=batch, training=training, seed=0, **side))

  def run():
    iterator = iter(ds)
    next(iterator)
    start = time.process_time()
    for _ in iterator:
      pass
    return time.process_time() - start
  return run


def _cpu_seconds(fns, repetitions: int) -> list[list[float]]:
  """Like `harness.interleave`, in the CPU seconds each call returns: one untimed call of
  each, then `repetitions` alternating timed calls."""
  for fn in fns:
    fn()
  seconds = [[] for _ in fns]
  for _ in range(repetitions):
    for fn, out in zip(fns, seconds):
      out.append(fn())
  return seconds


def device_resample_ms(encoded: list[bytes], image_size: int, batch: int,
                       repetitions: int, clock=time.process_time) -> float:
  """ms per image of `--resize_on_device`'s accelerator half (`resample_windows`, compiled
  with XLA as the forward function is) on the default device, on the windows of `encoded`
  decoded beforehand, by `clock` (CPU seconds of the process by default: on a CPU, what the
  resample would cost a CPU-only host; on a GPU pass `time.perf_counter`)."""
  windows = [w for w, _ in pipeline.make_pipeline(
      _source(encoded), image_size=image_size, preprocess_fn=None, batch_size=batch,
      training=False, **_ON_DEVICE)]
  # Summed, so that every output pixel is computed (XLA would compute only what is returned).
  resample = tf.function(
      lambda w: tf.reduce_sum(device_resample.resample_windows(*w, image_size)),
      jit_compile=True)

  timed = windows[:-1] or windows  # Whole batches where there are: one compiled shape.

  def run():
    start = clock()
    for w in timed:
      resample(w).numpy()
    return clock() - start
  [seconds] = _cpu_seconds([run], repetitions)
  return 1000 * statistics.median(seconds) / sum(int(w[1].shape[0]) for w in timed)


def figures_preprocessing(profile: Profile) -> list[harness.Figure]:
  """9a/9b: evaluation preprocessing on real photos / synthetic JPEGs, the fast path;
  9c/9d: training preprocessing on the same; 9e/9f: the host's share of evaluation
  preprocessing with the resize on the accelerator. Each: the reference path's CPU seconds
  over the other side's (a speed-up in images per second per core); the evaluation sides
  are timed alternately in one loop, against one set of reference passes."""
  size = profile.preprocess_image_size
  photos = profile.preprocess_photos_dir or PHOTOS
  sets = {("pets37 photos (original sizes)" if photos == PHOTOS else f"photos of {photos}"):
              read_photos(profile.preprocess_photos, photos),
          "synthetic TFDS-size JPEGs (longer side 300-512)":
              synthetic_jpegs(profile.preprocess_synthetic)}
  figures = []
  for training in (False, True):
    kind = "training (random-resized crop + flip)" if training else "evaluation (slim crop)"
    sides = (_REFERENCE, _FAST) if training else (_REFERENCE, _FAST, _ON_DEVICE)
    for index, (name, encoded) in enumerate(sets.items()):
      batch = min(_BATCH, max(1, len(encoded) // 4))
      reference, fast, *on_device = _cpu_seconds(
          [_pass_fn(encoded, size, batch, training=training, side=side) for side in sides],
          profile.preprocess_repetitions)
      n = len(encoded) - batch  # The first batch is not timed.
      def rate(seconds, n=n):
        return f"{n / statistics.median(seconds):.0f}"
      setup = (f"{size} px, batch {batch}, identity backbone scaling, encoded bytes in "
               f"memory; one thread (tf.data private thread pool 1, intra-op 1), timed in "
               f"CPU seconds of the whole process")
      baseline = harness.Measurement(
          f"make_pipeline (reference path), {n} images after an untimed first batch, CPU s "
          f"of the process", "s", reference)
      figures.append(harness.Figure(
          key=(("9c", "9d") if training else ("9a", "9b"))[index],
          title=f"{kind} preprocessing per core, {name}: --fast_decode / reference",
          measured=harness.Measurement(
              f"make_pipeline(fast_decode=True), {n} images after an untimed first batch, CPU s "
              f"of the process", "s", fast),
          baseline=baseline, ratio_of=harness.BASELINE_OVER_MEASURED,
          goal="",
          setup=f"{setup}: reference {rate(reference)}, fast {rate(fast)} images per "
                f"CPU-second (= per core)" + ("" if training else (
                    "; the resize on the host, as a CPU-only host runs it (on a host with "
                    "an accelerator: 9e/9f)"))))
      if on_device:
        [on_device] = on_device
        resample = device_resample_ms(encoded, size, batch, profile.preprocess_repetitions)
        figures.append(harness.Figure(
            key=("9e", "9f")[index],
            title=(f"evaluation (slim crop) preprocessing per host core, {name}: "
                   f"--fast_decode --resize_on_device (host's share) / reference"),
            measured=harness.Measurement(
                f"make_pipeline(fast_decode=True, resize_on_device=True): decoded windows in "
                f"uint8 canvases, {n} images after an untimed first batch, CPU s of the "
                f"process", "s", on_device),
            baseline=baseline, ratio_of=harness.BASELINE_OVER_MEASURED, goal=">= 2",
            setup=f"{setup}: reference {rate(reference)}, host's share {rate(on_device)} "
                  f"images per CPU-second (= per core). The resample then runs in the "
                  f"accelerator's forward function; on this CPU (XLA) it costs "
                  f"{resample:.2f} ms per image, so a CPU-only host keeps the resize on "
                  f"the host (9a/9b)"))
  return sorted(figures, key=lambda figure: figure.key)


def _timed_map(inputs: tf.data.Dataset, fn):
  """A call makes one single-threaded pass of map(fn) over `inputs` and returns its CPU
  seconds; `fn` returns a scalar, so that only its own ops are timed."""
  ds = single_thread(inputs.map(fn).batch(64))
  def run():
    start = time.process_time()
    for _ in ds:
      pass
    return time.process_time() - start
  return run


def op_costs(encoded: list[bytes], image_size: int = 224, repetitions: int = 7,
             crop_fraction: float = 0.875) -> list[tuple[str, float]]:
  """Evaluation preprocessing taken apart: (step, CPU ms per image, median over
  `repetitions` single-threaded passes) for each step timed alone on the same images, the
  resampling steps from images decoded beforehand and held in memory."""
  def crop_box(e):
    shape = tf.image.extract_jpeg_shape(e)[:2]
    window = transforms._central_window(shape, image_size, crop_fraction)  # pylint: disable=protected-access
    low, high = tf.round(window[:2]), tf.round(window[:2] + window[2:])
    return tf.cast(tf.concat([low, high - low], 0), tf.int32)

  def window(e):
    return tf.io.decode_and_crop_jpeg(e, crop_box(e), channels=3,
                                      dct_method="INTEGER_ACCURATE")

  def first(x):
    return tf.reshape(x, [-1])[0]

  source = tf.data.Dataset.from_tensor_slices(tf.constant(encoded))
  windows = source.map(window).cache()
  whole = source.map(transforms.decode_rgb).cache()
  outputs = tf.data.Dataset.from_tensors(tf.zeros([image_size, image_size, 3])).repeat(
      len(encoded))
  steps = {
      "tf.data per element (map + batch of a scalar)": (source, tf.strings.length),
      "extract_jpeg_shape": (source, lambda e: first(tf.image.extract_jpeg_shape(e))),
      "decode whole JPEG (reference path)":
          (source, lambda e: first(transforms.decode_rgb(e))),
      "decode whole JPEG at DCT scale 1/8 (~ entropy decoding alone)":
          (source, lambda e: first(tf.io.decode_jpeg(e, channels=3, ratio=8))),
      "decode_and_crop_jpeg, the window (fast path)": (source, lambda e: first(window(e))),
      "  same, dct_method=INTEGER_FAST": (source, lambda e: first(tf.io.decode_and_crop_jpeg(
          e, crop_box(e), channels=3, dct_method="INTEGER_FAST"))),
      "  same, fancy_upscaling=False": (source, lambda e: first(tf.io.decode_and_crop_jpeg(
          e, crop_box(e), channels=3, dct_method="INTEGER_ACCURATE",
          fancy_upscaling=False))),
      "antialiased triangle resample, whole image (reference path)": (
          whole, lambda x: first(transforms.resize_central_crop(x, image_size,
                                                                crop_fraction=crop_fraction))),
      "cast to float32 + box filter (area), window (fast path)": (
          windows, lambda x: first(tf.image.resize(tf.cast(x, tf.float32),
                                                   [image_size, image_size], "area"))),
      "  box filter (area) from uint8": (
          windows, lambda x: first(tf.image.resize(x, [image_size, image_size], "area"))),
      "  bilinear, no antialiasing (not used: loses accuracy)": (
          windows, lambda x: first(tf.image.resize(x, [image_size, image_size]))),
      "clip_by_value of the output": (
          outputs, lambda x: first(tf.clip_by_value(x, 0.0, 255.0))),
      "whole fast path (eval_image, fast_decode=True)": (
          source, lambda e: first(transforms.eval_image(e, image_size, fast_decode=True))),
      "whole reference path (eval_image)":
          (source, lambda e: first(transforms.eval_image(e, image_size))),
  }
  runs = {name: _timed_map(inputs, fn) for name, (inputs, fn) in steps.items()}
  seconds = _cpu_seconds(list(runs.values()), repetitions)  # Fills the caches first.
  return [(name, 1000 * statistics.median(s) / len(encoded)) for name, s in zip(runs, seconds)]


def main(argv: list[str]) -> None:
  """`python -m bench.preprocessing`: `op_costs` on pets37; `... resample`: the ms per image
  of `--resize_on_device`'s resample on the default device (a GPU where there is one), on
  synthetic TFDS-size JPEGs (no shared data needed), for bench/gpu_session.sh."""
  if argv[1:] == ["resample"]:
    jpegs = synthetic_jpegs(256)
    device = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices())[0]
    for image_size in (224, 128):
      with tf.device(device.name):
        ms = device_resample_ms(jpegs, image_size, _BATCH, repetitions=5,
                                clock=time.perf_counter)
      print(f"{ms:6.3f} ms per image (wall): resize_on_device's resample at {image_size} px "
            f"on {device.name} (XLA, batch {_BATCH}, windows already on the host)")
    return
  for step, ms in op_costs(read_photos(0)):
    print(f"{ms:6.3f} ms  {step}")


if __name__ == "__main__":
  main(sys.argv)
