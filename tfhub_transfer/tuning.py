"""Hyperparameter selection for `finetune`/`scratch` with keras-tuner.

The search space is the paper's learning rate x weight decay grid; the objective is the
dataset's own validation metric (top-1, mean per-class accuracy or 11-point mAP), computed on
the held-out validation split after each trial's full step budget. The tuner's state lives in
the workdir, so an interrupted search resumes, and keras-tuner's distributed mode
(KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT) spreads trials over
processes and hosts with no extra code path here, but one: the oracle's server refuses calls
without the search's secret (`oracle_auth`).
"""

import dataclasses
import os
import time
from typing import Callable, Optional

from absl import logging
import keras_tuner as kt
from keras_tuner.src.distribute import utils as dist_utils

from tfhub_transfer import faults
from tfhub_transfer import oracle_auth
from tfhub_transfer import progress
from tfhub_transfer import training
from tfhub_transfer.config import TUNERS
from tfhub_transfer.config import tuner_max_trials

OBJECTIVE = "val_metric"

# (trial_id, hparams, val_metric or None, status, error or None) -> None
RecordTrialFn = Callable[[str, dict, Optional[float], str, Optional[str]], None]


def is_tuner_worker() -> bool:
  """True in a keras-tuner distributed worker (any process that is not the chief)."""
  return ("KERASTUNER_ORACLE_IP" in os.environ
          and os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief")


class TransferHyperModel(kt.HyperModel):
  """Trains a `TransferHead` per (learning rate, weight decay), scores validation.

  Args:
    model_fn: (weight_decay=, learning_rate=) -> a compiled `TransferHead` at its initial
      state for that trial (`cell_model.CellModel.get`: the cell's one model, reset; the L2
      coefficient it applies is weight_decay / learning_rate). keras-tuner also calls it
      once when it reads the search space.
    learning_rates: grid values.
    weight_decays: grid values.
    setup: the step budget shared by all trials.
    train_data: first_batch -> repeated training batches from that batch on (or one
      repeated dataset: see `training.train`), made after the trial is seeded.
    val_data: validation batches (finite).
    metric_fn: (labels, logits) -> the dataset's metric.
    backup_root: per-trial `BackupAndRestore` directories go under it.
    record_trial_fn: called once per finished or failed trial (results store).
    verbose: Keras progress-bar verbosity (None: bars on a terminal, lines in a log).
    seed: the cell's seed; each trial is seeded from it and its hyperparameters alone
      (`training.seed_trial`), so a trial scores the same whatever ran before it.
  """

  def __init__(self, *, model_fn, learning_rates, weight_decays,
               setup: training.TrainSetup, train_data, val_data, metric_fn,
               backup_root: str, record_trial_fn: Optional[RecordTrialFn] = None,
               verbose: Optional[int] = None, seed: int = 0):
    super().__init__(name="transfer_head", tunable=True)
    self.model_fn = model_fn
    self.learning_rates = list(learning_rates)
    self.weight_decays = list(weight_decays)
    self.setup = setup
    self.train_data = train_data
    self.val_data = val_data
    self.metric_fn = metric_fn
    self.backup_root = backup_root
    self.record_trial_fn = record_trial_fn
    self.verbose = verbose
    self.seed = seed

  def build(self, hp):
    learning_rate = hp.Choice("learning_rate", self.learning_rates)
    weight_decay = hp.Choice("weight_decay", self.weight_decays)
    training.seed_trial(self.seed, hp.values)
    return self.model_fn(weight_decay=weight_decay, learning_rate=learning_rate)

  def fit(self, hp, model, *args, trial_id: str = "", **kwargs):
    # The tuner's own callbacks (best-epoch checkpoints of a Keras-logged objective) do not
    # apply: the objective is computed after training, on the dataset's own metric.
    del args, kwargs
    values = dict(hp.values)
    name = training.trial_name(values)
    setup = self.setup
    if setup.log_dir:
      setup = dataclasses.replace(setup, log_dir=os.path.join(setup.log_dir, name))
    logging.info("Trial %s %s: training %d steps.", trial_id, values, setup.train_steps)
    try:
      training.train(model, self.train_data, setup,
                     backup_dir=os.path.join(self.backup_root, name), verbose=self.verbose)
      value = training.evaluate(model, self.val_data, self.metric_fn)
    except training.TrainingDiverged as e:
      logging.warning("Trial %s %s failed: %s", trial_id, values, e)
      self._record(trial_id, values, None, "failed", str(e))
      raise kt.errors.FailedTrialError(str(e)) from e
    logging.info("Trial %s %s: validation %s = %.4f", trial_id, values, OBJECTIVE, value)
    self._record(trial_id, values, value, "ok", None)
    return {OBJECTIVE: value}

  def _record(self, trial_id, values, value, status, error):
    if self.record_trial_fn is not None:
      self.record_trial_fn(trial_id, values, value, status, error)


class ResumableGridSearchOracle(kt.oracles.GridSearchOracle):
  """keras-tuner's grid oracle, with its walk through the grid kept in the saved state.

  keras-tuner 1.4 keeps the grid order of the trials (`_ordered_ids`) and the trials whose
  successors are still to be generated (`_populate_next`) in memory only, so a search
  reloaded from its directory fails on its next trial (KeyError in `populate_space`). Both
  are saved and restored here, so a killed search resumes. Without them, a search reloaded
  between trials ends early: keras-tuner 1.4.8 reloaded after 2 points of a 6-point grid
  answers STOPPED (tests/test_experiment.py, ResumableGridTest).
  """

  def get_state(self):
    state = super().get_state()
    walk = self._ordered_ids
    state["grid_walk"] = {
        "memory": list(walk._memory),  # pylint: disable=protected-access
        # (index, next index) pairs; the list head is keyed by None.
        "next": [[i, j] for i, j in walk._next_index.items()  # pylint: disable=protected-access
                 if j is not None],
        "last": walk._last_index,  # pylint: disable=protected-access
        "populate_next": list(self._populate_next),
    }
    return state

  def set_state(self, state):
    super().set_state(state)
    saved = state.get("grid_walk")
    if not saved:
      return
    walk = self._ordered_ids
    # pylint: disable=protected-access
    walk._memory = list(saved["memory"])
    walk._data_to_index = {trial_id: i for i, trial_id in enumerate(walk._memory)}
    walk._next_index.clear()
    walk._next_index.update({i: j for i, j in saved["next"]})
    walk._last_index = saved["last"]
    # pylint: enable=protected-access
    self._populate_next = list(saved["populate_next"])


# How long a `--parallel_trials` worker waits before asking the chief again when it has no
# trial to hand out yet (the last trials are still running on other workers). keras-tuner's
# worker loop asks again at once: a worker and the chief serving it then spun at about 0.7
# CPU-seconds per second each until the search ended (measured in tests/test_scale_out.py).
IDLE_POLL_SECONDS = 0.5


def paced_create_trial(create_trial: Callable, sleep: Callable[[float], None] = time.sleep):
  """`create_trial` that waits `IDLE_POLL_SECONDS` after an IDLE answer, before the worker's
  loop asks again."""
  def create(*args, **kwargs):
    trial = create_trial(*args, **kwargs)
    if trial.status == kt.engine.trial.TrialStatus.IDLE:
      sleep(IDLE_POLL_SECONDS)
    return trial
  return create


class _Tuner(kt.Tuner):
  """A `kt.Tuner` that hands the trial id to `HyperModel.fit` (for per-trial records), and
  whose distributed oracle checks the search's secret (`oracle_auth`): the chief serves it
  behind the check, a worker's client presents the secret."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle():
      oracle_auth.authenticate_client(self.oracle, oracle_auth.token_from_env())
      self.oracle.create_trial = paced_create_trial(self.oracle.create_trial)

  def search(self, *fit_args, **fit_kwargs):
    if dist_utils.is_chief_oracle():  # keras-tuner's chief branch, with the secret checked.
      self.save()
      oracle_auth.serve_chief(self.oracle)
      return
    super().search(*fit_args, **fit_kwargs)

  def run_trial(self, trial, *args, **kwargs):
    # keras-tuner's own run_trial builds a model per trial after `keras.backend.clear_session`
    # and a garbage collection (which cost seconds and re-create every kernel), and writes
    # the model's build config for `get_best_models`; here every trial takes the cell's
    # one model (`cell_model`), and the refit is built from the best trial's values.
    del args, kwargs  # Its checkpoint and tuner callbacks: see `TransferHyperModel.fit`.
    hp = trial.hyperparameters
    # keras-tuner records an Exception as a failed trial and runs the next: a signal's
    # interrupt that surfaced as another error (`faults`) must stop the search instead.
    with faults.interrupts_raised():
      return self.hypermodel.fit(hp, self.hypermodel.build(hp), trial_id=trial.trial_id)


def make_tuner(hypermodel: TransferHyperModel, *, kind: str, directory: str,
               project_name: str, seed: int, max_trials: int = 0, strategy=None):
  """The tuner for `--tuner` (`grid`: every combination; `bayesian`: `max_trials` of them).

  Its state under `directory/project_name` makes a rerun resume the search.
  """
  grid_size = len(hypermodel.learning_rates) * len(hypermodel.weight_decays)
  oracle_args = dict(objective=kt.Objective(OBJECTIVE, direction="max"), seed=seed,
                     # Never stop the search for failures: each is recorded, and a cell whose
                     # every trial failed is reported by `best_trial`.
                     max_consecutive_failed_trials=grid_size + 1)
  tuner_args = dict(hypermodel=hypermodel, directory=directory, project_name=project_name,
                    overwrite=False, distribution_strategy=strategy)
  cap = tuner_max_trials(kind, grid_size, max_trials)
  if kind == "grid":
    oracle = ResumableGridSearchOracle(max_trials=cap, **oracle_args)
  elif kind == "bayesian":
    oracle = kt.oracles.BayesianOptimizationOracle(max_trials=cap, **oracle_args)
  else:
    raise ValueError(f"Unknown --tuner={kind!r}. Valid choices: {', '.join(TUNERS)}.")
  # keras-tuner's own trial tables redraw with escape codes; without a terminal the trials'
  # start and end are this module's log lines alone.
  oracle.verbose = 1 if progress.is_live() else 0
  return _Tuner(oracle=oracle, **tuner_args)


def best_trial(tuner):
  """The completed trial with the best validation metric (failed trials never count).

  Raises:
    RuntimeError: every trial failed.
  """
  trials = [t for t in tuner.oracle.trials.values()
            if t.status == kt.engine.trial.TrialStatus.COMPLETED and t.score is not None]
  if not trials:
    raise RuntimeError("Every hyperparameter trial failed (see the trials in the results "
                       "store and the log); nothing to refit.")
  # Ties go to the earlier trial, as keras-tuner orders them.
  return max(trials, key=lambda t: (t.score, -int(t.trial_id)))
