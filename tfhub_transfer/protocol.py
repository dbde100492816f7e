"""The paper's protocol as constants and tiny pure functions: grids, step budgets, batch-norm
momentum. No TensorFlow: the CLI, the report and the regime registry import it.

Each value is checkable against Kornblith et al. (2019), Appendix A, and SimCLR's Appendix B.8
(which follows it); tests/test_protocol.py checks each one. The regime registry
(`regimes.py`) assigns the grids and budgets to the regimes.
"""

import math

import numpy as np

# Paper's batch size (flags/paper_*.cfg set it).
PAPER_BATCH_SIZE = 256
# Step budgets of the paper's protocol at batch 256.
PAPER_FINETUNE_STEPS = 20_000
PAPER_SCRATCH_STEPS = 40_000
# The default when no flagfile sets --train_steps: enough for a smoke run to learn.
QUICK_TRAIN_STEPS = 200

# Logistic regression: 45 log-spaced L2 strengths in [1e-6, 1e5].
L2_GRID_SIZE = 45
L2_RANGE = (1e-6, 1e5)


# Figure 8: a step budget has converged when the odds p / (1 - p) of its test accuracy reach
# this fraction of the best budget's odds (its log-odds within -ln(0.9) = 0.105 of the best).
CONVERGENCE_THRESHOLD = 0.9


def check_convergence_threshold(threshold: float) -> None:
  """Raises ValueError unless 0 < `threshold` <= 1."""
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"--convergence_threshold={threshold!r} must be in (0, 1], e.g. "
                     f"{CONVERGENCE_THRESHOLD}: the fraction of the best budget's odds "
                     f"p/(1-p) a budget must reach.")


def log_grid(low: float, high: float, num: int) -> tuple[float, ...]:
  """`num` log-spaced values from `low` to `high`, rounded to 3 significant digits."""
  return tuple(float(f"{v:.3g}") for v in np.logspace(math.log10(low), math.log10(high), num))


def l2_grid(size: int = L2_GRID_SIZE) -> np.ndarray:
  """The paper's L2 strengths: `size` log-spaced values from 1e-6 to 1e5."""
  return np.logspace(math.log10(L2_RANGE[0]), math.log10(L2_RANGE[1]), size)


# Fine-tuning: 7 learning rates in [1e-4, 0.1] x (no weight decay + 7 in [1e-6, 1e-3]).
FINETUNE_LEARNING_RATES = log_grid(1e-4, 1e-1, 7)
FINETUNE_WEIGHT_DECAYS = (0.0,) + log_grid(1e-6, 1e-3, 7)
# From random init: 7 learning rates in [1e-3, 1] x 8 weight decays in [1e-5, 10^-1.5] (no
# "none"). SimCLR B.8: "8 logarithmically spaced values of weight decay between 10^-5 and
# 10^-1.5".
SCRATCH_LEARNING_RATES = log_grid(1e-3, 1.0, 7)
SCRATCH_WEIGHT_DECAYS = log_grid(1e-5, 10 ** -1.5, 8)

# Figure 9 (low data): K = 1, 2, 4, ... training examples per class up to each dataset's
# maximum, read off the figure's x axes (its top axes, K x classes, agree: Food-101 51,712 =
# 512 x 101). VOC 2007 is not in the figure. Three subsets (seeds) per K.
PAPER_LOW_DATA_MAX_EXAMPLES = {
    "food101": 512, "cifar10": 4096, "cifar100": 256, "birdsnap": 64, "sun397": 32,
    "stanford_cars": 16, "fgvc_aircraft": 32, "dtd": 32, "oxford_pets": 64, "caltech101": 16,
    "oxford_flowers": 8}
# Figure 8 (convergence): the step budgets of its x axis at batch 256, 76 to 78,125 (20M
# images), each half the next (rounded down), on all 12 datasets.
PAPER_CONVERGENCE_BUDGETS = (76, 152, 305, 610, 1220, 2441, 4882, 9765, 19531, 39062, 78125)


def paper_examples_per_class(dataset: str) -> tuple[int, ...]:
  """Figure 9's K values for `dataset`: 1, 2, 4, ... up to its maximum on the figure.

  Raises:
    ValueError: a dataset the figure does not show (the message lists those it shows).
  """
  if dataset not in PAPER_LOW_DATA_MAX_EXAMPLES:
    raise ValueError(f"The paper's Figure 9 has no K values for dataset {dataset!r}; it shows "
                     f"{', '.join(PAPER_LOW_DATA_MAX_EXAMPLES)}. Pass --examples_per_class="
                     f"K,... for it instead of 'paper'.")
  top = PAPER_LOW_DATA_MAX_EXAMPLES[dataset]
  return tuple(2 ** i for i in range(top.bit_length()))


def l2_coefficient(*, weight_decay: float, learning_rate: float) -> float:
  """The L2 coefficient c of the loss term (c / 2) ||W||^2 for a grid point.

  SimCLR's Appendix B.8, whose grids these are and which follows Kornblith et al. (2019):
  "We divide these values of weight decay by the learning rate", so c = weight_decay /
  learning_rate (the initial learning rate, before cosine decay). An SGD step then shrinks
  the weights by learning_rate(t) / learning_rate * weight_decay: the grid value itself at
  the start of training, whatever the learning rate.

  Raises:
    ValueError: weight decay > 0 with a learning rate that is not > 0.
  """
  if not weight_decay:
    return 0.0
  if not learning_rate > 0:
    raise ValueError(f"weight_decay={weight_decay} needs a learning rate > 0 (the L2 "
                     f"coefficient is weight_decay / learning_rate); got {learning_rate}.")
  return weight_decay / learning_rate


def batch_norm_momentum(steps_per_epoch: int) -> float:
  """max(1 - 10/s, 0.9) for s steps per epoch: statistics average over about 10 epochs."""
  if steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
  return max(1.0 - 10.0 / steps_per_epoch, 0.9)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return max(1, math.ceil(num_examples / batch_size))


def per_replica_batch_size(global_batch_size: int, num_replicas: int) -> int:
  """The global batch is split evenly across replicas."""
  if global_batch_size % num_replicas:
    raise ValueError(f"--batch_size={global_batch_size} does not split over {num_replicas} "
                     f"replicas; use a multiple of {num_replicas}.")
  return global_batch_size // num_replicas
