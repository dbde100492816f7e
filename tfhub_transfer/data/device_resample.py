"""The accelerator's half of the evaluation transform (`resize_on_device`).

The host decodes each image's window (`transforms.eval_window`) and batches the windows into
uint8 squares of `transforms.canvas_size` (zero padding: `pipeline.make_pipeline`); this
module resamples them onto image_size squares inside the compiled forward function, on the
accelerator, so that the host's cores only decode (BENCHMARKS.md, figure 9e/9f: the host's
share is half the reference path's time per image or less; on a CPU this resample costs more
than the host's own box filter, and what it costs a GPU is step 6 of bench/gpu_session.sh).
The filters are those of the fast path (`transforms.fast_jpeg_window`), written
as two separable passes of at most `_TAPS` weighted rows (then columns) each, gathered from
the canvas: static shapes, so XLA compiles it once with the backbone.

  - box filter (the window downscaled in both dimensions): output pixel i of a side of n
    source pixels is the mean of [i s, (i + 1) s), s = n / image_size, each source pixel
    weighted by its overlap (TensorFlow's `ResizeArea`);
  - bilinear (an upscale): half-pixel centres, x = (i + 0.5) s - 0.5, edges clamped
    (TensorFlow's `ResizeBilinear` with `half_pixel_centers`).

Both compute in float32 in another order than TensorFlow's kernels: the values are the fast
path's up to float rounding (tests/test_device_resample.py).
"""

from typing import Callable

import tensorflow as tf

# Source pixels an output pixel reads per dimension: a box of width s < 2 (a window under
# twice the output, `transforms.canvas_size`) overlaps at most 3; bilinear reads 2.
_TAPS = 3


def _taps(side: tf.Tensor, box: tf.Tensor, image_size: int,
          canvas: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Source indices (int32 [B, image_size, _TAPS], within the canvas) and weights (float32,
  same shape) of each output pixel along one dimension, for windows of `side` pixels
  (float32 [B]) resampled by the box filter where `box` (bool [B]), else bilinearly."""
  side = tf.maximum(side, 1.0)[:, None, None]
  scale = side / float(image_size)
  out = tf.range(image_size, dtype=tf.float32)[None, :, None]
  tap = tf.range(_TAPS, dtype=tf.float32)[None, None, :]
  # Box: the overlap of source pixel j with [out s, (out + 1) s), over s.
  start, end = out * scale, (out + 1.0) * scale
  box_index = tf.floor(start) + tap
  box_weight = tf.maximum(
      tf.minimum(box_index + 1.0, end) - tf.maximum(box_index, start), 0.0) / scale
  # Bilinear: the two source pixels around x, clamped to the window.
  x = (out + 0.5) * scale - 0.5
  floor = tf.floor(x)
  lerp = x - floor
  lower = tf.maximum(floor, 0.0)
  upper = tf.minimum(tf.math.ceil(x), side - 1.0)
  zero = tf.zeros_like(x)
  linear_index = tf.concat([lower, upper, zero], -1)
  linear_weight = tf.concat([1.0 - lerp, lerp, zero], -1)
  box = box[:, None, None]
  index = tf.where(box, box_index, linear_index)
  weight = tf.where(box, box_weight, linear_weight)
  return tf.cast(tf.clip_by_value(index, 0.0, canvas - 1.0), tf.int32), weight


def resample_windows(canvases: tf.Tensor, meta: tf.Tensor, image_size: int) -> tf.Tensor:
  """Windows padded into canvases -> float32 [B, image_size, image_size, 3] in [0, 255].

  Args:
    canvases: uint8 [B, C, C, 3]: each window in the top-left corner, zeros elsewhere.
    meta: int32 [B, 3]: each window's height, width, and 1 for the box filter (else
      bilinear), as `transforms.eval_window` gives them.
    image_size: side of the output squares.
  """
  canvas = int(canvases.shape[1])
  images = tf.cast(canvases, tf.float32)
  meta = tf.cast(meta, tf.float32)
  box = meta[:, 2] > 0.5
  rows, row_weights = _taps(meta[:, 0], box, image_size, canvas)
  cols, col_weights = _taps(meta[:, 1], box, image_size, canvas)
  # Rows: [B, C, C, 3] -> [B, S, C, 3]; then columns: -> [B, S, S, 3].
  images = tf.add_n([
      row_weights[:, :, k, None, None] * tf.gather(images, rows[:, :, k], axis=1,
                                                   batch_dims=1)
      for k in range(_TAPS)])
  images = tf.add_n([
      col_weights[:, None, :, k, None] * tf.gather(images, cols[:, :, k], axis=2,
                                                   batch_dims=1)
      for k in range(_TAPS)])
  return tf.clip_by_value(images, 0.0, 255.0)


def inputs_fn(image_size: int,
              preprocess_fn: Callable[[tf.Tensor], tf.Tensor]) -> Callable[..., tf.Tensor]:
  """(canvases, meta) -> the backbone's input: the resample, then `preprocess_fn`."""
  def fn(windows):
    canvases, meta = windows
    return preprocess_fn(resample_windows(canvases, meta, image_size))
  return fn
