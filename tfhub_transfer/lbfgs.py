"""Full-batch L-BFGS for L2-regularised linear classifiers, in TensorFlow (see `logreg`).

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
"""

import functools
from typing import NamedTuple

import numpy as np
import tensorflow as tf

_MEMORY = 10  # L-BFGS pairs kept, as scipy's (and so sklearn's) default.
_WOLFE_C1, _WOLFE_C2 = 1e-4, 0.9
_MAX_LINE_SEARCH = 20
_EPS = float(np.finfo(np.float32).eps)


class Problem(NamedTuple):
  """Device tensors of one training set."""
  x: tf.Tensor  # Features [N, D], float32.
  y: tf.Tensor  # Targets [N, C], one-hot or multi-hot, float32.
  mean: tf.Tensor  # Feature means [D].
  var: tf.Tensor  # Feature variances [D].


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
def make_solve_fn(multi_label: bool):
  """One traced L-BFGS solver per loss; shapes and l2 vary without retracing."""
  matrix, vector = tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float32)
  scalar = tf.TensorSpec([], tf.float32)

  # autograph=False: its control flow is tf.while_loop and tf.cond already; converting it
  # took half of a process's first fit (1.5 -> 0.7 CPU-s).
  @tf.function(autograph=False,
               input_signature=[Problem(matrix, matrix, vector, vector), matrix, scalar,
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
