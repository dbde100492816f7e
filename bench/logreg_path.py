"""Figure 2: the project's L2 path (`logreg.select_and_refit`) against scikit-learn's
L-BFGS logistic regression traversing the same 45 strengths on the same split, on synthetic
features of a dataset's size or on features a user passes (`--logreg_features`)."""

import os
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from bench import data
from bench import harness
from bench.profiles import SINGLE_LABEL_METRICS
from bench.profiles import LogregCase
from bench.profiles import Profile
from tfhub_transfer import logreg
from tfhub_transfer import metrics
from tfhub_transfer import protocol
from tfhub_transfer.data import splits

GRID_SIZE = 45
VAL_FRACTION = 0.2
SYNTHETIC = ("class-structured synthetic features (class centres in a 64-d latent space + "
             "noise, sparse non-negative projection, ReLU: about half zeros, like pooled "
             "post-ReLU features)")


def cases_from_files(paths: list[str], metric: str) -> tuple[LogregCase, ...]:
  """Figure 2's cases (2a, 2b, ...) on the features stored at `paths` (`data.load_features`).

  Raises:
    ValueError: an unreadable file, a metric that is not single-label, or a class with fewer
      than 2 examples (the stratified validation split needs them).
  """
  if metric not in SINGLE_LABEL_METRICS:
    raise ValueError(f"--logreg_metric={metric!r}: figure 2 compares single-label "
                     f"classifiers; use {' or '.join(SINGLE_LABEL_METRICS)}.")
  cases = []
  for letter, path in zip("abcdefghijklmnopqrstuvwxyz", paths):
    x, y = data.load_features(path)
    counts = np.bincount(y)
    if counts.min() < 2:
      raise ValueError(f"{path}: class {int(np.argmin(counts))} has {counts.min()} example(s); "
                       f"the validation split needs at least 2 per class. Drop that class "
                       f"or pass more examples.")
    cases.append(LogregCase(f"2{letter}", os.path.basename(os.path.normpath(path)), len(y),
                            x.shape[1], len(counts), metric,
                            f"features and labels from {path}", features_path=path))
  return tuple(cases)


def sklearn_select_and_refit(train_x, train_y, val_x, val_y, *, l2_values, metric_fn,
                             max_iter=logreg.DEFAULT_MAX_ITER, tol=logreg.DEFAULT_TOL):
  """The baseline: the same protocol with scikit-learn, as a user would write it.

  Strongest to weakest (C = 1 / l2), each fit warm-started from the previous one
  (`warm_start=True`), scored on validation; ties go to the stronger strength; refit on
  train + val at the selected strength, warm-started from that strength's solution.

  Returns:
    (selected l2, validation score at it, the refitted classifier, iterations per fit).
  """
  order = sorted((float(v) for v in l2_values), reverse=True)
  classifier = LogisticRegression(solver="lbfgs", warm_start=True, tol=tol, max_iter=max_iter)
  scores, solutions, iterations = [], [], []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    for l2 in order:
      classifier.set_params(C=1.0 / l2)
      classifier.fit(train_x, train_y)
      scores.append(float(metric_fn(val_y, classifier.decision_function(val_x))))
      solutions.append((classifier.coef_.copy(), classifier.intercept_.copy()))
      iterations.append(int(classifier.n_iter_.max()))
    best = int(np.argmax(scores))
    classifier.set_params(C=1.0 / order[best])
    classifier.coef_, classifier.intercept_ = solutions[best]
    classifier.fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]))
  return order[best], scores[best], classifier, iterations


def figure_logreg(profile: Profile, case: LogregCase) -> harness.Figure:
  """One feature set: time of the whole path + refit, both sides, and selected accuracy."""
  if case.features_path:
    x, y = data.load_features(case.features_path)
  else:
    x, y = data.make_class_features(case.num_examples, case.dim, case.num_classes, seed=0)
  is_val = splits.stratified_split(y, fraction=VAL_FRACTION, seed=0)
  train_x, train_y, val_x, val_y = x[~is_val], y[~is_val], x[is_val], y[is_val]
  metric_fn = metrics.get_metric_fn(case.metric)
  grid = protocol.l2_grid(GRID_SIZE)
  outcome = {}

  def warm_up():  # Traces the solver once per process; shapes vary without retracing.
    logreg.select_and_refit(train_x[:50], train_y[:50], val_x[:50], val_y[:50],
                            multi_label=False, num_classes=case.num_classes,
                            metric_fn=metric_fn, l2_values=grid[:2])

  def ours():
    outcome["ours"] = logreg.select_and_refit(
        train_x, train_y, val_x, val_y, multi_label=False, num_classes=case.num_classes,
        metric_fn=metric_fn, l2_values=grid)

  def scikit_learn():
    outcome["sklearn"] = sklearn_select_and_refit(train_x, train_y, val_x, val_y,
                                                  l2_values=grid, metric_fn=metric_fn)

  trace_s, _ = harness.timed(warm_up)
  ours_s, sklearn_s = harness.interleave(
      [ours, scikit_learn], [profile.logreg_repetitions, profile.sklearn_repetitions],
      warmup=False)
  selection = outcome["ours"]
  ours_val = selection.val_scores[selection.l2_values.index(selection.best_l2)]
  sk_l2, sk_val, _, sk_iterations = outcome["sklearn"]
  return harness.Figure(
      key=case.key,
      title=(f"45-value L2 path + refit, {case.name} "
             f"{'features' if case.features_path else 'size'}: speed-up over scikit-learn"),
      measured=harness.Measurement(
          f"logreg.select_and_refit, {len(train_y):,} train / {len(val_y):,} val x "
          f"{case.dim:,}, {case.num_classes} classes", "s", ours_s),
      baseline=harness.Measurement(
          "sklearn LogisticRegression(solver='lbfgs', warm_start=True), same grid, tol, "
          "max_iter and split, + refit", "s", sklearn_s),
      ratio_of=harness.BASELINE_OVER_MEASURED, goal=">= 5",
      checks=[harness.Check(
          f"|selected validation {case.metric}, ours - scikit-learn| (points)",
          100 * abs(ours_val - sk_val), "<= 0.5")],
      setup=(f"{case.note}{'' if case.features_path else '; ' + SYNTHETIC}; "
             f"{len(y):,} x {x.shape[1]:,}, {case.num_classes} classes, 20% stratified "
             f"validation; l2_grid(45) strongest first, tol "
             f"{logreg.DEFAULT_TOL:g}, max_iter {logreg.DEFAULT_MAX_ITER}. Ours: selected l2 "
             f"{selection.best_l2:.3g}, val {case.metric} {100 * ours_val:.2f}%, "
             f"{sum(selection.iterations)} L-BFGS iterations over the path; untimed warm-up "
             f"{trace_s:.1f} s (traces the solver in a process's first call). scikit-learn: "
             f"selected l2 {sk_l2:.3g}, val {100 * sk_val:.2f}%, {sum(sk_iterations)} "
             f"iterations"))
