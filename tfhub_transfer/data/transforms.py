"""Image transforms of the input pipeline: encoded bytes -> float32 RGB squares in [0, 255].

Two paths give the pixels a network sees; which one is a protocol setting (`fast_decode`):
  - the reference path decodes the whole image, then resamples with an antialiased kernel
    (bilinear or bicubic: `crops.EvalPreprocessing.method`; training: bilinear);
  - the fast path (JPEGs) decodes only the window the output is resampled from
    (`decode_and_crop_jpeg`), at a reduced DCT scale (1/2, 1/4, 1/8) where the source is at
    least twice the target, then resizes that window, rounded to whole decoded pixels, with
    a box filter where it downscales (antialiased, at a fraction of the triangle kernel's
    cost) and bilinear where it upscales (`fast_jpeg_window`).
Both sample at half-pixel centres, with the same geometry up to the window's rounding. The
fast path's pixels differ from the reference's (filter, rounding, DCT scaling, and on a few
JPEGs a few levels at window edges where libjpeg's chroma upsampling sees fewer
neighbours), so it is a protocol setting; its accuracy is measured in BENCHMARKS.md.
"""

from typing import Callable

import tensorflow as tf

from tfhub_transfer.data import crops

CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_MAX_ATTEMPTS = 10
# TensorFlow's kernels for the two resampling methods (tf.image.resize uses the same).
_KERNELS = {"bilinear": "triangle", "bicubic": "keyscubic"}


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/GIF/BMP/WebP bytes, any colour mode -> uint8 [H, W, 3] RGB.

  Grayscale is replicated, alpha dropped, CMYK converted by libjpeg, 16-bit scaled to 8-bit,
  and only the first frame of an animation is kept. JPEGs use the accurate integer IDCT
  (the same pixels as PIL), not TF's default fast one.
  """
  def decode_jpeg():
    return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")

  def decode_any():
    return tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)

  image = tf.cond(tf.io.is_jpeg(encoded), decode_jpeg, decode_any)
  image.set_shape([None, None, 3])
  return image


def _central_window(shape: tf.Tensor, image_size: int, crop_fraction: float) -> tf.Tensor:
  """[top, left, height, width] (float64, source pixels) of the source region the central
  crop of the resized image covers: the shorter side resized to
  round(image_size / crop_fraction), the crop centred (offset rounded down) in it."""
  shape = tf.cast(shape, tf.float64)
  shorter_side = float(round(image_size / crop_fraction))
  scaled = tf.round(shape * (shorter_side / tf.reduce_min(shape)))
  offset = tf.math.floordiv(scaled - image_size, 2.0)
  source_per_scaled = shape / scaled
  return tf.concat([offset * source_per_scaled, image_size * source_per_scaled], 0)


def _resample(image: tf.Tensor, window: tf.Tensor, image_size: int, *, kernel: str,
              antialias: bool) -> tf.Tensor:
  """Resamples `window` ([top, left, height, width] in `image`'s pixels, float64) onto an
  image_size square, half-pixel centres, with `tf.image.resize`'s kernels (edges handled
  as it does). Only the window's output pixels are computed."""
  scale = image_size / window[2:]
  image = tf.raw_ops.ScaleAndTranslate(
      images=image[None], size=[image_size, image_size], scale=tf.cast(scale, tf.float32),
      translation=tf.cast(-window[:2] * scale, tf.float32), kernel_type=kernel,
      antialias=antialias)[0]
  image.set_shape([image_size, image_size, 3])
  return image


def resize_central_crop(image: tf.Tensor, image_size: int, *,
                        crop_fraction: float = 0.875, method: str = "bilinear") -> tf.Tensor:
  """Evaluation transform (reference path): shorter side to round(image_size /
  crop_fraction), central crop, antialiased.

  Resamples straight into the central window with the kernel `tf.image.resize` runs, at the
  same scale, shifted by the crop offset: each output pixel depends only on its position in
  the scaled image, so these are the pixels of resize-then-crop, without computing the part
  of the scaled image that the crop drops.

  Args:
    image: [H, W, 3] image, any dtype.
    image_size: side of the square output.
    crop_fraction: share of the resized shorter side kept.
    method: "bilinear" or "bicubic".

  Returns:
    float32 [image_size, image_size, 3], values in the input's range (bicubic may
    overshoot it).
  """
  window = _central_window(tf.shape(image)[:2], image_size, crop_fraction)
  return _resample(image, window, image_size, kernel=_KERNELS[method], antialias=True)


def _sample_crop_box(shape: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Inception-style random crop of an image of `shape` ([H, W]): (begin, size), int32 [2]."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([shape, [3]], 0), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed, min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT_RANGE,
      area_range=CROP_AREA_RANGE, max_attempts=CROP_MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return begin[:2], size[:2]


def random_resized_crop(image: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
  """Training transform (reference path): Inception-style random crop (area 8%-100%, aspect
  3/4-4/3) resized to a square, bilinear with antialiasing.

  Args:
    image: [H, W, 3] image.
    image_size: side of the square output.
    seed: stateless seed, int [2].

  Returns:
    float32 [image_size, image_size, 3].
  """
  begin, size = _sample_crop_box(tf.shape(image)[:2], seed)
  image = tf.slice(image, tf.concat([begin, [0]], 0), tf.concat([size, [3]], 0))
  image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
  image.set_shape([image_size, image_size, 3])
  return image


def dct_scale_index(source_side: tf.Tensor, target_side) -> tf.Tensor:
  """k such that decoding at DCT scale 1 / 2**k (k in 0..3, as `tf.io.decode_jpeg`'s
  `ratio` offers) keeps `source_side / 2**k` at least `target_side`, k as large as can be:
  int32."""
  fits = [tf.cast(source_side, tf.float64) >= float(2 ** k) * tf.cast(target_side, tf.float64)
          for k in (1, 2, 3)]
  return tf.add_n([tf.cast(f, tf.int32) for f in fits])


def _rounded_window(scaled: tf.Tensor, decoded_shape: tf.Tensor,
                    image_size: int) -> tuple[tf.Tensor, tf.Tensor]:
  """The bilinear fast path's window: `scaled` ([top, left, height, width], float64, in the
  decoded image's pixels) rounded to whole pixels of an image of `decoded_shape`, as int32
  [top, left, height, width], and whether it is downscaled in both dimensions (box filter)
  rather than upscaled in one (bilinear)."""
  low = tf.clip_by_value(tf.round(scaled[:2]), 0.0, decoded_shape - 1.0)
  high = tf.clip_by_value(tf.round(scaled[:2] + scaled[2:]), low + 1.0, decoded_shape)
  crop = tf.cast(tf.concat([low, high - low], 0), tf.int32)
  return crop, tf.reduce_min(scaled[2:]) > image_size


def _dct_scaled(shape: tf.Tensor, window: tf.Tensor,
                image_size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """The fast path's DCT scale for a JPEG of `shape` ([height, width]) and a `window`
  (float64 [top, left, height, width], source pixels): its index k (scale 1 / 2**k,
  `dct_scale_index`), the decoded image's [height, width] and the window in its pixels
  (float64)."""
  index = dct_scale_index(tf.reduce_min(window[2:]), image_size)
  ratio = tf.cast(2 ** index, tf.float64)
  return index, tf.math.ceil(tf.cast(shape, tf.float64) / ratio), window / ratio


def _decode_jpeg_window(encoded: tf.Tensor, crop: tf.Tensor, ratio: int) -> tf.Tensor:
  """uint8 [h, w, 3]: the `crop` (int32 [top, left, height, width]) of a JPEG decoded at
  DCT scale 1 / ratio, accurate integer IDCT."""
  image = tf.io.decode_and_crop_jpeg(encoded, crop, channels=3, ratio=ratio,
                                     dct_method="INTEGER_ACCURATE")
  image.set_shape([None, None, 3])
  return image


def _resize_window(image: tf.Tensor, image_size: int, method: str) -> tf.Tensor:
  """The bilinear fast path's resize of a decoded window (uint8) onto an image_size square:
  `tf.image.resize` with `method`, "area" (the box filter) or "bilinear"."""
  if method == "area":  # The same values, ~20% sooner from float32 than uint8.
    image = tf.cast(image, tf.float32)
  return tf.image.resize(image, [image_size, image_size], method=method)


def fast_jpeg_window(encoded: tf.Tensor, shape: tf.Tensor, window: tf.Tensor,
                     image_size: int, *, method: str = "bilinear") -> tf.Tensor:
  """The fast path: a JPEG's `window` (source pixels, float64 [top, left, height, width];
  `shape`: the JPEG's [height, width]) resampled onto an image_size square, decoding only
  that window, at a reduced DCT scale where the window's shorter side is at least twice
  image_size.

  Bilinear: the window is rounded to whole decoded pixels (its samples move by at most half a
  decoded pixel) and resized by `tf.image.resize`, with the box filter (`area`: each output
  pixel the mean of the window pixels it covers) where the window is downscaled in both
  dimensions, else bilinear (an upscale needs no antialiasing). Both cost a fraction of the
  reference's antialiased triangle kernel. Bicubic: resampled exactly, with the reference's
  kernel, antialiased where it downscales.

  Returns:
    float32 [image_size, image_size, 3].
  """
  index, decoded_shape, scaled = _dct_scaled(shape, window, image_size)
  if method == "bilinear":
    crop, downscaled = _rounded_window(scaled, decoded_shape, image_size)
    # One branch per case, DCT scale x filter, each only its decode and resize (the window's
    # arithmetic is done once, before the switch): the ratio is an attribute of the decode.
    image = tf.switch_case(index + 4 * tf.cast(downscaled, tf.int32), [
        lambda r=2 ** k, m=resize_method: _resize_window(
            _decode_jpeg_window(encoded, crop, r), image_size, m)
        for resize_method in ("bilinear", "area") for k in range(4)])
    image.set_shape([image_size, image_size, 3])
    return image
  # A margin for the kernel's support (widened by the downscale), so that no sample sees the
  # window's edge where the image goes on.
  downscale = tf.reduce_max(scaled[2:]) / image_size
  margin = tf.math.ceil(2.0 * tf.maximum(downscale, 1.0)) + 1.0
  low = tf.maximum(tf.floor(scaled[:2]) - margin, 0.0)
  high = tf.minimum(tf.math.ceil(scaled[:2] + scaled[2:]) + margin, decoded_shape)
  crop = tf.cast(tf.concat([low, high - low], 0), tf.int32)
  image = tf.switch_case(index, [lambda r=2 ** k: _decode_jpeg_window(encoded, crop, r)
                                 for k in range(4)])
  image.set_shape([None, None, 3])
  return _resample(image, tf.concat([scaled[:2] - low, scaled[2:]], 0), image_size,
                   kernel=_KERNELS[method], antialias=True)


def eval_image(image: tf.Tensor, image_size: int, *, decoded: bool = False,
               eval_preprocessing: str = crops.DEFAULT_EVAL_PREPROCESSING,
               fast_decode: bool = False) -> tf.Tensor:
  """The evaluation transform before `preprocess_fn`.

  Args:
    image: encoded bytes, or (`decoded`) a uint8 [H, W, 3] image.
    image_size: side of the square output.
    decoded: `image` is already decoded (the fast path then does not apply).
    eval_preprocessing: a `crops.EVAL_PREPROCESSINGS` name.
    fast_decode: JPEGs take the fast path (`fast_jpeg_window`); other formats the
      reference path.

  Returns:
    float32 RGB [S, S, 3] in [0, 255].
  """
  spec = crops.get_eval_preprocessing(eval_preprocessing)

  def reference():
    return resize_central_crop(image if decoded else decode_rgb(image), image_size,
                               crop_fraction=spec.crop_fraction, method=spec.method)

  def fast():
    shape = tf.image.extract_jpeg_shape(image)[:2]
    return fast_jpeg_window(image, shape,
                            _central_window(shape, image_size, spec.crop_fraction),
                            image_size, method=spec.method)

  if decoded or not fast_decode:
    out = reference()
  else:
    out = tf.cond(tf.io.is_jpeg(image), fast, reference)
  return tf.clip_by_value(out, 0.0, 255.0)


def canvas_size(image_size: int) -> int:
  """The side of the uint8 canvas `eval_window` pads a window into (`resize_on_device`): a
  window decoded at the DCT scale `dct_scale_index` picks is under twice image_size."""
  return 2 * image_size


def eval_window(image: tf.Tensor, image_size: int, *,
                eval_preprocessing: str = crops.DEFAULT_EVAL_PREPROCESSING
                ) -> tuple[tf.Tensor, tf.Tensor]:
  """The host's half of the evaluation transform when the resize runs on the accelerator
  (`resize_on_device`): the window the bilinear fast path resamples, decoded and not
  resized. `device_resample.resample_windows` then does what `fast_jpeg_window` does after
  decoding: the same box filter or bilinear, onto the same image_size square.

  JPEGs decode only the window, at the DCT scale the fast path picks; other formats are
  decoded whole and the window, rounded the same way, sliced out. A window that would not
  fit in the `canvas_size` square (over twice image_size on a side: a huge image, a format
  without DCT scaling) is resampled here instead, as the fast path does, and its values
  rounded to uint8 (half a level at most); the accelerator then copies it.

  Args:
    image: encoded bytes.
    image_size: side of the square the accelerator resamples onto.
    eval_preprocessing: a bilinear `crops.EVAL_PREPROCESSINGS` name.

  Returns:
    (uint8 [h, w, 3] window, int32 [3]: h, w and 1 where the window is downscaled in both
    dimensions (box filter), else 0 (bilinear)).

  Raises:
    ValueError: `eval_preprocessing` resamples with another kernel than bilinear.
  """
  spec = crops.get_eval_preprocessing(eval_preprocessing)
  if spec.method != "bilinear":
    raise ValueError(f"resize_on_device resamples bilinearly (a box filter where it "
                     f"downscales); --eval_preprocessing={spec.name} resamples {spec.method}: "
                     f"choose a bilinear one or resize on the host.")

  def jpeg():
    shape = tf.image.extract_jpeg_shape(image)[:2]
    index, decoded_shape, scaled = _dct_scaled(
        shape, _central_window(shape, image_size, spec.crop_fraction), image_size)
    crop, downscaled = _rounded_window(scaled, decoded_shape, image_size)
    decoded = tf.switch_case(index, [lambda r=2 ** k: _decode_jpeg_window(image, crop, r)
                                     for k in range(4)])
    return decoded, downscaled

  def other():
    decoded = decode_rgb(image)
    shape = tf.shape(decoded)[:2]
    window = _central_window(shape, image_size, spec.crop_fraction)
    crop, downscaled = _rounded_window(window, tf.cast(shape, tf.float64), image_size)
    return tf.slice(decoded, tf.concat([crop[:2], [0]], 0),
                    tf.concat([crop[2:], [3]], 0)), downscaled

  window, downscaled = tf.cond(tf.io.is_jpeg(image), jpeg, other)
  window.set_shape([None, None, 3])
  side = canvas_size(image_size)

  def resample_here():
    resized = tf.cond(downscaled, lambda: _resize_window(window, image_size, "area"),
                      lambda: _resize_window(window, image_size, "bilinear"))
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8), True

  window, downscaled = tf.cond(tf.reduce_max(tf.shape(window)[:2]) > side, resample_here,
                               lambda: (window, downscaled))
  window.set_shape([None, None, 3])
  meta = tf.concat([tf.shape(window)[:2], [tf.cast(downscaled, tf.int32)]], 0)
  return window, meta


def train_image(image: tf.Tensor, image_size: int, seed: tf.Tensor, *,
                decoded: bool = False, fast_decode: bool = False) -> tf.Tensor:
  """The training transform before `preprocess_fn`: random-resized crop and flip.

  The crop box depends only on the image's size and `seed`, so both paths crop the same
  region; the fast path decodes only that box (JPEGs).

  Returns:
    float32 RGB [S, S, 3] in [0, 255].
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

  def reference():
    return random_resized_crop(image if decoded else decode_rgb(image), image_size,
                               crop_seed)

  def fast():
    shape = tf.image.extract_jpeg_shape(image)[:2]
    begin, size = _sample_crop_box(shape, crop_seed)
    return fast_jpeg_window(image, shape, tf.cast(tf.concat([begin, size], 0), tf.float64),
                            image_size)

  if decoded or not fast_decode:
    out = reference()
  else:
    out = tf.cond(tf.io.is_jpeg(image), fast, reference)
  out = tf.image.stateless_random_flip_left_right(out, flip_seed)
  return tf.clip_by_value(out, 0.0, 255.0)


def make_eval_fn(image_size: int, preprocess_fn: Callable[[tf.Tensor], tf.Tensor], *,
                 decoded: bool = False,
                 eval_preprocessing: str = crops.DEFAULT_EVAL_PREPROCESSING,
                 fast_decode: bool = False):
  """encoded bytes (or a decoded uint8 image) -> preprocessed float32 [S, S, 3], no
  augmentation (`eval_image`)."""
  def eval_fn(image):
    return preprocess_fn(eval_image(image, image_size, decoded=decoded,
                                    eval_preprocessing=eval_preprocessing,
                                    fast_decode=fast_decode))
  return eval_fn


def make_train_fn(image_size: int, preprocess_fn: Callable[[tf.Tensor], tf.Tensor], *,
                  decoded: bool = False, fast_decode: bool = False):
  """(encoded bytes or, `decoded`, a uint8 image; stateless seed [2]) -> augmented,
  preprocessed float32 [S, S, 3] (`train_image`)."""
  def train_fn(image, seed):
    return preprocess_fn(train_image(image, image_size, seed, decoded=decoded,
                                     fast_decode=fast_decode))
  return train_fn
