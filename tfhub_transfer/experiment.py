"""`run_experiment(config) -> Result`: one cell of the study, recorded in the results store."""

import dataclasses
import datetime
import os
import platform
import re
import time
import traceback
from typing import Any, Optional

import keras
import tensorflow as tf
from absl import logging

from tfhub_transfer import backbones
from tfhub_transfer import datasets
from tfhub_transfer import regimes
from tfhub_transfer import results
from tfhub_transfer import training
from tfhub_transfer import tuning
from tfhub_transfer.config import ExperimentConfig


class ExperimentFailed(RuntimeError):
  """A cell failed; its record (status `failed`, with the error) is already stored."""

  def __init__(self, record: dict[str, Any]):
    super().__init__(record["error"])
    self.record = record


@dataclasses.dataclass(frozen=True)
class Result:
  """The stored record of one cell (its fields: `records.check_record`)."""
  record: dict[str, Any]

  @property
  def test_metric(self) -> Optional[float]:
    return self.record["test_metric"]

  @property
  def val_metric(self) -> Optional[float]:
    return self.record["val_metric"]

  def summary_line(self) -> str:
    r = self.record
    if r["status"] != "ok":
      return f"{r['model']} / {r['dataset']} / {r['regime']}: FAILED: {r['error']}"
    chosen = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in r["hparams"].items())
    return (f"{r['model']} / {r['dataset']} / {r['regime']} (seed {r['seed']}): test "
            f"{r['metric']} = {100 * r['test_metric']:.2f}% (validation "
            f"{100 * r['val_metric']:.2f}%), chosen {chosen}, "
            f"{r['timings']['total_s']:.1f} s")


def cell_id(config: ExperimentConfig) -> str:
  raw = f"{config.model_label}__{config.dataset}__{config.regime}__seed{config.seed}"
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", raw)


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


def _base_record(config: ExperimentConfig) -> dict[str, Any]:
  return {"model": config.model_label, "dataset": config.dataset, "regime": config.regime,
          "seed": config.seed, "config": config.to_dict(), "versions": library_versions(),
          "host": platform.node(),
          "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def run_experiment(config: ExperimentConfig, *, store: Optional[results.ResultsStore] = None
                   ) -> Optional[Result]:
  """Runs the paper's protocol for one cell and stores its record.

  Args:
    config: the cell and how to run it.
    store: the results store (default: `<workdir>/results.sqlite`).

  Returns:
    The result; None in a keras-tuner distributed worker (the chief records the cell).

  Raises:
    ExperimentFailed: the cell failed; its failure record was stored first.
    ValueError: the config names an unknown model, dataset or regime (nothing is run).
  """
  backbone = backbones.get_backbone_spec(config.model, model_kwargs=config.kwargs,
                                         image_size=config.image_size or None)
  dataset = datasets.get_dataset_spec(config.dataset)
  weights = backbones.resolve_weights(config.regime, config.weights)
  os.makedirs(config.workdir, exist_ok=True)
  store = store or results.ResultsStore.for_workdir(config.workdir)
  record = _base_record(config)
  record["metric"] = dataset.metric
  start = time.perf_counter()
  try:
    keras.utils.set_random_seed(config.seed)
    splits = datasets.load_splits(dataset, data_dir=config.data_dir,
                                  manual_dir=config.manual_dir, seed=config.seed,
                                  max_examples=config.max_examples)
    strategy = training.make_strategy(config.strategy)
    ctx = regimes.CellContext(
        config=config, backbone=backbone, dataset=dataset, splits=splits, weights=weights,
        strategy=strategy, cell_dir=os.path.join(config.workdir, "runs", cell_id(config)),
        record_trial_fn=lambda trial_id, hparams, value, status, error: store.put_trial(
            *config.cell, trial_id, hparams=hparams, val_metric=value, status=status,
            error=error))
    record.update(sizes=dict(splits.sizes), splits=dict(splits.info), weights=weights,
                  devices=training.devices_of(strategy),
                  replicas=strategy.num_replicas_in_sync)
    logging.info("Cell %s: %s", cell_id(config), record["sizes"])
    outcome = (regimes.run_logreg(ctx) if config.regime == "logreg"
               else regimes.run_trained(ctx))
  except Exception as e:  # Any failure (OOM and other TF errors too) is recorded, re-raised.
    record.update(status="failed", error=f"{type(e).__name__}: {e}", val_metric=None,
                  test_metric=None, hparams={}, traceback=traceback.format_exc(),
                  timings={"total_s": time.perf_counter() - start})
    record.setdefault("sizes", {})
    record.setdefault("devices", [])
    if not tuning.is_tuner_worker():
      store.put(record)
    raise ExperimentFailed(record) from e
  if outcome is None:
    return None
  record.update(outcome, status="ok", error=None)
  record["timings"] = {**outcome["timings"], "total_s": time.perf_counter() - start}
  store.put(record)
  return Result(record)
