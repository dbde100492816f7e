"""The input pipeline: colour modes, the eval transform against PIL, seeded augmentation."""

import io
from unittest import mock

from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

from tests import dummy_data_images as dummy
from tests import fakes
from tfhub_transfer.data import pipeline
from tfhub_transfer.data import preprocessing
from tfhub_transfer.data import threads
from tfhub_transfer.data import transforms

_dataset = fakes.encoded_dataset


def _identity(images):
  return images


def _batches(ds, **kwargs):
  kwargs = {"preprocess_fn": _identity, "training": False, **kwargs}
  return [(x.numpy(), y.numpy()) for x, y in pipeline.make_pipeline(ds, **kwargs)]


def _pil_eval_reference(rgb, image_size, crop_fraction=0.875, resample=Image.BILINEAR):
  """Resize the shorter side to round(S / fraction) with PIL, then crop the centre S x S."""
  height, width = rgb.shape[:2]
  shorter = round(image_size / crop_fraction)
  scale = shorter / min(height, width)
  new_height, new_width = round(height * scale), round(width * scale)
  resized = np.asarray(Image.fromarray(rgb).resize((new_width, new_height), resample),
                       np.float32)
  top, left = (new_height - image_size) // 2, (new_width - image_size) // 2
  return resized[top:top + image_size, left:left + image_size]


class ColourModeTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("rgb_jpeg", "RGB", "JPEG"), ("gray_jpeg", "L", "JPEG"), ("cmyk_jpeg", "CMYK", "JPEG"),
      ("rgb_png", "RGB", "PNG"), ("gray_png", "L", "PNG"), ("rgba_png", "RGBA", "PNG"),
      ("palette_png", "P", "PNG"), ("gray_alpha_png", "LA", "PNG"),
      ("gray16_png", "I;16", "PNG"), ("bmp", "RGB", "BMP"), ("gif", "RGB", "GIF"),
      ("webp", "RGB", "WEBP"))
  def test_every_mode_comes_out_rgb_at_size_and_in_range(self, mode, image_format):
    image = dummy.gradient_image(21, 34)
    encoded = dummy.encode(image, image_format, mode)
    [(x, _)] = _batches(_dataset([encoded]), image_size=16, batch_size=4)
    self.assertEqual(x.shape, (1, 16, 16, 3))
    self.assertEqual(x.dtype, np.float32)
    self.assertBetween(x.min(), 0.0, 255.0)
    self.assertBetween(x.max(), 0.0, 255.0)
    # Independent reference: PIL's own RGB conversion (16-bit gray: scaled to 8 bits by hand,
    # since PIL clips it), then PIL resize + central crop.
    if mode == "I;16":
      rgb = np.repeat(image[..., :1], 3, axis=-1)  # 16-bit v * 257 -> 8-bit v.
    else:
      rgb = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    reference = _pil_eval_reference(rgb, 16)
    self.assertLess(np.abs(x[0] - reference).max(), 1.5)  # Rounding of PIL's uint8 output.
    if mode in ("L", "LA", "I;16"):
      np.testing.assert_array_equal(x[0, ..., 0], x[0, ..., 1])


class EvalTransformTest(parameterized.TestCase):

  @parameterized.parameters(
      (40, 60, 16),  # Landscape, downscale.
      (61, 23, 16),  # Portrait.
      (10, 14, 32),  # Upscale.
      (64, 64, 56),  # Square, 64 -> round(56 / 0.875) = 64: a pure central crop.
  )
  def test_matches_pil_resize_and_central_crop(self, height, width, image_size):
    image = dummy.gradient_image(height, width, seed=height)
    [(x, _)] = _batches(_dataset([dummy.encode(image, "PNG")]), image_size=image_size,
                        batch_size=1)
    reference = _pil_eval_reference(image, image_size)
    self.assertLess(np.abs(x[0] - reference).max(), 1.5)
    self.assertLess(np.abs(x[0] - reference).mean(), 0.6)

  @parameterized.parameters(((375, 500, 224),), ((53, 37, 24),), ((10, 14, 32),))
  def test_window_resampling_equals_resize_then_crop(self, shape):
    # The transform resamples only the central window; the reference resizes the whole
    # image with tf.image.resize, then slices the centre.
    height, width, image_size = shape
    image = dummy.gradient_image(height, width, seed=width)
    shorter = round(image_size / 0.875)
    size = [round(height * shorter / min(height, width)),
            round(width * shorter / min(height, width))]
    top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
    reference = tf.image.resize(image, size, antialias=True).numpy()[
        top:top + image_size, left:left + image_size]
    x = transforms.resize_central_crop(tf.constant(image), image_size).numpy()
    np.testing.assert_allclose(x, reference, atol=0.01)

  @parameterized.parameters(((40, 60, 16),), ((61, 23, 16),), ((10, 14, 32),))
  def test_simclr_matches_pil_bicubic_resize_and_central_crop(self, shape):
    # SimCLR B.8: the shorter side to S (bicubic), then the central S x S. PIL's BICUBIC is
    # Keys' cubic (a = -0.5), antialiased when reducing, like TensorFlow's keyscubic.
    height, width, image_size = shape
    image = dummy.gradient_image(height, width, seed=height)
    [(x, _)] = _batches(_dataset([dummy.encode(image, "PNG")]), image_size=image_size,
                        batch_size=1, eval_preprocessing="simclr")
    reference = np.clip(_pil_eval_reference(image, image_size, crop_fraction=1.0,
                                            resample=Image.BICUBIC), 0, 255)
    self.assertLess(np.abs(x[0] - reference).max(), 2.5)
    self.assertLess(np.abs(x[0] - reference).mean(), 0.6)

  def test_unknown_eval_preprocessing_names_the_choices(self):
    with self.assertRaisesRegex(ValueError, "'inception'.*slim, simclr"):
      _batches(_dataset([dummy.encode(dummy.gradient_image(8, 8), "PNG")]), image_size=8,
               batch_size=1, eval_preprocessing="inception")

  def test_square_exact_size_crop_is_the_centre(self):
    image = dummy.gradient_image(64, 64)
    x = transforms.resize_central_crop(tf.constant(image), 56).numpy()
    np.testing.assert_allclose(x, image[4:60, 4:60].astype(np.float32), atol=1e-3)

  def test_backbone_preprocessing_is_applied_last(self):
    encoded = [dummy.encode(dummy.gradient_image(30, 30, seed=s), "PNG") for s in range(3)]
    [(raw, _)] = _batches(_dataset(encoded), image_size=16, batch_size=3)
    [(caffe, _)] = _batches(_dataset(encoded), image_size=16, batch_size=3,
                            preprocess_fn=preprocessing.get_preprocess_fn("caffe"))
    expected = raw[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(caffe, expected, atol=1e-4)


def _coordinate_image(height, width):
  """Red = row, green = column (scaled to 0..255), so a crop reveals where it came from."""
  rows = np.linspace(0, 255, height)[:, None].repeat(width, 1)
  cols = np.linspace(0, 255, width)[None, :].repeat(height, 0)
  return np.stack([rows, cols, np.zeros_like(rows)], -1).round().astype(np.uint8)


class TrainTransformTest(tf.test.TestCase):

  def _train_batches(self, ds, **kwargs):
    kwargs = {"image_size": 16, "batch_size": 4, "training": True, "seed": 0, **kwargs}
    return _batches(ds, **kwargs)

  def test_crops_cover_8_to_100_percent_with_bounded_aspect_and_flip_half(self):
    height, width = 120, 120
    encoded = [dummy.encode(_coordinate_image(height, width), "PNG")] * 48
    [(x, _)] = self._train_batches(_dataset(encoded), batch_size=48, shuffle_buffer=1)
    areas, flipped = [], 0
    for image in x:
      rows = image[..., 0] * (height - 1) / 255  # Source row of each output pixel.
      cols = image[..., 1] * (width - 1) / 255
      # The centres of 16 output pixels span 15/16 of the crop.
      crop_height = (rows[:, 8].max() - rows[:, 8].min()) * 16 / 15
      crop_width = abs(cols[8, -1] - cols[8, 0]) * 16 / 15
      areas.append(crop_height * crop_width / (height * width))
      self.assertBetween(crop_width / crop_height, 0.75 * 0.9, 4 / 3 / 0.9)
      flipped += cols[8, -1] < cols[8, 0]
    self.assertBetween(min(areas), 0.08 * 0.9, 0.5)  # Some crops are small...
    self.assertBetween(max(areas), 0.5, 1.02)  # ...and none exceeds the image.
    self.assertBetween(flipped, 10, 38)

  def test_same_seed_same_batches_other_seed_other_batches(self):
    encoded = [dummy.encode(dummy.gradient_image(30, 40, seed=s)) for s in range(8)]
    first = self._train_batches(_dataset(encoded), seed=5)
    again = self._train_batches(_dataset(encoded), seed=5)
    other = self._train_batches(_dataset(encoded), seed=6)
    for (x1, y1), (x2, y2) in zip(first, again):
      np.testing.assert_array_equal(x1, x2)
      np.testing.assert_array_equal(y1, y2)
    self.assertFalse(all(np.array_equal(x1, x3) for (x1, _), (x3, _) in zip(first, other)))
    self.assertCountEqual(np.concatenate([y for _, y in first]), range(8))  # Shuffled, whole.

  def test_epochs_of_a_repeated_stream_differ(self):
    encoded = [dummy.encode(dummy.gradient_image(30, 40))]
    ds = pipeline.make_pipeline(_dataset(encoded), image_size=16, preprocess_fn=_identity,
                                batch_size=1, training=True, seed=0, repeat=True)
    first, second = [x.numpy() for x, _ in ds.take(2)]
    self.assertFalse(np.array_equal(first, second))

  def test_a_repeated_stream_resumes_at_any_batch(self):
    # 5 images in batches of 2: data epochs straddle batches. The stream made to start at
    # batch 4 yields what the whole stream yields from its batch 4 on: the same images, in
    # the same order, with the same augmentation; and a stream is the same however many
    # streams were made and read before it (as a resumed trial needs).
    encoded = [dummy.encode(dummy.gradient_image(20, 24, seed=s)) for s in range(5)]

    def stream(start_batch=0, seed=3):
      return [(x.numpy(), y.numpy()) for x, y in pipeline.make_pipeline(
          _dataset(encoded), image_size=8, preprocess_fn=_identity, batch_size=2,
          training=True, seed=seed, repeat=True, drop_remainder=True,
          start_batch=start_batch).take(12 - start_batch)]

    whole = stream()
    for start in (1, 4, 7):
      for (x1, y1), (x2, y2) in zip(whole[start:], stream(start)):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)
    labels = np.concatenate([y for _, y in whole])
    epochs = [tuple(labels[i:i + 5]) for i in range(0, 20, 5)]
    self.assertTrue(all(sorted(e) == list(range(5)) for e in epochs))  # Whole epochs,
    self.assertGreater(len(set(epochs)), 1)  # each shuffled on its own.
    self.assertNotEqual([tuple(y) for _, y in stream(seed=4)], [tuple(y) for _, y in whole])
    with self.assertRaisesRegex(ValueError, "start_batch=2 resumes a repeated training"):
      pipeline.make_pipeline(_dataset(encoded), image_size=8, preprocess_fn=_identity,
                             batch_size=2, training=True, start_batch=2)

  def test_repeat_cache_drop_remainder_give_static_shapes(self):
    encoded = [dummy.encode(dummy.gradient_image(20, 20, seed=s)) for s in range(5)]
    ds = pipeline.make_pipeline(_dataset(encoded), image_size=8, preprocess_fn=_identity,
                                batch_size=4, training=True, cache="encoded", repeat=True,
                                drop_remainder=True)
    self.assertEqual(ds.element_spec[0].shape, (4, 8, 8, 3))
    self.assertEqual(ds.element_spec[1].shape, (4,))
    self.assertLen(list(ds.take(3)), 3)


class InMemoryCacheTest(tf.test.TestCase):
  """A small training split cached in memory: the same batches, each image read (and, cached
  decoded, decoded) once, the crop and flip still drawn per step."""

  def _encoded(self):
    encoded = [dummy.encode(dummy.gradient_image(18 + s, 24 - s, seed=s)) for s in range(5)]
    return encoded + [dummy.encode(dummy.gradient_image(15, 20, seed=9), "PNG")]

  def _counting_dataset(self, encoded, reads):
    def generate():
      reads.append(1)  # Once per pass over the source.
      for label, image in enumerate(encoded):
        yield {"image": image, "label": label}

    return tf.data.Dataset.from_generator(generate, output_signature={
        "image": tf.TensorSpec([], tf.string), "label": tf.TensorSpec([], tf.int64)})

  def test_cached_batches_are_the_uncached_ones_and_the_source_is_read_once(self):
    encoded = self._encoded()
    outputs = {}
    for cache in (None, pipeline.CACHE_ENCODED, pipeline.CACHE_DECODED):
      reads = []
      ds = pipeline.make_pipeline(self._counting_dataset(encoded, reads), image_size=8,
                                  preprocess_fn=_identity, batch_size=4, training=True,
                                  seed=3, cache=cache, repeat=True, drop_remainder=True)
      outputs[cache] = [(x.numpy(), y.numpy()) for x, y in ds.take(6)]  # 4 epochs of 6.
      if cache is None:  # At least once per epoch (more: the pipeline reads ahead).
        self.assertGreaterEqual(len(reads), 4)
      else:
        self.assertLen(reads, 1, cache)
    for cache in (pipeline.CACHE_ENCODED, pipeline.CACHE_DECODED):
      for (x, y), (x0, y0) in zip(outputs[cache], outputs[None]):
        np.testing.assert_array_equal(x, x0, err_msg=cache)
        np.testing.assert_array_equal(y, y0, err_msg=cache)
    # Augmentation is still drawn per step: an image's crops differ between epochs.
    images = np.concatenate([x for x, _ in outputs[pipeline.CACHE_DECODED]])
    labels = np.concatenate([y for _, y in outputs[pipeline.CACHE_DECODED]])
    first, second = images[labels == 0][:2]
    self.assertFalse(np.array_equal(first, second))

  def test_unknown_cache_mode_names_the_choices(self):
    with self.assertRaisesRegex(ValueError, "cache='disk'.*'encoded', 'decoded'"):
      pipeline.make_pipeline(_dataset(self._encoded()), image_size=8, preprocess_fn=_identity,
                             batch_size=2, training=True, cache="disk")

  def test_measure_bytes_against_pil_and_file_sizes(self):
    encoded = self._encoded()
    sizes = [Image.open(io.BytesIO(e)).size for e in encoded]
    encoded_bytes, decoded_bytes = pipeline.measure_bytes(_dataset(encoded))
    self.assertEqual(encoded_bytes, sum(len(e) for e in encoded))
    self.assertEqual(decoded_bytes, sum(3 * width * height for width, height in sizes))

  def test_choose_cache_thresholds(self):
    gib = 1 << 30
    self.assertEqual(pipeline.choose_cache(encoded_bytes=gib // 10, decoded_bytes=gib),
                     pipeline.CACHE_DECODED)
    self.assertEqual(pipeline.choose_cache(encoded_bytes=gib // 10, decoded_bytes=gib + 1),
                     pipeline.CACHE_ENCODED)
    self.assertEqual(pipeline.choose_cache(encoded_bytes=2 * gib, decoded_bytes=20 * gib),
                     pipeline.CACHE_ENCODED)
    self.assertIsNone(pipeline.choose_cache(encoded_bytes=2 * gib + 1, decoded_bytes=20 * gib))


class LabelsAndDistributionTest(tf.test.TestCase):

  def test_multi_hot_labels_batch(self):
    encoded = [dummy.encode(dummy.gradient_image(20, 20, seed=s)) for s in range(3)]
    multi_hot = np.eye(20, dtype=np.float32)[[0, 5, 19]]
    multi_hot[1, 7] = 1.0
    ds = tf.data.Dataset.from_tensor_slices({"image": encoded, "label": multi_hot})
    [(x, y)] = _batches(ds, image_size=8, batch_size=3)
    self.assertEqual(x.shape, (3, 8, 8, 3))
    self.assertEqual(y.dtype, np.float32)
    np.testing.assert_array_equal(y, multi_hot)

  def test_input_context_shards_and_batches_per_replica(self):
    encoded = [dummy.encode(dummy.gradient_image(12, 12, seed=s), "PNG") for s in range(8)]
    seen = []
    for pipeline_id in range(2):
      context = tf.distribute.InputContext(num_input_pipelines=2,
                                           input_pipeline_id=pipeline_id,
                                           num_replicas_in_sync=2)
      batches = _batches(_dataset(encoded), image_size=8, batch_size=4,
                         input_context=context)
      self.assertEqual([len(y) for _, y in batches], [2, 2])  # Global 4 -> 2 per replica.
      seen.append(set(np.concatenate([y for _, y in batches])))
    self.assertEmpty(seen[0] & seen[1])
    self.assertEqual(seen[0] | seen[1], set(range(8)))

  def test_works_under_distribute_datasets_from_function(self):
    encoded = [dummy.encode(dummy.gradient_image(12, 12, seed=s), "PNG") for s in range(6)]
    strategy = tf.distribute.get_strategy()

    def dataset_fn(input_context):
      return pipeline.make_pipeline(_dataset(encoded), image_size=8, preprocess_fn=_identity,
                                    batch_size=3, training=True, seed=1,
                                    input_context=input_context)

    batches = list(strategy.distribute_datasets_from_function(dataset_fn))
    self.assertEqual([tuple(x.shape) for x, _ in batches], [(3, 8, 8, 3)] * 2)


def _resampling_matrix(source, target, *, box):
  """[target, source] weights at half-pixel centres: the box filter (each output the mean
  of the source interval it covers), or bilinear interpolation with edges clamped."""
  scale = source / target
  pixels = np.arange(source)[None]
  if box:
    starts = np.arange(target)[:, None] * scale
    overlap = np.minimum(starts + scale, pixels + 1) - np.maximum(starts, pixels)
    return np.clip(overlap, 0, None) / scale
  centres = np.clip((np.arange(target)[:, None] + 0.5) * scale - 0.5, 0, source - 1)
  return np.clip(1 - np.abs(centres - pixels), 0, None)


def _fast_eval_reference(encoded, image_size, ratio, crop_fraction=0.875):
  """The fast path's evaluation pixels computed apart from it: PIL decodes the JPEG (at DCT
  scale 1 / ratio through `draft`), the slim central window is rounded to whole decoded
  pixels and resampled in numpy, with the box filter where both sides shrink, else
  bilinearly."""
  image = Image.open(io.BytesIO(encoded))
  width, height = image.size
  if ratio > 1:
    image.draft("RGB", (width // ratio, height // ratio))
  decoded = np.asarray(image.convert("RGB"), np.float64)
  assert decoded.shape[:2] == (-(-height // ratio), -(-width // ratio)), decoded.shape
  shape = np.array([height, width], np.float64)
  scaled = np.round(shape * round(image_size / crop_fraction) / shape.min())
  top_left = np.floor((scaled - image_size) / 2) * shape / scaled / ratio
  size = image_size * shape / scaled / ratio
  low = np.clip(np.round(top_left), 0, np.array(decoded.shape[:2]) - 1).astype(int)
  high = np.clip(np.round(top_left + size), low + 1, decoded.shape[:2]).astype(int)
  box = min(size) > image_size
  rows, cols = (_resampling_matrix(n, image_size, box=box) for n in high - low)
  window = decoded[low[0]:high[0], low[1]:high[1]]
  return np.einsum("ys,stc,xt->yxc", rows, window, cols)


class FastDecodeTest(parameterized.TestCase):
  """The fast JPEG path (`fast_decode`) against the reference path, where they should agree:
  on linear ramps, which bilinear sampling, box and triangle filters and DCT-scaled decoding
  (a box average) all leave linear, so only the fast path's rounding of its window to whole decoded
  pixels (a shift of at most half a decoded pixel, r / 2 source pixels at DCT scale 1 / r)
  and JPEG's rounding tell them apart."""

  @parameterized.named_parameters(
      ("upscale", 50, 70, 48, 0),  # 50 -> 55: full decode, no antialiasing either way.
      ("below_2x", 90, 120, 48, 0),  # 90 -> 55: 1.6x, box filter.
      ("dct_half", 150, 200, 48, 1),  # Window 131 px >= 2 x 48: decoded at 1/2.
      ("dct_quarter", 200, 260, 32, 2),  # Window 173 px >= 4 x 32: decoded at 1/4.
      ("dct_eighth", 400, 300, 32, 3))  # Window 259 px >= 8 x 32: decoded at 1/8.
  def test_eval_agrees_with_the_reference_path(self, height, width, image_size, scale_index):
    encoded = tf.constant(dummy.encode(_coordinate_image(height, width), "JPEG"))
    reference = transforms.eval_image(encoded, image_size).numpy()[..., :2]
    fast = transforms.eval_image(encoded, image_size, fast_decode=True).numpy()[..., :2]
    window_side = image_size * min(height, width) / round(image_size / 0.875)
    self.assertEqual(int(transforms.dct_scale_index(window_side, image_size)), scale_index)
    # Half a decoded pixel of the steeper ramp, plus 2.5 levels of JPEG rounding (quality
    # 95; the two sides decode at different DCT scales).
    slope = 255 / (min(height, width) - 1)
    self.assertLess(np.abs(fast - reference).max(), 0.5 * 2**scale_index * slope + 2.5)
    self.assertLess(np.abs(fast - reference).mean(), 1.2)

  @parameterized.named_parameters(
      ("box", 90, 120, 48, 0, 0),  # Window 77 px -> 48: box filter.
      ("box_portrait", 131, 97, 48, 0, 0),
      ("dct_half_box", 150, 200, 48, 1, 0),  # Window 131 px: decoded at 1/2, 66 -> 48.
      ("dct_quarter_box", 260, 200, 32, 2, 0),
      ("upscale_bilinear", 50, 70, 48, 0, 0),  # Window 44 px -> 48.
      ("box_420", 90, 120, 48, 0, 2),
      ("dct_half_box_420", 150, 200, 48, 1, 2))
  def test_eval_pixels_match_pil_decoded_window_resampled_in_numpy(
      self, height, width, image_size, ratio_index, subsampling):
    encoded = dummy.photo_jpeg(height, width, subsampling)
    fast = transforms.eval_image(tf.constant(encoded), image_size, fast_decode=True).numpy()
    expected = _fast_eval_reference(encoded, image_size, 2**ratio_index)
    difference = np.abs(fast - expected)
    if subsampling == 0:
      # 4:4:4: libjpeg decodes a window to the full decode's pixels: float32 rounding only.
      self.assertLess(difference.max(), 0.01)
    else:
      # 4:2:0: chroma upsampling may see fewer neighbours at the decoded window's edges (a
      # few levels there; the reference path is 3-4 levels off on average).
      self.assertLess(difference.mean(), 0.1)
      self.assertLess(difference.max(), 12.0)

  def test_dct_scale_index_is_the_largest_that_keeps_the_target(self):
    for source, target, expected in ((447, 224, 0), (448, 224, 1), (895, 224, 1),
                                     (896, 224, 2), (1792, 224, 3), (10_000, 224, 3),
                                     (100, 224, 0)):
      self.assertEqual(int(transforms.dct_scale_index(source, target)), expected,
                       (source, target))

  def test_training_crops_the_same_box_as_the_reference(self):
    # Red = row, green = column: the mean colour of a crop says where it came from.
    encoded = tf.constant(dummy.encode(_coordinate_image(240, 320), "JPEG"))
    for seed in range(6):
      seed = tf.constant([seed, 1], tf.int64)
      reference = transforms.train_image(encoded, 24, seed).numpy()
      fast = transforms.train_image(encoded, 24, seed, fast_decode=True).numpy()
      np.testing.assert_allclose(fast[..., :2].mean((0, 1)), reference[..., :2].mean((0, 1)),
                                 atol=2.0)

  def test_other_formats_take_the_reference_path(self):
    encoded = dummy.encode(dummy.gradient_image(40, 60), "PNG")
    for training in (False, True):
      [(fast, _)] = _batches(_dataset([encoded]), image_size=16, batch_size=1,
                             training=training, fast_decode=True)
      [(reference, _)] = _batches(_dataset([encoded]), image_size=16, batch_size=1,
                                  training=training)
      np.testing.assert_array_equal(fast, reference)

  def test_a_decoded_cache_request_keeps_the_fast_path(self):
    encoded = [dummy.encode(dummy.gradient_image(60, 80, seed=s), "JPEG") for s in range(3)]
    kwargs = dict(image_size=16, batch_size=3, training=True, seed=1, fast_decode=True)
    cached = _batches(_dataset(encoded), cache=pipeline.CACHE_DECODED, **kwargs)
    np.testing.assert_array_equal(cached[0][0], _batches(_dataset(encoded), **kwargs)[0][0])


class CpuShareTest(tf.test.TestCase):

  def test_shares_are_disjoint_slices_covering_the_cpus(self):
    cpus = [0, 1, 2, 3, 4, 5, 8]
    shares = [threads.cpu_share(w, 3, cpus) for w in range(3)]
    self.assertEqual(shares, [(0, 1), (2, 3), (4, 5, 8)])
    self.assertEqual([threads.cpu_share(w, 3, [6, 7]) for w in range(3)], [(6,), (7,), (6,)])
    with self.assertRaisesRegex(ValueError, "worker=3 must be in \\[0, 3\\)"):
      threads.cpu_share(3, 3, cpus)

  def test_pipelines_get_a_private_pool_of_the_process_cpus(self):
    encoded = [dummy.encode(dummy.gradient_image(8, 8), "PNG")]
    with mock.patch.object(threads.os, "sched_getaffinity", return_value={2, 5, 7}):
      ds = pipeline.make_pipeline(_dataset(encoded), image_size=8, preprocess_fn=_identity,
                                  batch_size=1, training=False)
    self.assertEqual(ds.options().threading.private_threadpool_size, 3)


if __name__ == "__main__":
  tf.test.main()
