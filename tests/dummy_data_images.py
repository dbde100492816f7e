"""Tiny dummy images and source layouts the dataset tests build in temp dirs (no network)."""

import hashlib
import io
import os
import shutil
import tarfile

import numpy as np
from PIL import Image


def gradient_image(height, width, seed=0, noise=8.0):
  """uint8 [H, W, 3]: smooth ramps (so resize comparisons mean something) plus noise."""
  rng = np.random.default_rng(seed)
  rows = np.linspace(0, 255, height)[:, None]
  cols = np.linspace(0, 255, width)[None, :]
  image = np.stack([rows + 0 * cols, cols + 0 * rows, (rows + cols) / 2], axis=-1)
  return np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)


def encode(image, image_format="JPEG", mode="RGB"):
  """Encodes a uint8 RGB array with PIL, converted to `mode` first ('I;16': 16-bit gray)."""
  if mode == "I;16":
    pil = Image.fromarray(image[..., 0].astype(np.uint16) * 257)
  else:
    pil = Image.fromarray(image).convert(mode)
  buffer = io.BytesIO()
  pil.save(buffer, format=image_format, **({"quality": 95} if image_format == "JPEG" else {}))
  return buffer.getvalue()


def photo_jpeg(height, width, subsampling, seed=0):
  """A photo-like JPEG (smooth colour field plus texture; PIL, quality 90; subsampling 0:
  4:4:4, 2: 4:2:0)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), np.uint8)
  field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
  pixels = np.clip(field + rng.normal(0, 12, (height, width, 1)), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "JPEG", quality=90, subsampling=subsampling)
  return buffer.getvalue()


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


# FGVC-Aircraft: 100 variant names, some with spaces and a slash as in the real list.
AIRCRAFT_VARIANTS = ["707-320", "Cessna 172", "F/A-18"] + [f"Variant {i}" for i in range(97)]
AIRCRAFT_SPLITS = {
    "train": [("0000001", "707-320"), ("0000002", "Cessna 172"), ("0000003", "F/A-18")],
    "val": [("0000004", "707-320"), ("0000005", "Variant 7")],
    "test": [("0000006", "Cessna 172"), ("0000007", "F/A-18")],
}
AIRCRAFT_HEIGHT, AIRCRAFT_WIDTH = 60, 50


def write_fgvc_aircraft(manual_dir, *, archive=False):
  """Writes the fgvc-aircraft-2013b layout (or its .tar.gz) into `manual_dir`."""
  root = os.path.join(manual_dir, "fgvc-aircraft-2013b")
  data = os.path.join(root, "data")
  _write(os.path.join(data, "variants.txt"), "\n".join(AIRCRAFT_VARIANTS).encode() + b"\n")
  for split, pairs in AIRCRAFT_SPLITS.items():
    _write(os.path.join(data, f"images_variant_{split}.txt"),
           "".join(f"{i} {v}\n" for i, v in pairs).encode())
    for image_id, _ in pairs:
      image = gradient_image(AIRCRAFT_HEIGHT, AIRCRAFT_WIDTH, seed=int(image_id))
      image[-20:] = 0  # The copyright banner the builder must crop off.
      _write(os.path.join(data, "images", image_id + ".jpg"), encode(image))
  trainval = AIRCRAFT_SPLITS["train"] + AIRCRAFT_SPLITS["val"]
  _write(os.path.join(data, "images_variant_trainval.txt"),
         "".join(f"{i} {v}\n" for i, v in trainval).encode())
  if archive:
    with tarfile.open(os.path.join(manual_dir, "fgvc-aircraft-2013b.tar.gz"), "w:gz") as tar:
      tar.add(root, arcname="fgvc-aircraft-2013b")
    shutil.rmtree(root)
  return manual_dir


# Birdsnap: 500 species; images listed for 3 of them; some missing, one with a wrong MD5.
BIRDSNAP_TRAIN_FOUND = 4
BIRDSNAP_TEST_FOUND = 2
BIRDSNAP_MISSING = 2
BIRDSNAP_MD5_MISMATCH = 1


def write_birdsnap(manual_dir):
  """Writes species.txt, images.txt, test_images.txt and images/ into `manual_dir`."""
  species = ["id\tcommon\tscientific\tdir"] + [
      f"{i}\tBird {i}\tAvis {i}\tBird_{i}" for i in range(1, 501)]
  _write(os.path.join(manual_dir, "species.txt"), "\n".join(species).encode() + b"\n")
  rows, test_paths = [], []
  header = "url\tmd5\tpath\tspecies_id\tbb_x1\tbb_y1\tbb_x2\tbb_y2"
  plan = ([("train", "ok")] * BIRDSNAP_TRAIN_FOUND + [("test", "ok")] * BIRDSNAP_TEST_FOUND +
          [("train", "missing")] * BIRDSNAP_MISSING +
          [("train", "bad_md5")] * BIRDSNAP_MD5_MISMATCH)
  for n, (split, state) in enumerate(plan):
    species_id = 1 + n % 3
    path = f"Bird_{species_id}/{1000 + n}.jpg"
    data = encode(gradient_image(24, 32, seed=n))
    if state != "missing":
      _write(os.path.join(manual_dir, "images", path), data if state == "ok" else data + b"x")
    rows.append(f"http://example.invalid/{n}.jpg\t{hashlib.md5(data).hexdigest()}\t{path}\t"
                f"{species_id}\t1\t2\t20\t22")
    if split == "test":
      test_paths.append(path)
  _write(os.path.join(manual_dir, "images.txt"), "\n".join([header] + rows).encode() + b"\n")
  _write(os.path.join(manual_dir, "test_images.txt"),
         "\n".join(["path"] + test_paths).encode() + b"\n")
  return manual_dir


def write_image_folder(root, *, classes=("cat", "dog", "owl"), per_class=10, split_dirs=False,
                       test_per_class=3):
  """Writes unique dummy JPEGs/PNGs as <root>/<class>/* or <root>/{train,test}/<class>/*."""
  n = 0
  for label, name in enumerate(classes):
    parts = [("train", per_class), ("test", test_per_class)] if split_dirs else [("", per_class)]
    for split, count in parts:
      for i in range(count):
        image = gradient_image(12 + label, 16 + i, seed=n)
        fmt, ext = ("PNG", "png") if i % 2 else ("JPEG", "jpg")
        _write(os.path.join(root, split, name, f"{i:03d}.{ext}"), encode(image, fmt))
        n += 1
  return root


def write_corrupt_files(class_dir):
  """Adds a truncated JPEG, a text file and a TIFF (unsupported) to a class folder."""
  good = encode(gradient_image(40, 40))
  _write(os.path.join(class_dir, "truncated.jpg"), good[:len(good) // 2])
  _write(os.path.join(class_dir, "notes.txt"), b"not an image")
  _write(os.path.join(class_dir, "scan.tif"), encode(gradient_image(8, 8), "TIFF"))
  return ["truncated.jpg", "notes.txt", "scan.tif"]
