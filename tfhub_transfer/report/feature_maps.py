"""Figure 4: what the features look like. A t-SNE map of a model's cached penultimate
features of test images, coloured by class, and a class-separation number beside it.

The features are those `logreg` cells cached (`features.py` writes them; this module reads
the entry's `features.f32`, `labels.npy` and `meta.json` with numpy only, so the report side
stays free of TensorFlow). Up to `MAX_IMAGES` test images are drawn at random (seed 0).

Class separation: leave-one-out `KNN_K`-nearest-neighbour accuracy in feature space
(Euclidean distance on the features as cached; each image's class predicted by the majority
of its `KNN_K` nearest other images, ties to the smallest class id, as scikit-learn's
`KNeighborsClassifier` breaks them). The map itself is scikit-learn's t-SNE (perplexity 30,
PCA init, seed 0; exact gradients up to 500 images, Barnes-Hut above) after a PCA to at most
50 dimensions. Multi-label images are coloured, and
scored, by their first present class.
"""

import dataclasses
import json
import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from tfhub_transfer import config

MAX_IMAGES = 2000
KNN_K = 5
PCA_DIMS = 50
PERPLEXITY = 30.0
EXACT_TSNE_MAX = 500
ALL = "all"


@dataclasses.dataclass(frozen=True)
class FeatureMap:
  """One (model, dataset)'s t-SNE map and class separation.

  Attributes:
    model, dataset: as the results name them.
    path: the feature-cache entry read.
    embedding: [n, 2] t-SNE coordinates of the sampled images.
    labels: [n] class id of each sampled image (multi-label: its first present class).
    total_images: test images in the cache entry (n of them were sampled).
    knn_accuracy: leave-one-out `KNN_K`-NN accuracy of the sampled features (a fraction).
  """
  model: str
  dataset: str
  path: str
  embedding: np.ndarray
  labels: np.ndarray
  total_images: int
  knn_accuracy: float

  @property
  def name(self) -> str:
    return f"{self.model}/{self.dataset}"


@dataclasses.dataclass(frozen=True)
class CachedPair:
  """A (model, dataset) with cached test features: `path` is the cache entry."""
  model: str
  dataset: str
  path: str


def cached_test_features(loaded: Iterable[dict[str, Any]], *,
                         features_dir: Optional[str] = None) -> dict[str, CachedPair]:
  """`MODEL/DATASET` -> its cached test features, for each stored `logreg` cell whose entry
  exists (lowest seed first). A recorded path that does not exist is looked for under
  `features_dir` by its entry name (a workdir moved, or a relative path)."""
  out = {}
  for r in sorted(loaded, key=lambda r: r["seed"]):
    entry = ((r.get("feature_cache") or {}).get("test") or {}).get("path")
    name = f"{r['model']}/{r['dataset']}"
    if r["status"] != "ok" or not entry or name in out:
      continue
    candidates = [entry] + ([os.path.join(features_dir, os.path.basename(entry))]
                            if features_dir else [])
    found = next((p for p in candidates if os.path.exists(os.path.join(p, "meta.json"))),
                 None)
    if found:
      out[name] = CachedPair(r["model"], r["dataset"], found)
  return out


def select(available: dict[str, CachedPair],
           requested: Sequence[str]) -> dict[str, CachedPair]:
  """The requested `MODEL/DATASET` pairs (or `all`) among those with cached features.

  Raises:
    UsageError: a requested pair has no cached test features (lists those that have).
  """
  if list(requested) == [ALL]:
    return dict(available)
  missing = [item for item in requested if item not in available]
  if missing:
    raise config.UsageError(f"--tsne: no cached test features for {', '.join(missing)}. "
                            f"Pairs with cached features (from logreg cells): "
                            f"{', '.join(available) or 'none'}; or --tsne=all.")
  return {item: available[item] for item in requested}


def load_entry(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(features [N, D] float32, labels) of a feature-cache entry."""
  with open(os.path.join(path, "meta.json")) as f:
    meta = json.load(f)
  features = np.memmap(os.path.join(path, "features.f32"), dtype=np.float32, mode="r",
                       shape=(meta["num_examples"], meta["feature_dim"]))
  return features, np.load(os.path.join(path, "labels.npy"))


def class_ids(labels: np.ndarray) -> np.ndarray:
  """[N] class ids; multi-hot rows give their first present class (-1: none)."""
  labels = np.asarray(labels)
  if labels.ndim == 1:
    return labels.astype(np.int64)
  present = labels > 0.5
  return np.where(present.any(axis=1), present.argmax(axis=1), -1).astype(np.int64)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = KNN_K) -> float:
  """Leave-one-out k-NN accuracy (Euclidean; majority vote, ties to the smallest class)."""
  x = np.asarray(features, dtype=np.float64)
  labels = np.asarray(labels)
  if len(x) <= k:
    raise ValueError(f"k-NN accuracy needs more than k={k} images, got {len(x)}.")
  squared = np.sum(x * x, axis=1)
  distances = squared[:, None] + squared[None, :] - 2.0 * x @ x.T
  np.fill_diagonal(distances, np.inf)
  neighbours = np.argsort(distances, axis=1, kind="stable")[:, :k]
  classes, index = np.unique(labels, return_inverse=True)
  votes = np.zeros((len(x), len(classes)), dtype=np.int64)
  np.add.at(votes, (np.repeat(np.arange(len(x)), k), index[neighbours].ravel()), 1)
  return float(np.mean(classes[votes.argmax(axis=1)] == labels))


def tsne(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
  """[n, 2] t-SNE of the features (after a PCA to at most `PCA_DIMS` dimensions)."""
  from sklearn import decomposition  # pylint: disable=g-import-not-at-top
  from sklearn import manifold  # pylint: disable=g-import-not-at-top
  x = np.asarray(features, dtype=np.float64)
  if x.shape[1] > PCA_DIMS and len(x) > PCA_DIMS:
    x = decomposition.PCA(PCA_DIMS, random_state=seed).fit_transform(x)
  perplexity = min(PERPLEXITY, (len(x) - 1) / 3)
  # Barnes-Hut's approximation pays off only on larger samples; below, the exact gradient.
  method = "exact" if len(x) <= EXACT_TSNE_MAX else "barnes_hut"
  return manifold.TSNE(2, perplexity=perplexity, init="pca", random_state=seed,
                       method=method).fit_transform(x)


def make_feature_map(pair: CachedPair, *, max_images: int = MAX_IMAGES,
                     seed: int = 0) -> FeatureMap:
  """Samples up to `max_images` test images of a cache entry, maps and scores them."""
  features, labels = load_entry(pair.path)
  keep = np.arange(len(features))
  if len(keep) > max_images:
    keep = np.sort(np.random.default_rng(seed).choice(len(keep), max_images, replace=False))
  x, y = np.asarray(features[keep]), class_ids(labels)[keep]
  return FeatureMap(pair.model, pair.dataset, pair.path, tsne(x, seed=seed), y,
                    len(features), knn_accuracy(x, y))
