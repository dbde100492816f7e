"""Figure 3: a logreg cell run a second time (every feature-cache entry hits) against its
first run (extraction included)."""

import os

import numpy as np

from bench import harness
from bench.profiles import Profile
from tfhub_transfer import backbones
from tfhub_transfer import experiment
from tfhub_transfer import logreg
from tfhub_transfer import metrics
from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import datasets
from tfhub_transfer.data import loading
from tfhub_transfer.transfer_head import build_transfer_head


def _warm_up(profile: Profile) -> None:
  """Pays this process's one-off costs (the L-BFGS trace, Keras applications' first build)
  before timing, so that they land in neither run."""
  x = np.random.default_rng(0).random((40, 8), np.float32)
  y = np.arange(40) % 4
  logreg.select_and_refit(x[:20], y[:20], x[20:], y[20:], multi_label=False, num_classes=4,
                          metric_fn=metrics.top1_accuracy, l2_values=protocol.l2_grid(2))
  spec = backbones.get_backbone_spec(profile.cell_model,
                                     image_size=profile.cell_image_size or None)
  backbones.build_backbone(spec, weights=regimes.RANDOM)


def figure_second_run(profile: Profile, workdir: str) -> harness.Figure:
  """`run_experiment` twice on the same config, in a fresh workdir per repetition."""
  data_dir = os.path.join(workdir, "tfds")
  # Builds the digits TFDS dataset once, outside the timings (a one-off per machine).
  loading.load_splits(datasets.get_dataset_spec("digits"), data_dir=data_dir)
  configs, records = [], {"first": [], "second": []}

  def config_for(repetition):
    return ExperimentConfig(
        model=profile.cell_model, dataset="digits", regime="logreg", weights="random",
        image_size=profile.cell_image_size, data_dir=data_dir,
        workdir=os.path.join(workdir, f"fig3_rep{repetition}"),
        max_examples=profile.cell_max_examples, batch_size=profile.cell_batch,
        l2_grid_size=45, strategy="auto")

  def first():
    configs.append(config_for(len(configs)))
    records["first"].append(experiment.run_experiment(configs[-1]).record)

  def second():
    record = experiment.run_experiment(configs[-1]).record
    if not all(entry["hit"] for entry in record["feature_cache"].values()):
      raise AssertionError(f"second run missed the feature cache: {record['feature_cache']}")
    records["second"].append(record)

  _warm_up(profile)
  first_s, second_s = harness.interleave([first, second], profile.cell_repetitions,
                                         warmup=False)
  spec = backbones.get_backbone_spec(profile.cell_model,
                                     image_size=profile.cell_image_size or None)
  build_s = [harness.timed(lambda: build_transfer_head(
      spec, regime="logreg", num_classes=10, weights=regimes.RANDOM))[0]
             for _ in range(profile.cell_repetitions)]
  first_records, second_records = records["first"], records["second"]
  sizes = first_records[-1]["sizes"]

  def mean(rs, phase):
    return sum(r["timings"][phase] for r in rs) / len(rs)

  return harness.Figure(
      key="3", title="second run of the same logreg cell (cache hits) / first run",
      measured=harness.Measurement("run_experiment, second run (feature cache hits)", "s",
                                   second_s),
      baseline=harness.Measurement("run_experiment, first run (extraction included)", "s",
                                   first_s),
      ratio_of=harness.MEASURED_OVER_BASELINE, goal="<= 0.05",
      extra=[harness.Measurement("building the cell's TransferHead alone (the first run "
                                 "does it; the second, all cache hits, skips it)", "s",
                                 build_s)],
      setup=(f"{profile.cell_model} (random init) at {profile.cell_image_size} px on digits "
             f"(train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']} images, "
             f"batch {profile.cell_batch}, 45 L2 values), a fresh workdir per repetition. "
             f"Mean breakdown, first run: extraction {mean(first_records, 'extract_s'):.1f} s, "
             f"fit {mean(first_records, 'fit_s'):.1f} s, total "
             f"{mean(first_records, 'total_s'):.1f} s; second run: fit "
             f"{mean(second_records, 'fit_s'):.1f} s, total "
             f"{mean(second_records, 'total_s'):.1f} s (the rest: splits, test scoring, "
             f"store)"))
