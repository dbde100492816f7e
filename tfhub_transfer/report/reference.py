"""The paper's reference numbers (Kornblith, Shlens & Le, CVPR 2019), shipped as CSVs.

`kornblith2019_networks.csv` holds each network's ImageNet top-1 and its average transfer
accuracy in log-odds per regime. Those averages are APPROXIMATE: they were measured off the
paper's Figures 1 and 2 (about +-0.01 log-odds, ImageNet +-0.1 point). They reproduce the
paper's published correlations (`RegimeSpec.paper_correlation`) to within 0.01.
`kornblith2019_datasets.csv` is the paper's Table 1.
`simclr2020_resnet50.csv` holds the only per-dataset numbers under this protocol we have:
ResNet-50 in the three regimes, from SimCLR's Appendix B.8 (`SIMCLR_SOURCE`, with the caveat
`SIMCLR_CAVEAT`).
"""

import csv
import dataclasses
import functools
import importlib.resources
import io

from tfhub_transfer import regimes

APPROXIMATE_NOTE = ("approximate: read off the paper's Figures 1-2 "
                    "(about +-0.01 log-odds, ImageNet top-1 +-0.1 point)")

# The paper's Pearson r (ImageNet top-1 vs average log-odds) over its 16 networks, each
# retrained by the authors under one training setup: `RegimeSpec.paper_correlation`.
RETRAINED_SOURCE = "the paper (CVPR 2019), its 16 networks retrained by the authors"
# The same correlation over public checkpoints, from the paper's first version, which is why
# the final one retrained every network: r^2 for fixed features (logreg) and fine-tuning.
PUBLIC_CHECKPOINT_R2 = {"logreg": 0.24, "finetune": 0.86}
PUBLIC_CHECKPOINT_SOURCE = "the paper's v1 (arXiv:1805.08974v1), 13 public checkpoints"

# Figure 8's headline: Inception v4 over the paper's 12 datasets (the mean over datasets of
# each regime's converged budget on the figure's budget grid), in steps at batch 256 and in
# epochs; scratch / finetune is "about 17x".
PAPER_CONVERGENCE = {"finetune": {"steps": 1151, "epochs": 26},
                     "scratch": {"steps": 19531, "epochs": 444}}
PAPER_CONVERGENCE_RATIO = 17

_NETWORKS_CSV = "kornblith2019_networks.csv"
_DATASETS_CSV = "kornblith2019_datasets.csv"
_SIMCLR_CSV = "simclr2020_resnet50.csv"

SIMCLR_SOURCE = ("Chen et al., SimCLR (ICML 2020, arXiv 2002.05709), Appendix B.8, Table B.5: "
                 "rows Supervised (linear evaluation: logreg; fine-tuned: finetune) and "
                 "Random init (scratch)")
SIMCLR_CAVEAT = ("its supervised ResNet-50 was trained by SimCLR's authors with strong "
                 "augmentation (76.3% ImageNet top-1), not Keras' ResNet50 checkpoint (74.9%), "
                 "so its logreg and finetune numbers are a reference, not a target; scratch "
                 "depends on no checkpoint and is the most directly comparable; SimCLR's "
                 "preprocessing differs slightly")


@dataclasses.dataclass(frozen=True)
class PaperNetwork:
  """One of the paper's 16 networks (approximate figures, see `APPROXIMATE_NOTE`).

  Attributes:
    name: backbone registry name.
    imagenet_top1: ImageNet top-1 (%) of the authors' retrained network.
    avg_logodds_by_regime: regime -> mean over the 12 datasets of log(p / (1 - p)), read
      from each regime's `RegimeSpec.paper_column`.
  """
  name: str
  imagenet_top1: float
  avg_logodds_by_regime: tuple[tuple[str, float], ...]

  def avg_logodds(self, regime: str) -> float:
    """The average log-odds under `regime` (a `regimes.REGIMES` name)."""
    regimes.get_regime_spec(regime)
    return dict(self.avg_logodds_by_regime)[regime]


@dataclasses.dataclass(frozen=True)
class PaperDataset:
  """One row of the paper's Table 1.

  Attributes:
    name: dataset registry name.
    classes: number of classes.
    train_size: training examples (train + validation where the paper has a val split).
    test_size: test examples.
    metric: `top1`, `mean_per_class` or `map_11point`.
    validation: how the paper made the validation split for hyperparameter selection.
  """
  name: str
  classes: int
  train_size: int
  test_size: int
  metric: str
  validation: str


def _read_csv(filename: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
  text = importlib.resources.files("tfhub_transfer.report").joinpath(
      "reference_data", filename).read_text(encoding="utf-8")
  reader = csv.DictReader(io.StringIO(text))
  missing = set(columns) - set(reader.fieldnames or ())
  if missing:
    raise ValueError(f"tfhub_transfer/report/reference_data/{filename} lacks columns "
                     f"{sorted(missing)}; "
                     f"has {reader.fieldnames}. Reinstall tfhub_transfer.")
  return list(reader)


@functools.lru_cache(maxsize=None)
def _networks() -> tuple[PaperNetwork, ...]:
  columns = {name: spec.paper_column for name, spec in regimes.REGIMES.items()}
  rows = _read_csv(_NETWORKS_CSV, ("network", "imagenet_top1", *columns.values()))
  return tuple(PaperNetwork(
      name=r["network"], imagenet_top1=float(r["imagenet_top1"]),
      avg_logodds_by_regime=tuple((regime, float(r[column]))
                                  for regime, column in columns.items())) for r in rows)


@functools.lru_cache(maxsize=None)
def _datasets() -> tuple[PaperDataset, ...]:
  rows = _read_csv(_DATASETS_CSV, ("dataset", "classes", "train_size", "test_size", "metric",
                                   "validation"))
  return tuple(PaperDataset(
      name=r["dataset"], classes=int(r["classes"]), train_size=int(r["train_size"]),
      test_size=int(r["test_size"]), metric=r["metric"], validation=r["validation"])
               for r in rows)


@dataclasses.dataclass(frozen=True)
class ReferenceCell:
  """One per-dataset number of the SimCLR reference (a percentage in `metric`)."""
  network: str
  dataset: str
  regime: str
  metric: str
  value_percent: float


@functools.lru_cache(maxsize=None)
def _simclr() -> tuple[ReferenceCell, ...]:
  rows = _read_csv(_SIMCLR_CSV, ("network", "dataset", "regime", "metric", "value_percent"))
  return tuple(ReferenceCell(r["network"], r["dataset"], r["regime"], r["metric"],
                             float(r["value_percent"])) for r in rows)


def simclr_reference() -> dict[tuple[str, str, str], ReferenceCell]:
  """(network, regime, dataset) -> SimCLR's per-dataset number (ResNet-50 only)."""
  return {(c.network, c.regime, c.dataset): c for c in _simclr()}


def paper_networks() -> dict[str, PaperNetwork]:
  """The paper's 16 networks by registry name, in ascending ImageNet top-1 order."""
  return {n.name: n for n in _networks()}


def paper_datasets() -> dict[str, PaperDataset]:
  """The paper's 12 datasets by registry name, in Table 1 order."""
  return {d.name: d for d in _datasets()}
