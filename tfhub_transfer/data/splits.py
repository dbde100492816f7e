"""Class-stratified, seeded selection of a held-out part of a split (pure numpy).

The paper tunes hyperparameters on a validation split. Where a dataset has no official one,
the validation split is a class-stratified random part of train, drawn from the experiment
seed; the rest of train is the training split and train + validation is the refit split.
The same function draws the fixed test split of a flat image folder and of `digits`.

`per_class_subset` draws the training subset of a low-data cell (`--examples_per_class`).

Everything here works on a label vector read once, in the dataset's deterministic order, and
returns boolean masks over example indices; the input pipeline filters by index.
"""

from typing import Sequence

import numpy as np


def heldout_counts(counts: Sequence[int], *, fraction: float,
                   rng: np.random.Generator) -> np.ndarray:
  """How many examples of each class go to the held-out part.

  Each class gets `fraction` of its examples, rounded so that the total is exactly
  `round(fraction * sum(counts))` (largest remainder, ties broken by `rng`). A class keeps
  at least one example outside the held-out part.

  Args:
    counts: number of examples per class.
    fraction: share of examples to hold out, in (0, 1).
    rng: source of tie-breaking randomness.

  Returns:
    int64 array, the held-out count per class.
  """
  counts = np.asarray(counts, dtype=np.int64)
  cap = np.maximum(counts - 1, 0)
  quotas = fraction * counts
  base = np.minimum(np.floor(quotas).astype(np.int64), cap)
  target = min(int(np.floor(fraction * counts.sum() + 0.5)), int(cap.sum()))
  # Largest remainder first; a seeded permutation breaks ties (the stable sort keeps it).
  order = rng.permutation(len(counts))
  order = order[np.argsort(-(quotas - base)[order], kind="stable")]
  extra = target - int(base.sum())
  for c in order:
    if extra <= 0:
      break
    if base[c] < cap[c]:
      base[c] += 1
      extra -= 1
  return base


def stratified_split(labels: Sequence[int], *, fraction: float, seed: int) -> np.ndarray:
  """Picks a class-stratified random `fraction` of examples.

  Args:
    labels: one integer class per example, in the dataset's deterministic order.
    fraction: share of examples to pick, in (0, 1).
    seed: seed of the draw; the same labels, fraction and seed give the same mask.

  Returns:
    bool array of len(labels), True for the picked (held-out) examples.

  Raises:
    ValueError: `fraction` is outside (0, 1) or `labels` is not a 1-D integer vector.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"Held-out fraction {fraction!r} must be in (0, 1), e.g. 0.2.")
  labels = np.asarray(labels)
  if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
    raise ValueError(f"Stratified splits need a 1-D vector of integer class ids, got an "
                     f"array of shape {labels.shape} and dtype {labels.dtype}.")
  rng = np.random.default_rng(seed)
  classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
  picked = heldout_counts(counts, fraction=fraction, rng=rng)
  mask = np.zeros(len(labels), dtype=bool)
  for c in range(len(classes)):
    members = np.flatnonzero(inverse == c)
    mask[rng.choice(members, size=picked[c], replace=False)] = True
  return mask


def cap_mask(mask: np.ndarray, max_examples: int) -> np.ndarray:
  """Keeps only the first `max_examples` selected examples of a mask (0: keep all)."""
  if max_examples <= 0:
    return mask
  capped = np.zeros_like(mask)
  capped[np.flatnonzero(mask)[:max_examples]] = True
  return capped


# Salt of the subset's random stream, so that it is not the held-out split's stream.
_SUBSET_STREAM = 16


def per_class_subset(labels: np.ndarray, *, examples_per_class: int, seed: int) -> np.ndarray:
  """Picks a class-balanced random subset: `examples_per_class` examples of each class.

  Single labels ([N] integer class ids): each class gets `min(K, its count)` examples, the
  first K of a seeded random order of the examples, so for one seed the subset of a smaller
  K is part of the subset of a larger one.

  Multi-label ([N, C] multi-hot): "K per class" means every class appears in at least
  `min(K, images containing it)` picked images. Classes are visited from the rarest up (ties
  in a seeded order); each is topped up with images that contain it, in a seeded random
  order, until it appears in K picked images. Images picked for one class count for every
  class they contain, so frequent classes usually appear in more than K images, and the
  subset holds at most K * C images.

  Args:
    labels: [N] integer class ids, or [N, C] multi-hot labels (a class is present where its
      entry is 1; 0 or -1, VOC's difficult-only, is not present).
    examples_per_class: K >= 1.
    seed: seed of the draw (the cell's seed); same labels, K and seed give the same mask.

  Returns:
    bool array of N entries, True for the picked examples.

  Raises:
    ValueError: K < 1, or labels are neither 1-D integers nor a 2-D multi-hot matrix.
  """
  if examples_per_class < 1:
    raise ValueError(f"examples_per_class={examples_per_class!r} must be >= 1 (0 means the "
                     f"whole training split and draws no subset).")
  labels = np.asarray(labels)
  rng = np.random.default_rng([_SUBSET_STREAM, seed])
  order = rng.permutation(len(labels))
  mask = np.zeros(len(labels), dtype=bool)
  if labels.ndim == 1 and (not labels.size or np.issubdtype(labels.dtype, np.integer)):
    # Stable sort of the shuffled indices by class: each class's examples in shuffled order.
    grouped = order[np.argsort(labels[order], kind="stable")]
    _, starts, counts = np.unique(labels[grouped], return_index=True, return_counts=True)
    rank = np.arange(len(grouped)) - np.repeat(starts, counts)
    mask[grouped[rank < examples_per_class]] = True
    return mask
  if labels.ndim != 2:
    raise ValueError(f"A per-class subset needs [N] class ids or [N, C] multi-hot labels, "
                     f"got an array of shape {labels.shape} and dtype {labels.dtype}.")
  present = labels[order] > 0.5  # Rows in shuffled order.
  frequency = present.sum(axis=0)
  classes = rng.permutation(labels.shape[1])
  for c in classes[np.argsort(frequency[classes], kind="stable")]:
    need = examples_per_class - int(present[mask[order], c].sum())
    if need <= 0:
      continue
    candidates = np.flatnonzero(present[:, c] & ~mask[order])[:need]
    mask[order[candidates]] = True
  return mask


def describe_subset(labels: np.ndarray, mask: np.ndarray, *, examples_per_class: int,
                    seed: int) -> dict:
  """What a subset holds, for the result record: K, seed, size, per-class counts."""
  labels = np.asarray(labels)
  if labels.ndim == 1:
    _, per_class = np.unique(labels[mask], return_counts=True)
    available = np.unique(labels, return_counts=True)[1]
    num_classes = len(available)
  else:
    per_class = (labels[mask] > 0.5).sum(axis=0)
    available = (labels > 0.5).sum(axis=0)
    num_classes = int((available > 0).sum())
  return {"examples_per_class": int(examples_per_class), "seed": int(seed),
          "size": int(mask.sum()), "pool_size": int(len(labels)),
          "classes": int(num_classes),
          "min_per_class": int(per_class.min()) if per_class.size else 0,
          "max_per_class": int(per_class.max()) if per_class.size else 0,
          "classes_below_k": int((available < examples_per_class).sum()),
          "rule": "multi-label greedy (each class in >= K picked images)"
                  if labels.ndim == 2 else "K per class (fewer where a class has fewer)"}
