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
float32.

The solver: one `tf.function` per fit runs the whole L-BFGS loop (`tf.while_loop`, memory
10 as scipy's default, two-loop recursion). Three things make it fast:
- Along a search direction d the logits move linearly, z(t) = z + t X d, so one matmul gives
  them for every trial step, and the line search (safeguarded Newton on the convex 1-D
  objective, stopping at the strong Wolfe conditions) costs O(NC) per trial: an iteration
  costs two N x D x C matmuls however many trials it takes.
- It optimises over (W, b + mean(x) W), i.e. on centred features, which removes the large
  curvature along the mean of non-negative (ReLU) features; the minimiser is the same, since
  b is not penalised. The starting inverse Hessian is diagonal, 1 / (alpha Var(x_j) + l2 / N)
  (alpha: the mean p (1 - p) at the start of the fit), which evens out feature scales. Both
  cut iterations several-fold; the stopping test still uses the gradient in (W, b).
- The regularisation strength is a tensor, so the 45 fits of a path share one trace.

The paper's protocol (`select_and_refit`): 45 strengths `l2_grid()`, traversed from the
strongest to the weakest, each fit warm-started from the previous solution (strongly
regularised problems are well conditioned and their solutions small, so the path starts
cheap and each solution is a close start for the next); the strength with the best
validation metric wins (ties go to the stronger one); the model is refitted on train +
validation at that strength, warm-started from the train-only solution. Along the weak end
of the path the previous solution is often already within `tol` (the penalty's gradient
shifts by (l2' - l2) W / N, computed without a pass over the data); such fits are skipped.
"""

import dataclasses
import functools
import time
from typing import Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf

DEFAULT_MAX_ITER = 1000
DEFAULT_TOL = 1e-4
_MEMORY = 10  # L-BFGS pairs kept, as scipy's (and so sklearn's) default.
_WOLFE_C1, _WOLFE_C2 = 1e-4, 0.9
_MAX_LINE_SEARCH = 20
_EPS = float(np.finfo(np.float32).eps)


def l2_grid(size: int = 45) -> np.ndarray:
  """The paper's strengths: `size` log-spaced values from 1e-6 to 1e5."""
  return np.logspace(-6.0, 5.0, size)


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
    model: the model refitted on train + validation at `best_l2`.
    l2_values: the strengths tried, strongest first (the traversal order).
    val_scores: validation metric of the train-only fit at each strength.
    fit_seconds: wall time of each train-only fit (including validation scoring).
    iterations: L-BFGS iterations of each train-only fit (0 where the previous solution was
      already within tol).
    refit_seconds: wall time of the final refit.
  """
  best_l2: float
  model: LinearModel
  l2_values: tuple[float, ...]
  val_scores: tuple[float, ...]
  fit_seconds: tuple[float, ...]
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
    if labels.shape != (features.shape[0], num_classes) or not np.isin(labels, (0, 1)).all():
      raise ValueError(f"Multi-label fits need {{0, 1}} labels of shape "
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


class _Problem(NamedTuple):
  """Device tensors of one training set."""
  x: tf.Tensor  # Features [N, D], float32.
  y: tf.Tensor  # Targets [N, C], one-hot or multi-hot, float32.
  mean: tf.Tensor  # Feature means [D].
  var: tf.Tensor  # Feature variances [D].


def _to_problem(features, labels, *, multi_label, num_classes):
  x = tf.cast(tf.convert_to_tensor(features), tf.float32)
  y = (tf.convert_to_tensor(labels, tf.float32) if multi_label
       else tf.one_hot(labels, num_classes, dtype=tf.float32))
  return _Problem(x, y, *tf.nn.moments(x, axes=[0]))


def _initial_params(init, num_features, num_classes):
  if init is None:
    return tf.zeros([num_features + 1, num_classes], tf.float32)
  expected = (num_features, num_classes)
  if init.weights.shape != expected or init.bias.shape != expected[1:]:
    raise ValueError(f"init has weights {init.weights.shape} and bias {init.bias.shape}; this "
                     f"fit needs weights {expected} and bias {expected[1:]}.")
  return tf.constant(np.concatenate([init.weights, init.bias[None]], 0), tf.float32)


def _vdot(a, b):
  return tf.reduce_sum(a * b)


def _loss_and_probs(z, y, multi_label):
  """Per-example loss [N] and probabilities [N, C] at logits `z`."""
  if multi_label:
    return (tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z), 1),
            tf.sigmoid(z))
  log_p = tf.nn.log_softmax(z)
  return -tf.reduce_sum(y * log_p, 1), tf.exp(log_p)


def _make_line_fn(z, v, y, params, direction, lam, multi_label):
  """t -> (phi, phi', phi'') of the objective / N at `params + t * direction`, in O(NC):
  the logits there are `z + t * v`, with `v` the logits of the direction (bias included)."""
  n = tf.cast(tf.shape(z)[0], tf.float32)
  w, d = params[:-1], direction[:-1]  # The bias row is not penalised.
  ww, wd, dd = _vdot(w, w), _vdot(w, d), _vdot(d, d)

  def line_fn(t):
    loss, p = _loss_and_probs(z + t * v, y, multi_label)
    phi = tf.reduce_sum(loss) / n + 0.5 * lam * (ww + t * (2.0 * wd + t * dd))
    dphi = _vdot(p - y, v) / n + lam * (wd + t * dd)
    if multi_label:
      curvature = _vdot(p * (1.0 - p), v * v)
    else:  # v' (diag(p) - p p') v per example.
      curvature = _vdot(p, v * v) - tf.reduce_sum(tf.square(tf.reduce_sum(p * v, 1)))
    return phi, dphi, curvature / n + lam * dd
  return line_fn


def _line_search(line_fn, t, phi0, dphi0):
  """A step meeting the strong Wolfe conditions along a descent direction of the convex
  phi, found by safeguarded Newton on phi'; failing that, the largest tried step with
  phi' < 0 (a sure decrease), or 0. Armijo gets float32 rounding slack so that the search
  still works once objective differences fall below float32 resolution."""
  slack = 4.0 * _EPS * tf.abs(phi0)

  def body(i, t, lo, hi, done):
    phi, dphi, d2phi = line_fn(t)
    done = ((phi <= phi0 + _WOLFE_C1 * t * dphi0 + slack)
            & (tf.abs(dphi) <= -_WOLFE_C2 * dphi0))
    lo, hi = tf.where(dphi < 0, t, lo), tf.where(dphi < 0, hi, t)
    newton = t - dphi / d2phi
    margin = 0.01 * (hi - lo)
    inside = (newton > lo + margin) & (newton < hi - margin)
    t_next = tf.where(tf.math.is_inf(hi), tf.minimum(newton, 10.0 * t),
                      tf.where(inside, newton, 0.5 * (lo + hi)))
    return i + 1, tf.where(done, t, t_next), lo, hi, done

  _, t, lo, _, done = tf.while_loop(
      lambda i, t, lo, hi, done: (i < _MAX_LINE_SEARCH) & ~done, body,
      (0, t, tf.constant(0.0), tf.constant(np.inf, tf.float32), tf.constant(False)))
  return tf.where(done, t, lo)


def _two_loop(grad, memory, gamma, precond):
  """-H grad, H the L-BFGS inverse Hessian of the stored (s, y, rho) pairs (newest first)
  over the diagonal `gamma * precond`; empty or reset slots have rho = 0 and drop out."""
  q, alphas = grad, []
  for s, y, rho in memory:
    alphas.append(rho * _vdot(s, q))
    q -= alphas[-1] * y
  r = gamma * precond * q
  for (s, y, rho), alpha in reversed(list(zip(memory, alphas))):
    r += (alpha - rho * _vdot(y, r)) * s
  return -r


def _preconditioner(var, probs, lam):
  """Diagonal inverse-Hessian guess [D + 1, 1] for (weights, centred bias): the Hessian of
  the mean loss is about alpha Cov(x) (+ lam on the weights), alpha the mean p (1 - p).
  Floored at 1e-6 of the largest curvature, so constant features stay finite at l2 = 0."""
  alpha = tf.reduce_mean(probs * (1.0 - probs))
  curvature = tf.concat([alpha * var + lam, [alpha]], 0)
  return 1.0 / tf.maximum(curvature, 1e-6 * tf.reduce_max(curvature) + 1e-30)[:, None]


@functools.lru_cache(maxsize=None)
def _make_solve_fn(multi_label: bool):
  """One traced L-BFGS solver per loss; shapes and l2 vary without retracing."""
  matrix, vector = tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float32)
  scalar = tf.TensorSpec([], tf.float32)

  @tf.function(input_signature=[_Problem(matrix, matrix, vector, vector), matrix, scalar,
                                tf.TensorSpec([], tf.int32), scalar])
  def solve_fn(problem, params, l2, max_iter, tol):
    x, y, mean, var = problem
    n = tf.cast(tf.shape(x)[0], tf.float32)
    lam = l2 / n
    mean_col = mean[:, None]
    penalised = tf.concat([tf.ones_like(params[:-1]), tf.zeros_like(params[-1:])], 0)

    # Parameters are (W, b + mean W): logits are (x - mean) W + (b + mean W).
    def objective_grad_probs(params, z):
      loss, probs = _loss_and_probs(z, y, multi_label)
      residual = (probs - y) / n
      residual_sum = tf.reduce_sum(residual, 0, keepdims=True)
      grad = tf.concat([tf.matmul(x, residual, transpose_a=True) - mean_col * residual_sum,
                        residual_sum], 0)
      weights = penalised * params
      return (tf.reduce_sum(loss) / n + 0.5 * lam * _vdot(weights, weights),
              grad + lam * weights, probs)

    def original_grad(grad):  # In (W, b), where sklearn's tol applies.
      return tf.concat([grad[:-1] + mean_col * grad[-1:], grad[-1:]], 0)

    def body(k, params, z, phi, grad, memory, count, gamma, failed):
      direction = _two_loop(grad, memory, gamma, precond)
      use_memory = (count > 0) & (_vdot(grad, direction) < 0)
      direction = tf.where(use_memory, direction, -precond * grad)
      v = tf.matmul(x, direction[:-1]) + (
          direction[-1] - tf.reduce_sum(mean_col * direction[:-1], 0))
      line_fn = _make_line_fn(z, v, y, params, direction, lam, multi_label)
      dphi0 = _vdot(grad, direction)
      t0 = tf.cond(use_memory, lambda: tf.constant(1.0),
                   lambda: -dphi0 / line_fn(tf.constant(0.0))[2])  # Newton step from 0.
      t = _line_search(line_fn, t0, phi, dphi0)
      params_new, z_new = params + t * direction, z + t * v
      phi_new, grad_new, _ = objective_grad_probs(params_new, z_new)
      s, y_diff = t * direction, grad_new - grad
      sy, yy = _vdot(s, y_diff), _vdot(y_diff, precond * y_diff)
      # A failed step or a non-descent direction clears the memory (steepest descent next).
      keep = (t > 0) & use_memory
      memory = tuple((s_old, y_old, tf.where(keep, rho, 0.0)) for s_old, y_old, rho in memory)
      count = tf.where(keep, count, 0)
      # Push the new pair in front (dropping the oldest) when its curvature is positive.
      memory, count, gamma = tf.cond(
          sy > _EPS * yy, lambda: (((s, y_diff, 1.0 / sy),) + memory[:-1], count + 1, sy / yy),
          lambda: (memory, count, gamma))
      return (k + 1, params_new, z_new, phi_new, grad_new, memory, count, gamma,
              (t <= 0) & ~use_memory)

    def cond(k, params, z, phi, grad, memory, count, gamma, failed):
      return (k < max_iter) & (tf.reduce_max(tf.abs(original_grad(grad))) > tol) & ~failed

    z = tf.matmul(x, params[:-1]) + params[-1]
    params = tf.concat([params[:-1], params[-1:] + tf.matmul(mean[None], params[:-1])], 0)
    phi, grad, probs = objective_grad_probs(params, z)
    precond = _preconditioner(var, probs, lam)
    empty = (tf.zeros_like(params), tf.zeros_like(params), tf.constant(0.0))
    k, params, _, _, grad, *_ = tf.while_loop(
        cond, body, (0, params, z, phi, grad, (empty,) * _MEMORY, 0, tf.constant(1.0),
                     tf.constant(False)))
    params = tf.concat([params[:-1], params[-1:] - tf.matmul(mean[None], params[:-1])], 0)
    return params, k, original_grad(grad)

  return solve_fn


def _fit_problem(problem, *, l2, multi_label, init, max_iter, tol):
  """Runs the solver; returns the model and its gradient [D + 1, C] (of objective / N)."""
  if not (np.isfinite(l2) and l2 >= 0):
    raise ValueError(f"l2 must be a finite number >= 0 (sklearn C = 1 / l2), got {l2}.")
  if max_iter < 0 or not tol >= 0:
    raise ValueError(f"Need max_iter >= 0 and tol >= 0; got max_iter={max_iter}, tol={tol}.")
  params, iterations, grad = _make_solve_fn(multi_label)(
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
    labels: int [N] in [0, num_classes), or {0, 1} [N, num_classes] if `multi_label`.
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
                     tol: float = DEFAULT_TOL) -> SelectionResult:
  """The paper's protocol: warm-started path on train, pick on validation, refit on both.

  Args:
    train_x, train_y, val_x, val_y: features and labels, as in `fit`.
    multi_label: one sigmoid classifier per class instead of a softmax.
    num_classes: C.
    metric_fn: `metric_fn(labels, scores) -> float`, higher is better (see `metrics`).
    l2_values: strengths to try (any order; traversed strongest first); `l2_grid()` if None.
    max_iter, tol: as in `fit`, for every fit.

  Returns:
    A `SelectionResult`; ties in the validation metric go to the stronger regularisation.
  """
  train_x, train_y = _check_inputs(train_x, train_y, multi_label=multi_label,
                                   num_classes=num_classes)
  val_x, val_y = _check_inputs(val_x, val_y, multi_label=multi_label,
                               num_classes=num_classes)
  l2_values = l2_grid() if l2_values is None else np.asarray(l2_values, np.float64)
  if l2_values.ndim != 1 or l2_values.size == 0:
    raise ValueError(f"l2_values must be a non-empty 1-D list, got shape {l2_values.shape}.")
  order = tuple(float(v) for v in np.sort(l2_values)[::-1])
  problem = _to_problem(train_x, train_y, multi_label=multi_label, num_classes=num_classes)
  val_features = tf.cast(tf.convert_to_tensor(val_x), tf.float32)  # On the device, once.
  models, scores, seconds = [], [], []
  for l2 in order:
    start = time.perf_counter()
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
      val_scores = tf.matmul(val_features, model.weights) + model.bias
      scores.append(float(metric_fn(val_y, val_scores.numpy())))
    models.append(model)
    seconds.append(time.perf_counter() - start)
  best = int(np.argmax(scores))  # First maximum along the path: the strongest tied value.

  start = time.perf_counter()
  model = fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]),
              l2=order[best], multi_label=multi_label, num_classes=num_classes,
              init=models[best], max_iter=max_iter, tol=tol)
  return SelectionResult(best_l2=order[best], model=model, l2_values=order,
                         val_scores=tuple(scores), fit_seconds=tuple(seconds),
                         iterations=tuple(m.iterations for m in models),
                         refit_seconds=time.perf_counter() - start)
