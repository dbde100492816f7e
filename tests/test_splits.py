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


class PerClassSubsetTest(parameterized.TestCase):

  @parameterized.parameters(1, 2, 5)
  def test_k_per_class_and_fewer_where_a_class_has_fewer(self, k):
    counts = [10, 3, 7, 1, 25]
    labels = _labels(counts)
    mask = splits.per_class_subset(labels, examples_per_class=k, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[mask], minlength=5),
                                  [min(k, n) for n in counts])

  def test_deterministic_for_a_seed_and_different_across_seeds(self):
    labels = _labels([20, 20, 20])
    first = splits.per_class_subset(labels, examples_per_class=4, seed=0)
    np.testing.assert_array_equal(
        first, splits.per_class_subset(labels, examples_per_class=4, seed=0))
    others = [splits.per_class_subset(labels, examples_per_class=4, seed=s) for s in (1, 2)]
    for other in others:
      self.assertEqual(other.sum(), 12)
      self.assertFalse(np.array_equal(first, other))

  def test_independent_of_the_heldout_draw_with_the_same_seed(self):
    # Both use the cell's seed: their random streams differ, so a subset of a class is not
    # simply the first examples a held-out split of the same seed skipped.
    labels = _labels([50, 50])
    heldout = splits.stratified_split(labels, fraction=0.5, seed=3)
    subset = splits.per_class_subset(labels, examples_per_class=25, seed=3)
    self.assertFalse(np.array_equal(heldout, subset))

  def test_subsets_of_one_seed_are_nested(self):
    labels = _labels([30, 12, 40, 8])
    smaller = splits.per_class_subset(labels, examples_per_class=2, seed=5)
    larger = splits.per_class_subset(labels, examples_per_class=8, seed=5)
    self.assertTrue(np.all(larger[smaller]))

  def test_each_example_is_equally_likely(self):
    # Over many seeds each of a class's 4 examples is picked about half the time at K=2.
    labels = np.array([0, 0, 0, 0, 1, 1])
    picks = np.mean([splits.per_class_subset(labels, examples_per_class=2, seed=s)
                     for s in range(2000)], axis=0)
    np.testing.assert_allclose(picks[:4], 0.5, atol=0.05)
    np.testing.assert_array_equal(picks[4:], [1.0, 1.0])

  def test_multi_label_every_class_in_at_least_k_picked_images(self):
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 6)) < [0.5, 0.3, 0.2, 0.05, 0.02, 0.01]).astype(np.float32)
    for k in (1, 3, 10):
      mask = splits.per_class_subset(labels, examples_per_class=k, seed=1)
      appearances = labels[mask].sum(axis=0)
      self.assertTrue(np.all(appearances >= np.minimum(k, labels.sum(axis=0))), appearances)
      self.assertLessEqual(mask.sum(), k * 6)
    np.testing.assert_array_equal(
        mask, splits.per_class_subset(labels, examples_per_class=10, seed=1))
    self.assertFalse(np.array_equal(
        mask, splits.per_class_subset(labels, examples_per_class=10, seed=2)))

  def test_multi_label_rarest_class_first(self):
    # Image 0 holds both classes; class 1 (the rarer) is served first and its only image
    # also covers class 0, so K=1 needs just that image.
    labels = np.array([[1, 1], [1, 0], [1, 0], [1, 0]], np.float32)
    for seed in range(5):
      mask = splits.per_class_subset(labels, examples_per_class=1, seed=seed)
      np.testing.assert_array_equal(mask, [True, False, False, False])

  def test_multi_label_difficult_only_is_not_present(self):
    # VOC's -1 marks a class annotated only as difficult: it does not count for the class.
    labels = np.array([[-1, 1], [1, 0], [1, 0]], np.float32)
    mask = splits.per_class_subset(labels, examples_per_class=1, seed=0)
    self.assertTrue(mask[0])  # The only image with class 1.
    self.assertEqual(mask[1:].sum(), 1)  # Class 0 needed an image of its own.

  def test_describe(self):
    labels = _labels([10, 3, 7])
    mask = splits.per_class_subset(labels, examples_per_class=5, seed=0)
    info = splits.describe_subset(labels, mask, examples_per_class=5, seed=0)
    self.assertEqual(info["size"], 13)
    self.assertEqual((info["min_per_class"], info["max_per_class"]), (3, 5))
    self.assertEqual(info["classes_below_k"], 1)
    self.assertEqual(info["pool_size"], 20)

  def test_bad_k_and_bad_labels_are_named(self):
    with self.assertRaisesRegex(ValueError, "examples_per_class=0 must be >= 1"):
      splits.per_class_subset([0, 1], examples_per_class=0, seed=0)
    with self.assertRaisesRegex(ValueError, "shape \\(2, 2, 2\\)"):
      splits.per_class_subset(np.zeros([2, 2, 2]), examples_per_class=1, seed=0)


if __name__ == "__main__":
  tf.test.main()
