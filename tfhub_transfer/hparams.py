"""The paper's protocol as tiny pure functions: grids, schedule lengths, batch-norm momentum.

Each function is checkable against Kornblith et al. (2019), Appendix A, and SimCLR's
Appendix B.8 (which follows it); tests/test_hparams.py checks each one.
"""

import math

import numpy as np

# Step budgets of the paper's protocol (batch size 256).
PAPER_FINETUNE_STEPS = 20_000
PAPER_SCRATCH_STEPS = 40_000
# Quick defaults when no flagfile sets --train_steps: enough for a smoke run to learn.
QUICK_TRAIN_STEPS = 200


def log_grid(low: float, high: float, num: int) -> tuple[float, ...]:
  """`num` log-spaced values from `low` to `high`, rounded to 3 significant digits."""
  return tuple(float(f"{v:.3g}") for v in np.logspace(math.log10(low), math.log10(high), num))


def learning_rate_grid(regime: str) -> tuple[float, ...]:
  """Fine-tuning: 7 values in [1e-4, 1e-1]; from scratch: 7 values in [1e-3, 1]."""
  if regime == "finetune":
    return log_grid(1e-4, 1e-1, 7)
  if regime == "scratch":
    return log_grid(1e-3, 1.0, 7)
  raise ValueError(f"No learning-rate grid for regime {regime!r}: only finetune and scratch "
                   f"train the network.")


def weight_decay_grid(regime: str) -> tuple[float, ...]:
  """7 log-spaced weight decays (finetune [1e-6, 1e-3]; scratch [1e-5, 10^-1.5]) plus none."""
  if regime == "finetune":
    return (0.0,) + log_grid(1e-6, 1e-3, 7)
  if regime == "scratch":
    return (0.0,) + log_grid(1e-5, 10 ** -1.5, 7)
  raise ValueError(f"No weight-decay grid for regime {regime!r}: only finetune and scratch "
                   f"train the network.")


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
