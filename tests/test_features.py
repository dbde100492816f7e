"""The feature cache under faults: truncated, garbled and half-copied entries, killed writers."""

import errno
import json
import multiprocessing
import os
import time
from unittest import mock
import zlib

import numpy as np
import tensorflow as tf

from tests import cli_runner
from tests import fakes
from tfhub_transfer import experiment
from tfhub_transfer import faults
from tfhub_transfer import features as features_lib
from tfhub_transfer import runners
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import store as results


def _slow_extraction(cache_dir, progress):
  """Extracts 40 batches of 2 rows, slowly, saying `progress.send("batch")` before each, so
  that the test can SIGKILL it mid-way. Run in a forked child of the test process, it runs
  no TensorFlow op (the parent's TensorFlow threads are not in the child): its batches are
  NumPy arrays, which `extract_features` iterates as it does a dataset."""
  rows = np.arange(80)
  batches = [(rows[i:i + 2].astype(np.float32).reshape(2, 1), rows[i:i + 2])
             for i in range(0, 80, 2)]

  def slow(x):
    progress.send("batch")
    time.sleep(0.05)
    return np.concatenate([x, 2 * x], axis=1)
  features_lib.extract_features(slow, batches, cache_dir=cache_dir, key="k")


def _data(n=8):
  x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
  return x, np.arange(n) % 3, tf.data.Dataset.from_tensor_slices((x, np.arange(n) % 3)).batch(3)


def _identity(x):
  return x


class EntryIntegrityTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.cache_dir = self.create_tempdir().full_path
    self.x, self.y, self.data = _data()
    self.entry = features_lib.extract_features(_identity, self.data, cache_dir=self.cache_dir,
                                               key="k")
    self.path = self.entry.path

  def _damage_and_reextract(self, damage, reason):
    damage(self.path)
    with self.assertRaisesRegex(features_lib.DamagedEntryError, reason):
      features_lib.load_cached(self.cache_dir, "k")
    with self.assertLogs(level="WARNING") as logs:
      again = features_lib.extract_features(_identity, self.data, cache_dir=self.cache_dir,
                                            key="k")
    (line,) = [out for out in logs.output if "damaged" in out]
    self.assertIn(self.path, line)  # The entry's path,
    self.assertRegex(line, reason)  # what is wrong with it,
    (aside,) = [n for n in os.listdir(self.cache_dir) if features_lib.CORRUPT_MARK in n]
    self.assertIn(os.path.join(self.cache_dir, aside), line)  # and where it went.
    self.assertFalse(again.from_cache)
    self.assertAllEqual(again.features, self.x)  # Extracted again: the clean numbers.
    self.assertAllEqual(again.labels, self.y)
    self.assertTrue(features_lib.load_cached(self.cache_dir, "k").from_cache)

  def test_meta_records_sizes_and_checksums(self):
    with open(os.path.join(self.path, "meta.json")) as f:
      files = json.load(f)["files"]
    for name in ("features.f32", "labels.npy"):
      with open(os.path.join(self.path, name), "rb") as f:
        data = f.read()
      self.assertEqual(files[name]["bytes"], len(data))
      self.assertEqual(files[name]["crc32"], f"{zlib.crc32(data):08x}")
    self.assertEqual(sorted(os.listdir(self.path)), ["features.f32", "labels.npy", "meta.json"])

  def test_truncated_features(self):
    def truncate(path):
      with open(os.path.join(path, "features.f32"), "r+b") as f:
        f.truncate(40)
    self._damage_and_reextract(truncate, "features.f32 has 40 bytes; meta.json says 8 x 3 "
                               "float32 = 96")

  def test_garbage_meta(self):
    def garble(path):
      with open(os.path.join(path, "meta.json"), "w") as f:
        f.write("\x00\x17{not json")
    self._damage_and_reextract(garble, "meta.json is not a cache entry's")

  def test_an_entry_without_checksums_is_extracted_again(self):
    # Same-size garbage in an entry without checksums passed the size check and gave an ok
    # row at 11.42% where the truth was 84.68%: such an entry is never trusted.
    def strip_checksums(path):
      with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
      del meta["files"]
      with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)
      with open(os.path.join(path, "features.f32"), "r+b") as f:
        f.write(b"\x7f" * 96)  # Same size, other numbers.
    self._damage_and_reextract(strip_checksums, "meta.json has no checksums of its files")

  def test_flipped_bytes_are_caught_by_the_checksum(self):
    def flip(path):
      with open(os.path.join(path, "features.f32"), "r+b") as f:
        f.seek(50)
        byte = f.read(1)
        f.seek(50)
        f.write(bytes([byte[0] ^ 0x40]))
    self._damage_and_reextract(flip, "features.f32 has CRC-32 [0-9a-f]{8}; meta.json says")

  def test_truncated_labels(self):
    def truncate(path):
      with open(os.path.join(path, "labels.npy"), "r+b") as f:
        f.truncate(100)
    self._damage_and_reextract(truncate, "labels.npy has 100 bytes")

  def test_directory_without_meta(self):
    self._damage_and_reextract(lambda path: os.remove(os.path.join(path, "meta.json")),
                               "a directory without meta.json")


class EntryWriterTest(tf.test.TestCase):

  def test_streams_rows_and_commits_atomically(self):
    cache_dir = self.create_tempdir().full_path
    with features_lib.EntryWriter(cache_dir, "k", description="two backbones, one pass",
                                  key_parts={"backbone": "a"}) as writer:
      writer.append(np.ones((2, 4)), [0, 1])
      self.assertIsNone(features_lib.load_cached(cache_dir, "k"))  # Not there until commit.
      writer.append(np.zeros((1, 4)), [2])
      entry = writer.commit()
    self.assertAllEqual(entry.features, [[1] * 4, [1] * 4, [0] * 4])
    self.assertAllEqual(entry.labels, [0, 1, 2])
    self.assertEqual(os.listdir(cache_dir), ["k"])

  def test_an_exception_leaves_nothing(self):
    cache_dir = self.create_tempdir().full_path
    with self.assertRaisesRegex(ValueError, "Non-finite features in batch 1 of d"):
      with features_lib.EntryWriter(cache_dir, "k", description="d") as writer:
        writer.append(np.ones((2, 4)), [0, 1])
        writer.append(np.full((2, 4), np.nan), [0, 1])
    self.assertEmpty(os.listdir(cache_dir))

  def test_two_writers_of_one_key(self):
    cache_dir = self.create_tempdir().full_path
    first = features_lib.EntryWriter(cache_dir, "k")
    second = features_lib.EntryWriter(cache_dir, "k")
    for writer in (first, second):
      writer.append(np.ones((2, 4)), [0, 1])
    first.commit()
    self.assertAllEqual(second.commit().features, np.ones((2, 4)))  # Theirs, as good.
    self.assertEqual(os.listdir(cache_dir), ["k"])


class PartialFoldersTest(tf.test.TestCase):

  def test_a_killed_extraction_is_cleaned_up_by_the_next_run(self):
    cache_dir = self.create_tempdir().full_path
    # A process of its own (its pid is what marks the partial folder as abandoned), forked:
    # no interpreter to start and no TensorFlow to import (about 6 CPU-seconds).
    fork = multiprocessing.get_context("fork")
    progress, child_end = fork.Pipe(duplex=False)
    child = fork.Process(target=_slow_extraction, args=(cache_dir, child_end), daemon=True)
    child.start()
    child_end.close()  # The child's end: closed here, so that its exit reads as EOF.
    for _ in range(5):  # A few batches written, then kill -9.
      self.assertTrue(progress.poll(60), "the extraction hung")
      self.assertEqual(progress.recv(), "batch")  # EOFError: it ended early.
    child.kill()
    child.join()
    self.assertEqual(child.exitcode, -9)
    (partial,) = os.listdir(cache_dir)
    self.assertStartsWith(partial, ".k.partial-")
    self.assertNotEmpty(os.listdir(os.path.join(cache_dir, partial)))

    data = tf.data.Dataset.from_tensor_slices(
        (np.arange(80, dtype=np.float32).reshape(80, 1), np.arange(80))).batch(2)
    entry = features_lib.extract_features(lambda x: tf.concat([x, 2 * x], axis=1), data,
                                          cache_dir=cache_dir, key="k")
    self.assertEqual(os.listdir(cache_dir), ["k"])  # The killed run's folder is gone.
    self.assertAllEqual(entry.features[:, 1], 2 * np.arange(80))

  def test_live_and_recent_writers_are_left_alone(self):
    cache_dir = self.create_tempdir().full_path
    mine = features_lib.EntryWriter(cache_dir, "a")  # This process: alive.
    elsewhere = features_lib.EntryWriter(cache_dir, "b")
    with open(os.path.join(elsewhere.tmp, features_lib.OWNER_FILE), "w") as f:
      json.dump({"host": "another-host", "pid": 1}, f)
    abandoned = features_lib.EntryWriter(cache_dir, "c")
    with open(os.path.join(abandoned.tmp, features_lib.OWNER_FILE), "w") as f:
      json.dump({"host": "another-host", "pid": 1}, f)
    old = time.time() - features_lib.STALE_PARTIAL_S - 60
    for name in [""] + os.listdir(abandoned.tmp):
      os.utime(os.path.join(abandoned.tmp, name), (old, old))
    self.assertEqual(features_lib.remove_stale_partials(cache_dir), [abandoned.tmp])
    self.assertTrue(os.path.isdir(mine.tmp))
    self.assertTrue(os.path.isdir(elsewhere.tmp))
    mine.append(np.ones((1, 2)), [0])
    self.assertAllEqual(mine.commit().features, [[1, 1]])


def _enospc(filename=None):
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


class DiskFullTest(tf.test.TestCase):
  """A full disk is the machine's fault: one line naming where and what to free, exit 1, and
  no failed row."""

  def test_extraction_names_the_cache_and_leaves_nothing_half_written(self):
    cache_dir = self.create_tempdir().full_path
    _, _, data = _data()
    # The labels file is written when the entry is committed.
    with mock.patch.object(features_lib.np, "save", side_effect=_enospc()):
      with self.assertRaises(faults.MachineFault) as raised:
        features_lib.extract_features(_identity, data, cache_dir=cache_dir, key="k",
                                      description="resnet_50/dtd/train")
    message = str(raised.exception)
    self.assertEqual(raised.exception.errno, errno.ENOSPC)
    self.assertStartsWith(message, f"[Errno 28] disk full (No space left on device) writing the "
                                   f"feature cache entry of resnet_50/dtd/train in {cache_dir} (")
    self.assertIn(f"MiB free there); nothing half-written is kept. Free space there (entries of "
                  f"models you no longer compare, and any *.corrupt-* folders, in {cache_dir})",
                  message)
    self.assertEmpty(os.listdir(cache_dir))  # The partial entry is gone.

  def test_a_cell_stores_no_failed_row_for_a_full_disk(self):
    workdir = self.create_tempdir().full_path
    config = ExperimentConfig(model="mobilenet_v1", dataset="digits", regime="logreg",
                              workdir=workdir)
    fault = faults.disk_full(_enospc(), path=workdir, writing="x", to_free="y")
    store = results.ResultsStore.for_workdir(workdir)
    with mock.patch.object(runners, "load_cell", side_effect=fault):
      with self.assertRaises(faults.MachineFault):
        experiment.run_experiment(config, store=store)
    self.assertEmpty(store.records())

  def test_the_cli_says_disk_full_in_one_line_and_exits_1(self):
    workdir = self.create_tempdir().full_path
    cell = ["--model=mobilenet_v1", "--dataset=digits", "--regime=logreg", "--weights=random",
            "--workdir=" + workdir]
    named = faults.disk_full(_enospc(), path=workdir, writing="the feature cache entry of a",
                             to_free="old entries")
    for error, line in ((named, f"tfhub_transfer: {named}"),
                        (_enospc("/w/results/h.sqlite"),
                         "tfhub_transfer: disk full (No space left on device) writing "
                         "/w/results/h.sqlite. Free space on that disk, then rerun the same "
                         "command to resume")):
      with mock.patch.object(sweep, "run_grid", side_effect=error):
        self.assertEqual(cli_runner.run_in_process(*cell), (1, [line]))


class CellWithDamagedCacheTest(tf.test.TestCase):

  def test_logreg_cell_recovers_with_the_clean_numbers(self):
    tmp = self.get_temp_dir()
    hub = fakes.make_tiny_savedmodel(os.path.join(tmp, "hub"), feature_dim=8, grid=2)
    config = ExperimentConfig(model="hub:" + hub, dataset="digits", regime="logreg",
                              image_size=16, workdir=os.path.join(tmp, "work"),
                              data_dir=fakes.digits_data_dir(), max_examples=40,
                              batch_size=16, l2_grid_size=5)
    clean = experiment.run_experiment(config).record
    train_entry = clean["feature_cache"]["train"]["path"]
    with open(os.path.join(train_entry, "features.f32"), "r+b") as f:
      f.truncate(1000)  # As a disk that filled up, or a copy cut short.
    with self.assertLogs(level="WARNING") as logs:
      again = experiment.run_experiment(config).record
    self.assertTrue(any(train_entry in line and "damaged" in line for line in logs.output),
                    logs.output)
    self.assertEqual({s: c["hit"] for s, c in again["feature_cache"].items()},
                     {"train": False, "val": True, "test": True})
    for field in ("val_metric", "test_metric", "hparams"):
      self.assertEqual(again[field], clean[field], field)


if __name__ == "__main__":
  tf.test.main()
