"""Tests for tfhub_transfer.metrics against scikit-learn and a hand-written VOC07 formula."""

import csv
import os

from absl.testing import parameterized
import numpy as np
from sklearn import metrics as sk_metrics
import tensorflow as tf

from tfhub_transfer import metrics

_DATASETS_CSV = os.path.join(os.path.dirname(metrics.__file__), "report", "reference_data",
                             "kornblith2019_datasets.csv")


def _voc07_ap(labels, scores):
  """VOC2007 devkit's 11-point AP, written out: for t in 0, 0.1, ..., 1, the best
  precision at recall >= t, summed and divided by 11."""
  order = sorted(range(len(scores)), key=lambda i: -scores[i])
  num_positive = sum(labels)
  true_positives, precision, recall = 0, [], []
  for rank, i in enumerate(order, start=1):
    true_positives += labels[i]
    precision.append(true_positives / rank)
    recall.append(true_positives / num_positive)
  ap = 0.0
  for step in range(11):
    threshold = step / 10
    reached = [p for p, r in zip(precision, recall) if r >= threshold - 1e-12]
    ap += (max(reached) if reached else 0.0) / 11
  return ap


def _random_single_label(seed, n=200, c=7):
  rng = np.random.default_rng(seed)
  return rng.integers(0, c, n), rng.normal(size=(n, c))


class MetricsTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(0, 1, 2)
  def test_top1_matches_sklearn(self, seed):
    labels, scores = _random_single_label(seed)
    self.assertAlmostEqual(metrics.top1_accuracy(labels, scores),
                           sk_metrics.accuracy_score(labels, scores.argmax(1)), places=12)

  @parameterized.parameters(0, 1, 2)
  def test_mean_per_class_matches_sklearn_balanced_accuracy(self, seed):
    rng = np.random.default_rng(seed)
    # Unbalanced classes, so the mean per-class accuracy differs from top-1.
    labels = rng.choice(5, size=300, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    scores = rng.normal(size=(300, 5)) + 1.5 * np.eye(5)[labels]
    expected = sk_metrics.balanced_accuracy_score(labels, scores.argmax(1))
    self.assertAlmostEqual(metrics.mean_per_class_accuracy(labels, scores), expected,
                           places=12)
    self.assertNotAlmostEqual(expected, metrics.top1_accuracy(labels, scores), places=3)

  def test_mean_per_class_averages_only_classes_present(self):
    labels = np.array([0, 0, 0, 2])  # Class 1 absent; class 2 always wrong.
    scores = np.eye(3)[[0, 1, 0, 0]]
    self.assertAlmostEqual(metrics.mean_per_class_accuracy(labels, scores), (2 / 3 + 0) / 2)

  def test_map_11point_hand_example(self):
    scores = np.tile(np.array([[0.9], [0.8], [0.7], [0.6], [0.5]]), (1, 3))
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]])
    # Class 0: precision 1 up to recall .5, then 2/3 -> (6 * 1 + 5 * 2/3) / 11 = 28/33.
    # Class 1: precision .5 up to recall .5, then .4 -> (6 * .5 + 5 * .4) / 11 = 5/11.
    # Class 2 has no positive: left out of the mean.
    self.assertAlmostEqual(metrics.map_11point(labels, scores), (28 / 33 + 5 / 11) / 2,
                           places=12)

  def test_map_11point_ignores_difficult_only_images(self):
    # Five images ranked by score. Class 0: images 0 and 2 have clear objects; image 1's only
    # class-0 object is difficult (-1). Class 1: image 3 is difficult-only, image 4 positive.
    scores = np.tile(np.array([[0.9], [0.8], [0.7], [0.6], [0.5]]), (1, 2))
    labels = np.array([[1, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
    # Class 0 without image 1: ranks 1, 2 are positives -> precision 1 at every recall: AP 1.
    # (Counted as a negative, image 1 would give (6 * 1 + 5 * 2/3) / 11 = 28/33.)
    # Class 1 without image 3: the positive is 4th of 4 -> precision 1/4 at every recall.
    self.assertAlmostEqual(metrics.map_11point(labels, scores), (1.0 + 0.25) / 2, places=12)
    # The same images with difficult-only entries counted as negatives score lower.
    self.assertAlmostEqual(metrics.map_11point(np.maximum(labels, 0), scores),
                           (28 / 33 + 0.2) / 2, places=12)
    # A class whose only entries are difficult has no positive: left out of the mean.
    only_difficult = np.array([[1, -1], [1, -1], [0, 0], [0, 0], [0, 0]])  # Class 0: AP 1.
    self.assertAlmostEqual(metrics.map_11point(only_difficult, scores), 1.0, places=12)

  @parameterized.parameters(0, 1, 2)
  def test_map_11point_matches_voc07_formula_on_random_data(self, seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random((150, 6)) < 0.2).astype(np.int64)
    scores = rng.normal(size=(150, 6)) + labels
    expected = np.mean([_voc07_ap(labels[:, c].tolist(), scores[:, c].tolist())
                        for c in range(6)])
    self.assertAlmostEqual(metrics.map_11point(labels, scores), expected, places=12)
    self.assertBetween(expected, 0.3, 0.95)

  def test_perfect_and_values_are_python_floats(self):
    labels = np.array([0, 1, 2, 1])
    scores = np.eye(3)[labels]
    for name in ("top1", "mean_per_class"):
      value = metrics.get_metric_fn(name)(labels, scores)
      self.assertIsInstance(value, float)
      self.assertEqual(value, 1.0)
    self.assertEqual(metrics.map_11point(scores.astype(int), scores), 1.0)

  def test_registry_covers_the_papers_metrics(self):
    with open(_DATASETS_CSV) as f:
      paper_metrics = {row["metric"] for row in csv.DictReader(f)}
    self.assertEqual(set(metrics.METRICS), paper_metrics)

  def test_every_metric_has_its_title(self):
    self.assertEqual(set(metrics.METRIC_TITLES), set(metrics.METRICS))

  def test_unknown_metric_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError, "'top5'.*top1, mean_per_class, map_11point"):
      metrics.get_metric_fn("top5")

  def test_bad_inputs_are_named(self):
    with self.assertRaisesRegex(ValueError, r"\[0, 3\).*max 3"):
      metrics.top1_accuracy(np.array([0, 3]), np.zeros((2, 3)))
    with self.assertRaisesRegex(ValueError, "integer class ids"):
      metrics.mean_per_class_accuracy(np.array([0.0, 1.0]), np.zeros((2, 3)))
    with self.assertRaisesRegex(ValueError, r"1 \(positive\), 0 \(negative\) or -1"):
      metrics.map_11point(np.full((2, 3), 2), np.zeros((2, 3)))
    with self.assertRaisesRegex(ValueError, "No class has a positive"):
      metrics.map_11point(np.zeros((2, 3)), np.zeros((2, 3)))


if __name__ == "__main__":
  tf.test.main()
