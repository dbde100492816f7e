"""Stratified held-out selection: exact sizes, stratification, determinism."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tfhub_transfer.data import splits


def _labels(counts, seed=0):
  """A shuffled label vector with `counts[c]` examples of class c."""
  labels = np.repeat(np.arange(len(counts)), counts)
  return np.random.default_rng(seed).permutation(labels)


class HeldoutCountsTest(parameterized.TestCase):

  @parameterized.parameters(
      ([30] * 102, 0.2),  # Caltech-101: 30 per class -> 6 each.
      ([5000] * 10, 0.2),  # CIFAR-10.
      ([7, 3, 11, 1, 2, 40], 0.2),
      ([13, 17, 19], 0.5),
  )
  def test_total_is_rounded_fraction_and_each_class_is_within_one(self, counts, fraction):
    picked = splits.heldout_counts(counts, fraction=fraction,
                                   rng=np.random.default_rng(0))
    counts = np.array(counts)
    self.assertEqual(picked.sum(), int(np.floor(fraction * counts.sum() + 0.5)))
    self.assertTrue(np.all(np.abs(picked - fraction * counts) < 1.0), picked)
    self.assertTrue(np.all(picked <= np.maximum(counts - 1, 0)))

  def test_a_class_always_keeps_an_example(self):
    picked = splits.heldout_counts([1, 1, 2, 10], fraction=0.9,
                                   rng=np.random.default_rng(0))
    np.testing.assert_array_equal(picked, [0, 0, 1, 9])


class StratifiedSplitTest(parameterized.TestCase):

  def test_sizes_and_per_class_shares(self):
    counts = [30] * 102
    labels = _labels(counts)
    mask = splits.stratified_split(labels, fraction=0.2, seed=0)
    self.assertEqual(mask.dtype, bool)
    self.assertEqual(mask.sum(), 612)  # 3,060 * 0.2: the caltech101 validation size.
    np.testing.assert_array_equal(np.bincount(labels[mask], minlength=102), [6] * 102)

  def test_stratified_like_an_independent_count(self):
    labels = _labels([100, 50, 25, 13, 7])
    mask = splits.stratified_split(labels, fraction=0.2, seed=3)
    for c, n in enumerate([100, 50, 25, 13, 7]):
      self.assertLess(abs((labels[mask] == c).sum() - 0.2 * n), 1.0)

  def test_deterministic_for_a_seed_and_different_across_seeds(self):
    labels = _labels([40, 40, 40])
    first = splits.stratified_split(labels, fraction=0.25, seed=7)
    np.testing.assert_array_equal(first, splits.stratified_split(labels, fraction=0.25, seed=7))
    other = splits.stratified_split(labels, fraction=0.25, seed=8)
    self.assertEqual(first.sum(), other.sum())
    self.assertFalse(np.array_equal(first, other))

  def test_heldout_and_rest_partition_the_examples(self):
    labels = _labels([9, 4, 21])
    mask = splits.stratified_split(labels, fraction=0.3, seed=1)
    heldout, rest = set(np.flatnonzero(mask)), set(np.flatnonzero(~mask))
    self.assertEmpty(heldout & rest)
    self.assertEqual(heldout | rest, set(range(len(labels))))

  def test_non_contiguous_class_ids(self):
    labels = np.array([5, 5, 5, 5, 900, 900, 900, 900, 900, 900])
    mask = splits.stratified_split(labels, fraction=0.5, seed=0)
    self.assertEqual((labels[mask] == 5).sum(), 2)
    self.assertEqual((labels[mask] == 900).sum(), 3)

  @parameterized.parameters(0.0, 1.0, -0.1, 1.5)
  def test_bad_fraction_is_named(self, fraction):
    with self.assertRaisesRegex(ValueError, f"fraction {fraction!r} must be in \\(0, 1\\)"):
      splits.stratified_split([0, 1, 0, 1], fraction=fraction, seed=0)

  def test_multi_label_input_is_rejected(self):
    with self.assertRaisesRegex(ValueError, "1-D vector of integer class ids.*\\(4, 2\\)"):
      splits.stratified_split(np.zeros([4, 2], np.int64), fraction=0.5, seed=0)


class CapMaskTest(tf.test.TestCase):

  def test_keeps_the_first_selected(self):
    mask = np.array([False, True, True, False, True, True])
    np.testing.assert_array_equal(splits.cap_mask(mask, 2),
                                  [False, True, True, False, False, False])
    np.testing.assert_array_equal(splits.cap_mask(mask, 0), mask)
    np.testing.assert_array_equal(splits.cap_mask(mask, 10), mask)


if __name__ == "__main__":
  tf.test.main()
