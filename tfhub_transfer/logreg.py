"""The logistic-regression regime's solver: L2-regularised linear classifiers on frozen
features, fitted full-batch with L-BFGS written in TensorFlow (so it runs on a GPU when one
is present).

Objective, in scikit-learn's convention (`l2 = 1 / C` of `sklearn LogisticRegression`):

    sum_i CE(x_i W + b, y_i) + (l2 / 2) * ||W||^2,

with CE the softmax cross-entropy (multinomial; also for two classes, unlike sklearn's binary
case) or, for multi-label data, the sum over classes of the sigmoid cross-entropy (one binary
classifier per class, fitted jointly: the problems are independent, so the minimiser is that
of C separate fits). The intercept `b` is not penalised. Like sklearn, the solver minimises
the objective divided by N, and `tol` bounds the largest absolute entry of that gradient
(sklearn's lbfgs `tol`, scipy's `gtol`).

Features are used as they come (no standardisation: the paper uses raw penultimate
features), cast to float32 on the device; float16 features are accepted. All arithmetic is
float32, TF32 included: on Ampere and later GPUs TensorFlow runs float32 matmuls in TF32 (a
10-bit mantissa) by default, so the solve turns it off for its duration (`devices.tf32_off`;
the solver is launch-bound, the cost is small) and its gradient meets `tol` as on a CPU.

The solver (`lbfgs.py`) runs the whole L-BFGS loop of a fit in one `tf.function`.

The paper's protocol (`select_and_refit`): 45 strengths `protocol.l2_grid()`, traversed from
the strongest to the weakest, each fit warm-started from the previous solution (strongly
regularised problems are well conditioned and their solutions small, so the path starts
cheap and each solution is a close start for the next); the strength with the best
validation metric wins (ties go to the stronger one); the model is refitted on train +
validation at that strength, warm-started from the train-only solution. Along the weak end
of the path the previous solution is often already within `tol` (the penalty's gradient
shifts by (l2' - l2) W / N, computed without a pass over the data); such fits are skipped.
"""

import dataclasses
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfhub_transfer import devices
from tfhub_transfer import lbfgs
from tfhub_transfer import protocol

DEFAULT_MAX_ITER = 1000
DEFAULT_TOL = 1e-4


@dataclasses.dataclass(frozen=True)
class LinearModel:
  """A fitted linear classifier: scores = features @ weights + bias.

  Attributes:
    weights: [D, C] float32.
    bias: [C] float32.
    l2: the regularisation strength it was fitted with (sklearn `C = 1 / l2`).
    multi_label: sigmoid per class (True) or softmax (False).
    iterations: L-BFGS iterations run.
    converged: whether the largest gradient entry fell to `tol` within `max_iter`.
    max_abs_grad: largest absolute entry of the final gradient of the mean objective.
  """
  weights: np.ndarray
  bias: np.ndarray
  l2: float
  multi_label: bool
  iterations: int
  converged: bool
  max_abs_grad: float


@dataclasses.dataclass(frozen=True)
class SelectionResult:
  """The outcome of `select_and_refit`; per-strength tuples follow `l2_values`' order.

  Attributes:
    best_l2: the selected strength.
    model: the model refitted on train + validation at `best_l2` (with `refit=False`, the
      train-only fit at `best_l2`, as `chosen_fit`).
    chosen_fit: the train-only fit at `best_l2`, the one whose validation metric chose it
      (its `converged` and `iterations` say whether that choice rests on a converged fit).
    l2_values: the strengths tried, strongest first (the traversal order).
    val_scores: validation metric of the train-only fit at each strength.
    iterations: L-BFGS iterations of each train-only fit (0 where the previous solution was
      already within tol).
    refit_seconds: wall time of the final refit (0 without one).
  """
  best_l2: float
  model: LinearModel
  chosen_fit: LinearModel
  l2_values: tuple[float, ...]
  val_scores: tuple[float, ...]
  iterations: tuple[int, ...]
  refit_seconds: float


def _check_inputs(features, labels, *, multi_label, num_classes):
  """Validates shapes and values; returns (features, labels) as numpy arrays."""
  features, labels = np.asarray(features), np.asarray(labels)
  if features.ndim != 2 or features.shape[0] == 0:
    raise ValueError(f"Expected features [N, D] with N >= 1, got shape {features.shape}.")
  if not np.isfinite(features).all():
    raise ValueError(f"Features contain {np.size(features) - np.isfinite(features).sum()} "
                     f"NaN or infinite values; fix the feature extraction (or drop those "
                     f"rows) before fitting.")
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
  if multi_label:
    if (labels.shape != (features.shape[0], num_classes)
        or not np.isin(labels, (-1, 0, 1)).all()):
      raise ValueError(f"Multi-label fits need {{-1, 0, 1}} labels of shape "
                       f"{(features.shape[0], num_classes)}; got shape {labels.shape} with "
                       f"values {np.unique(labels)[:10].tolist()}.")
  else:
    if labels.shape != features.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"Single-label fits need integer labels of shape "
                       f"{features.shape[:1]}; got {labels.dtype} of shape {labels.shape}.")
    if labels.min() < 0 or labels.max() >= num_classes:
      raise ValueError(f"Labels must lie in [0, {num_classes}); got min {labels.min()}, max "
                       f"{labels.max()}. Pass the right num_classes or remap the labels.")
  return features, labels


def _to_problem(features, labels, *, multi_label, num_classes):
  x = tf.cast(tf.convert_to_tensor(features), tf.float32)
  # Multi-label -1 (ignored by the metric, e.g. VOC's difficult) is a negative in the fit.
  y = (tf.maximum(tf.convert_to_tensor(labels, tf.float32), 0.0) if multi_label
       else tf.one_hot(labels, num_classes, dtype=tf.float32))
  return lbfgs.Problem(x, y, *tf.nn.moments(x, axes=[0]))


def _initial_params(init, num_features, num_classes):
  if init is None:
    return tf.zeros([num_features + 1, num_classes], tf.float32)
  expected = (num_features, num_classes)
  if init.weights.shape != expected or init.bias.shape != expected[1:]:
    raise ValueError(f"init has weights {init.weights.shape} and bias {init.bias.shape}; this "
                     f"fit needs weights {expected} and bias {expected[1:]}.")
  return tf.constant(np.concatenate([init.weights, init.bias[None]], 0), tf.float32)


def _fit_problem(problem, *, l2, multi_label, init, max_iter, tol):
  """Runs the solver; returns the model and its gradient [D + 1, C] (of objective / N)."""
  if not (np.isfinite(l2) and l2 >= 0):
    raise ValueError(f"l2 must be a finite number >= 0 (sklearn C = 1 / l2), got {l2}.")
  if max_iter < 0 or not tol >= 0:
    raise ValueError(f"Need max_iter >= 0 and tol >= 0; got max_iter={max_iter}, tol={tol}.")
  with devices.tf32_off():
    params, iterations, grad = lbfgs.make_solve_fn(multi_label)(
        problem, _initial_params(init, problem.x.shape[1], problem.y.shape[1]),
        tf.constant(l2, tf.float32), tf.constant(max_iter, tf.int32),
        tf.constant(tol, tf.float32))
  params, grad = params.numpy(), grad.numpy()
  max_abs_grad = float(np.abs(grad).max())
  return LinearModel(weights=params[:-1], bias=params[-1], l2=float(l2),
                     multi_label=multi_label, iterations=int(iterations),
                     converged=max_abs_grad <= tol, max_abs_grad=max_abs_grad), grad


def _at_strength(model, grad, l2, *, num_examples, tol):
  """`model` and its gradient taken at strength `l2`: only the penalty's term changes."""
  grad = grad + (l2 - model.l2) / num_examples * np.concatenate(
      [model.weights, np.zeros_like(model.bias[None])])
  max_abs_grad = float(np.abs(grad).max())
  return dataclasses.replace(model, l2=l2, iterations=0, converged=max_abs_grad <= tol,
                             max_abs_grad=max_abs_grad), grad


def fit(features: np.ndarray, labels: np.ndarray, *, l2: float, multi_label: bool,
        num_classes: int, init: Optional[LinearModel] = None,
        max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL) -> LinearModel:
  """Fits one L2-regularised logistic regression, full batch, with L-BFGS.

  Args:
    features: [N, D] float16 or float32.
    labels: int [N] in [0, num_classes), or [N, num_classes] if `multi_label`: 1 positive,
      0 negative, -1 an entry the metric ignores (fitted as a negative).
    l2: regularisation strength, `sum_i CE_i + (l2 / 2) ||W||^2` (sklearn `C = 1 / l2`).
    multi_label: one sigmoid classifier per class instead of a softmax.
    num_classes: C.
    init: a model to start from (warm start); zeros when None.
    max_iter: most L-BFGS iterations.
    tol: stop when every entry of the gradient of the objective / N is within +-tol.

  Returns:
    The fitted `LinearModel` (`converged` says whether `tol` was reached).

  Raises:
    ValueError: bad shapes, labels out of range, non-finite features, or bad l2/init.
  """
  features, labels = _check_inputs(features, labels, multi_label=multi_label,
                                   num_classes=num_classes)
  problem = _to_problem(features, labels, multi_label=multi_label, num_classes=num_classes)
  return _fit_problem(problem, l2=l2, multi_label=multi_label, init=init, max_iter=max_iter,
                      tol=tol)[0]


def predict_scores(model: LinearModel, features: np.ndarray) -> np.ndarray:
  """Logits [N, C] (float32) of `model` on `features` [N, D]."""
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[1] != model.weights.shape[0]:
    raise ValueError(f"Expected features [N, {model.weights.shape[0]}], got shape "
                     f"{features.shape}.")
  return features.astype(np.float32) @ model.weights + model.bias


def select_and_refit(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                     val_y: np.ndarray, *, multi_label: bool, num_classes: int,
                     metric_fn: Callable[[np.ndarray, np.ndarray], float],
                     l2_values: Optional[np.ndarray] = None,
                     max_iter: int = DEFAULT_MAX_ITER,
                     tol: float = DEFAULT_TOL, refit: bool = True) -> SelectionResult:
  """The paper's protocol: warm-started path on train, pick on validation, refit on both.

  Args:
    train_x, train_y, val_x, val_y: features and labels, as in `fit`.
    multi_label: one sigmoid classifier per class instead of a softmax.
    num_classes: C.
    metric_fn: `metric_fn(labels, scores) -> float`, higher is better (see `metrics`).
    l2_values: strengths to try (any order; traversed strongest first); `protocol.l2_grid()`
      if None.
    max_iter, tol: as in `fit`, for every fit.
    refit: refit on train + validation; False keeps the path's model fitted on train alone
      (a low-data cell, whose final model must not see the validation images).

  Returns:
    A `SelectionResult`; ties in the validation metric go to the stronger regularisation.
  """
  train_x, train_y = _check_inputs(train_x, train_y, multi_label=multi_label,
                                   num_classes=num_classes)
  val_x, val_y = _check_inputs(val_x, val_y, multi_label=multi_label,
                               num_classes=num_classes)
  l2_values = protocol.l2_grid() if l2_values is None else np.asarray(l2_values, np.float64)
  if l2_values.ndim != 1 or l2_values.size == 0:
    raise ValueError(f"l2_values must be a non-empty 1-D list, got shape {l2_values.shape}.")
  order = tuple(float(v) for v in np.sort(l2_values)[::-1])
  problem = _to_problem(train_x, train_y, multi_label=multi_label, num_classes=num_classes)
  val_features = tf.cast(tf.convert_to_tensor(val_x), tf.float32)  # On the device, once.
  models, scores = [], []
  grad = None  # The previous strength's gradient (none before the first fit).
  for l2 in order:
    # Where the previous solution is already within tol at this strength, the solver would
    # stop at once: take it (and its score) without the call.
    model, grad = (_at_strength(models[-1], grad, l2, num_examples=len(train_x), tol=tol)
                   if models else (None, None))
    if model is not None and model.converged:
      scores.append(scores[-1])
    else:
      model, grad = _fit_problem(problem, l2=l2, multi_label=multi_label,
                                 init=models[-1] if models else None, max_iter=max_iter,
                                 tol=tol)
      with devices.tf32_off():
        val_scores = tf.matmul(val_features, model.weights) + model.bias
      scores.append(float(metric_fn(val_y, val_scores.numpy())))
    models.append(model)
  best = int(np.argmax(scores))  # First maximum along the path: the strongest tied value.
  if not refit:
    return SelectionResult(best_l2=order[best], model=models[best], chosen_fit=models[best],
                           l2_values=order, val_scores=tuple(scores),
                           iterations=tuple(m.iterations for m in models), refit_seconds=0.0)

  start = time.perf_counter()
  # Both halves are checked and already on the device: refit on them without a new copy.
  everything = _to_problem(tf.concat([problem.x, val_features], 0),
                           np.concatenate([train_y, val_y]), multi_label=multi_label,
                           num_classes=num_classes)
  model, _ = _fit_problem(everything, l2=order[best], multi_label=multi_label,
                          init=models[best], max_iter=max_iter, tol=tol)
  return SelectionResult(best_l2=order[best], model=model, chosen_fit=models[best],
                         l2_values=order,
                         val_scores=tuple(scores),
                         iterations=tuple(m.iterations for m in models),
                         refit_seconds=time.perf_counter() - start)
