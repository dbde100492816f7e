"""The paper's evaluation metrics, on numpy labels and scores.

Kornblith et al. (2019) report top-1 accuracy for most datasets, mean per-class accuracy for
FGVC Aircraft, Oxford-IIIT Pets, Caltech-101 and Oxford 102 Flowers, and 11-point mAP for
PASCAL VOC2007 (multi-label). Each metric takes labels (int [N] for single-label; for
multi-label [N, C] with 1 = positive, 0 = negative and -1 = ignored, VOC's "difficult") and
scores [N, C] (logits or probabilities: only their order matters) and returns a Python float
in [0, 1].
"""

from typing import Callable

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]

# Metric names: a dataset's `DatasetSpec.metric`, a result's `metric`.
TOP1 = "top1"
MEAN_PER_CLASS = "mean_per_class"
MAP_11POINT = "map_11point"


def _check_single_label(labels, scores):
  labels, scores = np.asarray(labels), np.asarray(scores)
  if scores.ndim != 2 or labels.shape != scores.shape[:1]:
    raise ValueError(f"Expected int labels [N] and scores [N, C]; got labels of shape "
                     f"{labels.shape} and scores of shape {scores.shape}.")
  if labels.size == 0:
    raise ValueError("Got no examples (labels of shape (0,)); a metric needs at least one.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"Single-label metrics need integer class ids, got labels of dtype "
                     f"{labels.dtype}. For multi-hot labels use map_11point.")
  if labels.min() < 0 or labels.max() >= scores.shape[1]:
    raise ValueError(f"Labels must lie in [0, {scores.shape[1]}) (scores have "
                     f"{scores.shape[1]} columns); got min {labels.min()}, max {labels.max()}.")
  return labels, scores


def top1_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
  """Fraction of examples whose highest-scoring class is the label."""
  labels, scores = _check_single_label(labels, scores)
  return float(np.mean(np.argmax(scores, axis=1) == labels))


def mean_per_class_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
  """Top-1 accuracy of each class present in `labels`, averaged over those classes."""
  labels, scores = _check_single_label(labels, scores)
  correct = np.argmax(scores, axis=1) == labels
  counts = np.bincount(labels, minlength=scores.shape[1])
  hits = np.bincount(labels, weights=correct, minlength=scores.shape[1])
  present = counts > 0
  return float(np.mean(hits[present] / counts[present]))


def average_precision_11point(is_positive: np.ndarray, scores: np.ndarray) -> float:
  """VOC2007 AP of one class: mean over recall r in {0, 0.1, ..., 1} of the best precision
  at recall >= r (0 where recall r is never reached). Ties are ranked in input order."""
  order = np.argsort(-scores, kind="stable")
  true_positives = np.cumsum(is_positive[order])
  num_positive = true_positives[-1]
  precision = true_positives / np.arange(1, len(order) + 1)
  # recall >= k / 10, compared in integers so that e.g. recall 3/10 reaches 0.3 exactly.
  return float(np.mean([np.max(precision[10 * true_positives >= k * num_positive],
                               initial=0.0) for k in range(11)]))


def map_11point(labels_multi_hot: np.ndarray, scores: np.ndarray) -> float:
  """VOC2007 11-point interpolated AP, averaged over the classes that have a positive.

  As the VOC07 devkit scores classification: an entry labelled -1 (an image whose only
  objects of that class are marked difficult) counts in that class's AP as neither positive
  nor negative.

  Raises:
    ValueError: shapes differ, labels are not in {-1, 0, 1}, or no class has a positive.
  """
  labels, scores = np.asarray(labels_multi_hot), np.asarray(scores)
  if labels.ndim != 2 or labels.shape != scores.shape:
    raise ValueError(f"Expected multi-hot labels and scores of the same shape [N, C]; got "
                     f"{labels.shape} and {scores.shape}.")
  if not np.isin(labels, (-1, 0, 1)).all():
    raise ValueError(f"Multi-label labels must be 1 (positive), 0 (negative) or -1 "
                     f"(ignored); got values {np.unique(labels)[:10].tolist()}.")
  has_positive = (labels == 1).sum(axis=0) > 0
  if not has_positive.any():
    raise ValueError(f"No class has a positive example among the {labels.shape[0]} given, "
                     f"so average precision is undefined.")
  aps = []
  for c in np.flatnonzero(has_positive):
    counted = labels[:, c] != -1
    aps.append(average_precision_11point(labels[counted, c] == 1, scores[counted, c]))
  return float(np.mean(aps))


METRICS: dict[str, MetricFn] = {
    TOP1: top1_accuracy,
    MEAN_PER_CLASS: mean_per_class_accuracy,
    MAP_11POINT: map_11point,
}

# How reports and figures name each metric.
METRIC_TITLES: dict[str, str] = {
    TOP1: "top-1 accuracy",
    MEAN_PER_CLASS: "mean per-class accuracy",
    MAP_11POINT: "11-point mAP",
}


def get_metric_fn(name: str) -> MetricFn:
  """The metric called `name` in `METRICS`.

  Raises:
    ValueError: unknown name (the message lists the valid ones).
  """
  if name not in METRICS:
    raise ValueError(f"Unknown metric {name!r}. Valid metrics: {', '.join(METRICS)}.")
  return METRICS[name]
