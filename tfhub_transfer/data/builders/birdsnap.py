"""Birdsnap v1.1 (Berg et al., 2014) as a TFDS builder, from a hand-made manual dir.

Birdsnap ships as lists of Flickr URLs, many of them dead, so nobody can rebuild all 49,829
images. The builder takes whatever a user fetched. The manual dir holds the official files:
  species.txt       tab-separated, header `id common scientific dir` (500 species);
  images.txt        tab-separated, header starting `url md5 path species_id ...`;
  test_images.txt   header `path`, then the 2,443 test paths;
  images/<path>     the fetched images (the layout the official get_birdsnap.py writes,
                    e.g. images/Blue_Jay/191761.jpg).
Splits: `test` = the listed test images, `train` = every other listed image (47,386 listed).
A listed image is used only when its file exists and its MD5 matches images.txt (Flickr
serves placeholder images for removed photos). The listed / found / MD5-mismatch counts of
each split go to the log and to the dataset's metadata (`builder.info.metadata`).
"""

import csv
import hashlib
import io

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from tfhub_transfer.data import manual_files

NUM_CLASSES = 500
LIST_FILES = manual_files.BIRDSNAP_LIST_FILES
IMAGES_DIR = manual_files.BIRDSNAP_IMAGES_DIR


def read_tsv(path) -> list[dict[str, str]]:
  """Rows of a tab-separated file with a header line."""
  return list(csv.DictReader(io.StringIO(epath.Path(path).read_text()), delimiter="\t"))


class Birdsnap(tfds.core.GeneratorBasedBuilder):
  """Birdsnap v1.1: 500 North American bird species, official test list."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "Birdsnap v1.1 lists; images that could be fetched."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download the Birdsnap v1.1 archive (birdsnap.tgz), run its get_birdsnap.py to fetch the
  images, then put in the manual dir: {', '.join(LIST_FILES)} and the folder {IMAGES_DIR}/
  with the fetched images at {IMAGES_DIR}/<path from images.txt>
  (e.g. {IMAGES_DIR}/Blue_Jay/191761.jpg). Missing images are skipped and counted.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Birdsnap v1.1: 500 bird species, official 2,443-image test list; only "
                     "the images the user could fetch (counts in metadata['image_counts'])."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="http://thomasberg.org/",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    manual_dir = dl_manager.manual_dir
    missing = [name for name in LIST_FILES if not (manual_dir / name).exists()]
    if not (manual_dir / IMAGES_DIR).is_dir():
      missing.append(IMAGES_DIR + "/")
    if missing:
      raise FileNotFoundError(f"Birdsnap manual dir {manual_dir} lacks {missing}. "
                              f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
    species = read_tsv(manual_dir / "species.txt")
    if len(species) != NUM_CLASSES:
      raise ValueError(f"{manual_dir / 'species.txt'} lists {len(species)} species; "
                       f"Birdsnap v1.1 has {NUM_CLASSES}.")
    species.sort(key=lambda row: int(row["id"]))
    self.info.features["label"].names = [row["common"] for row in species]
    test_paths = {row["path"] for row in read_tsv(manual_dir / "test_images.txt")}
    rows = read_tsv(manual_dir / "images.txt")
    by_split = {
        "train": [row for row in rows if row["path"] not in test_paths],
        "test": [row for row in rows if row["path"] in test_paths],
    }
    self.info.metadata["image_counts"] = {}
    return {split: self._generate_examples(manual_dir, split, split_rows)
            for split, split_rows in by_split.items()}

  def _generate_examples(self, manual_dir, split, rows):
    found = mismatched = 0
    for row in rows:
      path = manual_dir / IMAGES_DIR / row["path"]
      if not path.exists():
        continue
      image = path.read_bytes()
      if hashlib.md5(image).hexdigest() != row["md5"]:
        mismatched += 1
        continue
      found += 1
      yield row["path"], {"image": image, "label": int(row["species_id"]) - 1,
                          "file_name": row["path"]}
    # TFDS writes the metadata once every split is generated, so the counts get saved.
    self.info.metadata["image_counts"][split] = {
        "listed": len(rows), "found": found, "md5_mismatch": mismatched}
    logging.warning("Birdsnap %s: %d listed, %d used, %d skipped for a wrong MD5, %d missing.",
                    split, len(rows), found, mismatched, len(rows) - found - mismatched)
