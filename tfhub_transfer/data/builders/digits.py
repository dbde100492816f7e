"""`digits`: scikit-learn's bundled 8x8 handwritten digits as a TFDS builder (SMOKE dataset).

Not a paper dataset: it exists so that every code path runs offline in seconds. The 1,797
images (pixel values 0..16) are scaled to uint8 0..255, upscaled 4x (nearest) to 32x32 and
stored as 1-channel PNG; the input pipeline converts them to RGB. The test split is a
class-stratified 20% drawn with the fixed seed `SPLIT_SEED`, so it is the same for every
experiment seed: train 1,438, test 359.
"""

import numpy as np
import tensorflow_datasets as tfds

from tfhub_transfer.data import splits

IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
  """All digits as (uint8 images [N, 32, 32, 1], int64 labels [N])."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  scale = IMAGE_SIZE // images.shape[1]
  images = images.repeat(scale, axis=1).repeat(scale, axis=2)[..., None]
  return images, digits.target.astype(np.int64)


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn digits, 10 classes, 32x32 grayscale: a smoke-test dataset."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "sklearn load_digits, 4x upscaled, stratified 20% test (seed 0)."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("SMOKE dataset, not from the paper: scikit-learn's 8x8 digits upscaled "
                     "to 32x32 grayscale, stratified 80/20 train/test split (seed 0)."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
                                         encoding_format="png"),
            "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Bundled with scikit-learn: nothing to download.
    images, labels = load_digit_images()
    test = splits.stratified_split(labels, fraction=TEST_FRACTION, seed=SPLIT_SEED)
    return {"train": self._generate_examples(images, labels, np.flatnonzero(~test)),
            "test": self._generate_examples(images, labels, np.flatnonzero(test))}

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}
