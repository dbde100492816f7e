"""FGVC-Aircraft (Maji et al., 2013) as a TFDS builder: 100 variants, official splits.

Source: the official archive `fgvc-aircraft-2013b.tar.gz`, whose `fgvc-aircraft-2013b/data/`
holds `images/<id>.jpg`, `variants.txt` (the 100 variant names, one a line) and
`images_variant_{train,val,trainval,test}.txt` (`<id> <variant>` a line). The builder uses,
in this order: the extracted folder `fgvc-aircraft-2013b/` (or its `data/` directly) in the
TFDS manual dir, the archive in the manual dir, or a download from the VGG site.

Splits: `train` (3,334), `validation` (3,333, the official `val`) and `test` (3,333). The
official `trainval` list is exactly train + validation (checked when the file is present), so
it is read as the TFDS split `train+validation` rather than stored twice.

The bottom 20 pixels of every image are a copyright banner; as the dataset's README asks,
the builder crops them off and re-encodes the image as JPEG (quality 95).
"""

import io

from absl import logging
from etils import epath
from PIL import Image
import tensorflow_datasets as tfds

URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"
ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
FOLDER = "fgvc-aircraft-2013b"
NUM_CLASSES = 100
BANNER_HEIGHT = 20
JPEG_QUALITY = 95
# TFDS split name -> official list suffix.
_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def _read_lines(path):
  return [line.strip() for line in epath.Path(path).read_text().splitlines() if line.strip()]


def read_split_list(path) -> list[tuple[str, str]]:
  """(image id, variant) pairs of an `images_variant_*.txt` file (variants contain spaces)."""
  return [tuple(line.split(" ", 1)) for line in _read_lines(path)]


def crop_banner(image_bytes: bytes) -> bytes:
  """Crops the 20-px copyright banner off the bottom and re-encodes as JPEG."""
  with Image.open(io.BytesIO(image_bytes)) as image:
    width, height = image.size
    cropped = image.convert("RGB").crop((0, 0, width, height - BANNER_HEIGHT))
  buffer = io.BytesIO()
  cropped.save(buffer, format="JPEG", quality=JPEG_QUALITY)
  return buffer.getvalue()


def _manual_dir_or_none(dl_manager):
  try:
    return dl_manager.manual_dir
  except AssertionError:  # TFDS's way of saying the manual dir is missing or empty.
    return None


def _find_data_dir(dl_manager) -> epath.Path:
  """The `data/` folder of the dataset: from the manual dir, else downloaded."""
  manual_dir = _manual_dir_or_none(dl_manager)
  if manual_dir is not None:
    for candidate in (manual_dir / FOLDER / "data", manual_dir / "data"):
      if (candidate / "variants.txt").exists():
        return candidate
    if (manual_dir / ARCHIVE).exists():
      return epath.Path(dl_manager.extract(manual_dir / ARCHIVE)) / FOLDER / "data"
  try:
    return epath.Path(dl_manager.download_and_extract(URL)) / FOLDER / "data"
  except Exception as e:  # Download failures come as many types (HTTP, DNS, OS).
    raise FileNotFoundError(
        f"Could not download {URL} ({type(e).__name__}: {e}). Download {ARCHIVE} by hand "
        f"and put it (or its extracted folder {FOLDER}/) in the TFDS manual dir "
        f"(--manual_dir, default <data_dir>/downloads/manual/).") from e


class FgvcAircraft(tfds.core.GeneratorBasedBuilder):
  """FGVC-Aircraft 2013b, variant level (100 classes), copyright banner cropped."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "fgvc-aircraft-2013b, variants, bottom 20-px banner cropped."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Optional (the builder downloads {URL} when it can). Offline, put either
  {ARCHIVE} or its extracted folder {FOLDER}/ (with data/images/, data/variants.txt and
  data/images_variant_{{train,val,test}}.txt) in the manual dir.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("FGVC-Aircraft: 10,000 aircraft images, 100 variants; official "
                     "train/val/test. The bottom 20-px copyright banner is cropped off."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
    )

  def _split_generators(self, dl_manager):
    data_dir = _find_data_dir(dl_manager)
    names = _read_lines(data_dir / "variants.txt")
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
      raise ValueError(f"{data_dir / 'variants.txt'} lists {len(names)} variants "
                       f"({len(set(names))} distinct); the 2013b release has {NUM_CLASSES}.")
    self.info.features["label"].names = names
    self._check_trainval(data_dir)
    return {split: self._generate_examples(data_dir, official)
            for split, official in _SPLITS.items()}

  def _check_trainval(self, data_dir):
    trainval = data_dir / "images_variant_trainval.txt"
    if not trainval.exists():
      return
    union = set(read_split_list(data_dir / "images_variant_train.txt") +
                read_split_list(data_dir / "images_variant_val.txt"))
    if set(read_split_list(trainval)) != union:
      raise ValueError(f"{trainval} is not train + val; the archive is not the 2013b release.")
    logging.info("FGVC-Aircraft: official trainval == train + val (%d images).", len(union))

  def _generate_examples(self, data_dir, official_split):
    for image_id, variant in read_split_list(data_dir / f"images_variant_{official_split}.txt"):
      file_name = image_id + ".jpg"
      image = crop_banner((data_dir / "images" / file_name).read_bytes())
      yield image_id, {"image": image, "label": variant, "file_name": file_name}

