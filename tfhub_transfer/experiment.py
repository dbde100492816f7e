"""`run_experiment(config) -> Result`: one cell of the study, recorded in the results store."""

import dataclasses
import datetime
import os
import platform
import time
import traceback
from typing import Any, Optional

from absl import logging
import keras
import tensorflow as tf

from tfhub_transfer import backbones
from tfhub_transfer import devices
from tfhub_transfer import faults
from tfhub_transfer import runners
from tfhub_transfer import training
from tfhub_transfer import tuning
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import datasets
from tfhub_transfer.results import predictions as predictions_lib
from tfhub_transfer.results import storage
from tfhub_transfer.results import store as store_lib
from tfhub_transfer.results import workdir as workdir_lib
from tfhub_transfer.results.records import ResultRecord


class ExperimentFailed(RuntimeError):
  """A cell failed; its record (status `failed`, with the error) is already stored."""

  def __init__(self, record: ResultRecord):
    super().__init__(record["error"])
    self.record = record


@dataclasses.dataclass(frozen=True)
class Result:
  """The stored record of one cell."""
  record: ResultRecord

  @property
  def test_metric(self) -> Optional[float]:
    return self.record.test_metric

  @property
  def val_metric(self) -> Optional[float]:
    return self.record.val_metric

  def summary_line(self) -> str:
    return self.record.summary_line()


def cell_id(config: ExperimentConfig) -> str:
  """A folder name for the cell's key (predictions files; `workdir.cell_dirname`)."""
  return workdir_lib.cell_dirname(config.cell)


def library_versions() -> dict[str, str]:
  import keras_tuner
  import numpy
  import sklearn
  import tensorflow_datasets
  import tensorflow_hub

  import tfhub_transfer
  return {"tensorflow": tf.__version__, "keras": keras.__version__,
          "tensorflow_hub": tensorflow_hub.__version__,
          "tensorflow_datasets": tensorflow_datasets.__version__,
          "keras_tuner": keras_tuner.__version__, "numpy": numpy.__version__,
          "scikit_learn": sklearn.__version__, "tfhub_transfer": tfhub_transfer.__version__,
          "python": platform.python_version()}


def _record(config: ExperimentConfig, *, metric: str, outcome: Optional[runners.Outcome],
            error: Optional[BaseException], seconds: float, facts: dict[str, Any],
            predictions: Optional[dict[str, Any]] = None) -> ResultRecord:
  """The one place a cell's record is made: from its config, and its outcome or error
  (and where its test predictions were saved, `predictions.entry`)."""
  identity = config.identity
  record = {
      **identity.key._asdict(), "model_label": identity.model_label,
      "dataset_label": identity.dataset_label, "sources": identity.sources,
      "protocol_settings": config.protocol_settings(), "config": config.to_dict(),
      "metric": metric, "versions": library_versions(), "host": platform.node(),
      "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "sizes": {}, "devices": [], **facts}
  if outcome is None:
    record.update(status="failed", error=f"{type(error).__name__}: {error}", val_metric=None,
                  test_metric=None, hparams={}, traceback=traceback.format_exc(),
                  timings={"total_s": seconds})
  else:
    record.update(status="ok", error=None, val_metric=outcome.val_metric,
                  test_metric=outcome.test_metric, hparams=dict(outcome.hparams),
                  search=dict(outcome.search),
                  timings={**outcome.timings, "total_s": seconds})
    if outcome.feature_cache is not None:
      record["feature_cache"] = dict(outcome.feature_cache)
    if outcome.convergence is not None:
      record["convergence"] = dict(outcome.convergence)
    if predictions is not None:
      record["predictions"] = predictions
  return ResultRecord.from_json(record)


def run_experiment(config: ExperimentConfig, *, store: Optional[store_lib.ResultsStore] = None
                   ) -> Optional[Result]:
  """Runs the paper's protocol for one cell and stores its record.

  Args:
    config: the cell and how to run it.
    store: the results store (default: this host's, `ResultsStore.for_workdir`).

  Returns:
    The result; None in a keras-tuner distributed worker (the chief records the cell).

  Raises:
    ExperimentFailed: the cell failed; its failure record was stored first.
    faults.MachineFault: the disk is full; nothing is stored (not the cell's failure).
    ValueError: the config names an unknown model, dataset or regime (nothing is run).
  """
  # Names are checked before anything runs: an unknown one raises, and stores nothing.
  backbones.get_backbone_spec(config.model, model_kwargs=config.model_kwargs,
                              image_size=config.image_size or None)
  dataset = datasets.get_dataset_spec(config.dataset)
  regime = config.regime_spec
  weights = regime.resolve_weights(config.weights)
  key = config.cell  # Hashes a weights file and lists an image folder, once per config.
  devices.check_local_strategy(config.strategy, jit_compile=config.jit_compile)  # Issue 27.
  os.makedirs(config.workdir, exist_ok=True)
  store = store or store_lib.ResultsStore.for_workdir(config.workdir)
  facts: dict[str, Any] = {}
  start = time.perf_counter()
  try:
    ctx = runners.load_cell(
        config, record_trial_fn=lambda trial_id, hparams, value, status, error: store.put_trial(
            *key[:4], trial_id, protocol=key.protocol, hparams=hparams, val_metric=value,
            status=status, error=error))
    splits, strategy = ctx.splits, ctx.strategy
    facts = dict(sizes=dict(splits.sizes), splits=dict(splits.info), weights=weights,
                 devices=training.devices_of(strategy),
                 replicas=strategy.num_replicas_in_sync)
    facts["provenance"] = devices.provenance(facts["devices"])  # Issue 27: device, TF32, cuDNN.
    logging.info("Cell %s: %s", cell_id(config), facts["sizes"])
    outcome = regime.get_runner()(ctx)
  except faults.MachineFault:  # A full disk is not the cell's failure: no row, the run stops.
    raise
  except Exception as e:  # Any failure (OOM and other TF errors too) is recorded, re-raised.
    faults.raise_if_interrupted(e)  # Not a failure: a signal's interrupt, turned into e.
    record = _record(config, metric=dataset.metric, outcome=None, error=e,
                     seconds=time.perf_counter() - start, facts=facts)
    if not tuning.is_tuner_worker():
      store.put(record)
    raise ExperimentFailed(record) from e
  if outcome is None:
    return None
  saved = None
  if outcome.test_predictions is not None:
    # Written completely under a new name before the record that points to it is stored.
    folder = workdir_lib.Workdir(store.directory).predictions
    try:
      saved = predictions_lib.entry(predictions_lib.save(folder, cell_id(config),
                                                         outcome.test_predictions),
                                    outcome.test_predictions)
    except OSError as e:  # A full or read-only disk: one line naming the folder, exit 1.
      raise storage.explain(folder, e, writing=True) from e
  record = _record(config, metric=dataset.metric, outcome=outcome, error=None,
                   seconds=time.perf_counter() - start, facts=facts, predictions=saved)
  try:
    store.replace(record)  # Removes the predictions of the record it replaces.
  except BaseException:
    predictions_lib.remove_for_record(store.directory, record)
    raise
  return Result(record)
