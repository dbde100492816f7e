"""`resize_on_device`: the host decodes windows, the compiled forward function resamples them;
the pixels are the fast path's (`fast_decode`) up to float rounding, for every case of it."""


from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import dummy_data_images as dummy
from tests import fakes
from tests import gpu_paths_check
from tfhub_transfer import features
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import device_resample
from tfhub_transfer.data import pipeline
from tfhub_transfer.data import transforms

_dataset = fakes.encoded_dataset


def _on_device(encoded, image_size, preprocess_fn=lambda images: images, batch_size=4):
  """make_pipeline(resize_on_device=True), resampled by `device_resample.inputs_fn` (eagerly,
  as the forward function would): float32 [N, S, S, 3]."""
  ds = pipeline.make_pipeline(_dataset(encoded), image_size=image_size,
                              preprocess_fn=preprocess_fn, batch_size=batch_size,
                              training=False, resize_on_device=True)
  fn = device_resample.inputs_fn(image_size, preprocess_fn)
  return np.concatenate([fn(windows).numpy() for windows, _ in ds])


def _fast(encoded, image_size):
  return np.stack([transforms.eval_image(tf.constant(e), image_size, fast_decode=True).numpy()
                   for e in encoded])


def _slim_window(height, width, image_size):
  """The slim evaluation window of a height x width image, rounded to whole pixels as the
  fast path rounds it (half to even, as numpy and TensorFlow do): (low, high), int [2]."""
  shape = np.array([height, width], np.float64)
  scaled = np.round(shape * round(image_size / 0.875) / shape.min())
  top_left = np.floor((scaled - image_size) / 2) * shape / scaled
  size = image_size * shape / scaled
  return np.round(top_left).astype(int), np.round(top_left + size).astype(int)


def _png(height, width, seed=0):
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
  return dummy.encode(pixels, "PNG"), pixels


class DeviceResampleTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # (height, width, image size, chroma subsampling): every filter and DCT scale of the
      # fast path, the sizes mixed within batches so that windows pad to the canvas.
      ("upscale_bilinear", ((50, 70), (60, 44)), 48, 0),
      ("box", ((90, 120), (131, 97), (100, 100)), 48, 0),
      ("dct_half_and_quarter", ((150, 200), (260, 200)), 32, 0),
      ("dct_eighth", ((400, 300),), 32, 0),
      ("subsampled_420", ((90, 120), (150, 200), (50, 70)), 48, 2))
  def test_the_fast_paths_pixels_up_to_float_rounding(self, shapes, image_size, subsampling):
    encoded = [dummy.photo_jpeg(h, w, subsampling, seed=i) for i, (h, w) in enumerate(shapes)]
    device = _on_device(encoded, image_size, batch_size=2)
    self.assertEqual(device.shape, (len(encoded), image_size, image_size, 3))
    np.testing.assert_allclose(device, _fast(encoded, image_size), atol=0.02)

  def test_host_batches_are_uint8_windows_in_canvases_with_their_sizes(self):
    encoded = [dummy.photo_jpeg(90, 120, 0), dummy.photo_jpeg(50, 70, 0)]
    [((canvases, meta), labels)] = list(pipeline.make_pipeline(
        _dataset(encoded), image_size=48, preprocess_fn=None, batch_size=2, training=False,
        resize_on_device=True))
    self.assertEqual(canvases.dtype, tf.uint8)
    self.assertEqual(canvases.shape, (2, transforms.canvas_size(48), 96, 3))
    # 90 x 120: the window (78 x 79 rounded) is downscaled to 48: box filter; 50 x 70:
    # 43 x 43, upscaled: bilinear. Outside each window, the canvas is zero.
    sides = [(high - low).tolist() for low, high in (_slim_window(90, 120, 48),
                                                     _slim_window(50, 70, 48))]
    self.assertEqual(sides, [[78, 79], [43, 43]])
    self.assertEqual(meta.numpy().tolist(), [[78, 79, 1], [43, 43, 0]])
    self.assertGreater(int(tf.reduce_max(canvases[1, :43, :43])), 0)
    self.assertEqual(int(tf.reduce_max(canvases[1, 43:])), 0)
    self.assertEqual(int(tf.reduce_max(canvases[1, :, 43:])), 0)
    self.assertEqual(labels.numpy().tolist(), [0, 1])

  def test_other_formats_take_the_fast_paths_box_filter_over_their_rounded_window(self):
    encoded, pixels = _png(90, 120)
    device = _on_device([encoded], 48)[0]
    # The slim window of 90 x 120 at 48 px: shorter side to 55 (55 x 73), the central
    # 48 x 48 of it, i.e. a 78 x 79 window of the source: downscaled, box filter.
    low, high = _slim_window(90, 120, 48)
    self.assertEqual((high - low).tolist(), [78, 79])
    window = pixels[low[0]:high[0], low[1]:high[1]].astype(np.float32)
    np.testing.assert_allclose(device, tf.image.resize(window, [48, 48], method="area"),
                               atol=0.01)

  def test_a_window_over_the_canvas_is_resampled_on_the_host(self):
    # A PNG has no DCT scaling: its 178 px window at 16 px exceeds the 32 px canvas, so the
    # host box-filters it (as the fast path would) and rounds it to uint8.
    encoded, pixels = _png(200, 200)
    window, meta = transforms.eval_window(tf.constant(encoded), 16)
    self.assertEqual(meta.numpy().tolist(), [16, 16, 1])
    device = _on_device([encoded], 16)[0]
    low, high = _slim_window(200, 200, 16)
    self.assertGreater(min(high - low), transforms.canvas_size(16))
    area = tf.image.resize(pixels[low[0]:high[0], low[1]:high[1]].astype(np.float32),
                           [16, 16], method="area").numpy()
    self.assertLessEqual(np.abs(device - area).max(), 0.5 + 1e-3)
    np.testing.assert_array_equal(device, window.numpy().astype(np.float32))

  def test_preprocess_fn_runs_after_the_resample(self):
    encoded = [dummy.photo_jpeg(90, 120, 0)]
    scaled = _on_device(encoded, 48, preprocess_fn=lambda images: images / 127.5 - 1.0)
    np.testing.assert_allclose(scaled, _fast(encoded, 48) / 127.5 - 1.0, atol=1e-3)

  def test_evaluation_only(self):
    with self.assertRaisesRegex(ValueError, "evaluation batches"):
      pipeline.make_pipeline(_dataset([dummy.photo_jpeg(50, 70, 0)]), image_size=16,
                             preprocess_fn=None, batch_size=1, training=True,
                             resize_on_device=True)

  def test_a_bicubic_eval_preprocessing_is_refused(self):
    with self.assertRaisesRegex(ValueError, "simclr resamples bicubic"):
      transforms.eval_window(tf.constant(dummy.photo_jpeg(50, 70, 0)), 16,
                             eval_preprocessing="simclr")


class DeviceFeatureFnTest(tf.test.TestCase):

  def test_one_xla_compilation_and_the_host_paths_features(self):
    """Windows of mixed sizes in a split of 5 (batches of 2): the compiled function traces
    one shape, and its features are those of the host-resampled fast path."""
    # At 8 px every window is decoded at 1/4 or 1/8, to 9-14 px: within the 16 px canvas.
    shapes = [(90, 120), (50, 70), (120, 160), (131, 97), (60, 44)]
    encoded = [dummy.photo_jpeg(h, w, 0, seed=i) for i, (h, w) in enumerate(shapes)]
    model = gpu_paths_check.counting_head()  # 8 x 8 inputs.
    feature_fn = features.make_feature_fn(
        model, tf.distribute.get_strategy(), jit_compile=True, batch_size=2,
        inputs_fn=device_resample.inputs_fn(8, lambda images: images / 127.5 - 1.0))
    windows = pipeline.make_pipeline(_dataset(encoded), image_size=8, preprocess_fn=None,
                                     batch_size=2, training=False, resize_on_device=True)
    cached = features.extract_features(feature_fn, windows, cache_dir=self.get_temp_dir(),
                                       key="k")
    self.assertEqual(model.traced_shapes, [[2, 8, 8, 3]])
    host = _fast(encoded, 8) / 127.5 - 1.0
    self.assertAllClose(np.asarray(cached.features),
                        model.backbone(host, training=False).numpy(), atol=1e-4)


class ConfigTest(parameterized.TestCase):

  def _config(self, **kwargs):
    return ExperimentConfig(model="mobilenet_v2", dataset="digits", **kwargs)

  def test_needs_fast_decode(self):
    with self.assertRaisesRegex(ValueError, "add --fast_decode"):
      self._config(regime="logreg", resize_on_device=True)

  def test_needs_a_bilinear_eval_preprocessing(self):
    with self.assertRaisesRegex(ValueError, "--eval_preprocessing=simclr is bicubic"):
      self._config(regime="logreg", fast_decode=True, resize_on_device=True,
                   eval_preprocessing="simclr")

  def test_keys_logreg_and_leaves_the_trained_regimes_keys_alone(self):
    fast = dict(fast_decode=True)
    for regime in ("logreg", "finetune", "scratch"):
      on = self._config(regime=regime, resize_on_device=True, **fast)
      off = self._config(regime=regime, **fast)
      self.assertEqual(on.protocol != off.protocol, regime == "logreg", regime)
      self.assertEqual("resize_on_device" in on.protocol_settings(), regime == "logreg")
    # Unset, it is not keyed: results stored before the option keep their protocol id.
    self.assertNotIn("resize_on_device", self._config(regime="logreg").protocol_settings())


if __name__ == "__main__":
  tf.test.main()
