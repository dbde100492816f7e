"""Class-stratified, seeded selection of a held-out part of a split (pure numpy).

The paper tunes hyperparameters on a validation split. Where a dataset has no official one,
the validation split is a class-stratified random part of train, drawn from the experiment
seed; the rest of train is the training split and train + validation is the refit split.
The same function draws the fixed test split of a flat image folder and of `digits`.

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
