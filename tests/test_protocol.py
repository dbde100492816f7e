"""The protocol's constants and the regime registry, each checked against the paper's numbers
(Kornblith et al. 2019, Appendix A; SimCLR's Appendix B.8) and against the flagfiles."""

import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import tensorflow as tf

from tests import fakes
from tfhub_transfer import protocol
from tfhub_transfer import regimes
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import crops

# Adding a regime to the registry without adding it here fails test_registry_is_complete.
PAPER_REGIMES = ("logreg", "finetune", "scratch")


def _flagfile(name):
  """A flagfile's flags as {name: value} (comments and blank lines skipped)."""
  values = {}
  with open(os.path.join(fakes.REPO_ROOT, "flags", name)) as f:
    for line in f:
      line = line.strip()
      if line and not line.startswith("#"):
        key, _, value = line.partition("=")
        values[key.lstrip("-")] = value
  return values


class ProtocolTest(tf.test.TestCase):

  def test_finetune_grid_is_simclr_appendix(self):
    spec = regimes.get_regime_spec("finetune")
    self.assertEqual(spec.learning_rates, (0.0001, 0.000316, 0.001, 0.00316, 0.01, 0.0316, 0.1))
    self.assertEqual(spec.weight_decays[0], 0.0)
    self.assertAllClose(spec.weight_decays[1:], 10 ** np.linspace(-6, -3, 7), rtol=2e-3)

  def test_scratch_grid_is_simclr_appendix(self):
    # SimCLR B.8: "8 logarithmically spaced values of weight decay between 10^-5 and
    # 10^-1.5" (half a decade apart; no "none", unlike the fine-tuning grid).
    spec = regimes.get_regime_spec("scratch")
    self.assertAllClose(spec.learning_rates, 10 ** np.linspace(-3, 0, 7), rtol=2e-3)
    self.assertEqual(spec.weight_decays, (1e-5, 3.16e-5, 1e-4, 3.16e-4, 1e-3, 3.16e-3, 0.01,
                                          0.0316))

  def test_l2_grid(self):
    self.assertAllClose(protocol.l2_grid(), 10 ** np.linspace(-6, 5, 45), rtol=1e-12)
    self.assertAllClose(protocol.l2_grid(12), 10.0 ** np.arange(-6, 6), rtol=1e-12)

  def test_l2_coefficient_is_weight_decay_over_learning_rate(self):
    # SimCLR B.8: "We divide these values of weight decay by the learning rate."
    self.assertAlmostEqual(protocol.l2_coefficient(weight_decay=1e-3, learning_rate=1e-4), 10.0)
    self.assertAlmostEqual(protocol.l2_coefficient(weight_decay=1e-6, learning_rate=0.1), 1e-5)
    self.assertEqual(protocol.l2_coefficient(weight_decay=0.0, learning_rate=0.0), 0.0)
    with self.assertRaisesRegex(ValueError, "learning rate > 0"):
      protocol.l2_coefficient(weight_decay=1e-4, learning_rate=0.0)

  def test_batch_norm_momentum(self):
    # max(1 - 10/s, 0.9): s = 40 steps/epoch -> 0.9 (floor); 1,000 -> 0.99; 200 -> 0.95.
    self.assertEqual(protocol.batch_norm_momentum(40), 0.9)
    self.assertAlmostEqual(protocol.batch_norm_momentum(1000), 0.99)
    self.assertAlmostEqual(protocol.batch_norm_momentum(200), 0.95)
    with self.assertRaises(ValueError):
      protocol.batch_norm_momentum(0)

  def test_steps_and_batches(self):
    self.assertEqual(protocol.steps_per_epoch(75_750, 256), 296)  # Food-101 train.
    self.assertEqual(protocol.per_replica_batch_size(256, 8), 32)
    with self.assertRaisesRegex(ValueError, "multiple of 3"):
      protocol.per_replica_batch_size(256, 3)
    self.assertEqual(protocol.PAPER_FINETUNE_STEPS, 20_000)
    self.assertEqual(protocol.PAPER_SCRATCH_STEPS, 40_000)
    self.assertEqual(protocol.PAPER_BATCH_SIZE, 256)


class RegimeRegistryTest(tf.test.TestCase):

  def test_registry_is_complete(self):
    self.assertEqual(tuple(regimes.REGIMES), PAPER_REGIMES)

  def test_each_regime_in_the_paper_s_terms(self):
    logreg, finetune, scratch = (regimes.get_regime_spec(n) for n in PAPER_REGIMES)
    self.assertEqual((logreg.default_weights, logreg.trains_backbone), ("imagenet", False))
    self.assertEqual((finetune.default_weights, finetune.trains_backbone), ("imagenet", True))
    self.assertEqual((scratch.default_weights, scratch.trains_backbone), ("random", True))
    self.assertEqual((logreg.paper_train_steps, finetune.paper_train_steps,
                      scratch.paper_train_steps), (None, 20_000, 40_000))
    self.assertFalse(logreg.searches_with_tuner)
    self.assertEqual(logreg.get_runner().__name__, "run_logreg")
    self.assertEqual(scratch.get_runner().__name__, "run_trained")

  def test_unknown_regime_lists_choices(self):
    with self.assertRaisesRegex(ValueError, r"Unknown --regime='linear'.*logreg, finetune, "
                                            r"scratch"):
      regimes.get_regime_spec("linear")

  def test_weights_follow_the_regime(self):
    self.assertEqual(regimes.get_regime_spec("scratch").resolve_weights(None), "random")
    self.assertEqual(regimes.get_regime_spec("finetune").resolve_weights(None), "imagenet")
    self.assertEqual(regimes.get_regime_spec("logreg").resolve_weights("random"), "random")
    with self.assertRaisesRegex(ValueError, "--regime=scratch trains from random init"):
      regimes.get_regime_spec("scratch").resolve_weights("imagenet")

  def test_paper_flagfiles_agree_with_the_registry(self):
    for name, spec in regimes.REGIMES.items():
      flags = _flagfile(f"paper_{name}.cfg")
      self.assertEqual(flags["regime"], name)
      self.assertEqual(int(flags["batch_size"]), protocol.PAPER_BATCH_SIZE, name)
      if spec.paper_train_steps is None:
        self.assertNotIn("train_steps", flags)
        self.assertEqual(int(flags["l2_grid_size"]), protocol.L2_GRID_SIZE)
      else:
        self.assertEqual(int(flags["train_steps"]), spec.paper_train_steps, name)
      # The grids are the registry's: a flagfile that spelled them again could drift.
      self.assertNotIn("learning_rates", flags)
      self.assertNotIn("weight_decays", flags)


class PaperStudiesTest(tf.test.TestCase):
  """Figures 9 and 8 as the paper ran them (values read off the figures' axes)."""

  FIGURE9_MAX_K = {"food101": 512, "cifar10": 4096, "cifar100": 256, "birdsnap": 64,
                   "sun397": 32, "stanford_cars": 16, "fgvc_aircraft": 32, "dtd": 32,
                   "oxford_pets": 64, "caltech101": 16, "oxford_flowers": 8}

  def test_figure9_k_values(self):
    for dataset, top in self.FIGURE9_MAX_K.items():
      ks = protocol.paper_examples_per_class(dataset)
      self.assertEqual(ks[0], 1, dataset)
      self.assertEqual(ks[-1], top, dataset)
      self.assertTrue(all(b == 2 * a for a, b in zip(ks, ks[1:])), dataset)
    self.assertEqual(protocol.paper_examples_per_class("oxford_flowers"), (1, 2, 4, 8))
    with self.assertRaisesRegex(ValueError, "no K values for dataset 'voc2007'.*food101"):
      protocol.paper_examples_per_class("voc2007")

  def test_study_flagfiles_run_the_paper_s_grids(self):
    low = _flagfile("paper_low_data.cfg")
    self.assertCountEqual(low["dataset"].split(","), self.FIGURE9_MAX_K)
    self.assertCountEqual(low["regime"].split(","), PAPER_REGIMES)
    self.assertEqual(low["seeds"].split(","), ["0", "1", "2"])  # "3 subsets".
    self.assertEqual((low["model"], low["examples_per_class"], low["train_steps"]),
                     ("inception_v4", "paper", "paper"))
    convergence = _flagfile("paper_convergence.cfg")
    self.assertLen(convergence["dataset"].split(","), 12)
    self.assertEqual(convergence["dataset"], _flagfile("paper_logreg.cfg")["dataset"])
    # Figure 8's x axis: 76 ... 78,125 steps, each budget half the next (rounded down).
    budgets = [int(b) for b in convergence["train_steps"].split(",")]
    self.assertEqual(budgets, [78125 // 2 ** i for i in range(10, -1, -1)])
    self.assertEqual(tuple(budgets), protocol.PAPER_CONVERGENCE_BUDGETS)

  def test_docs_cost_table_and_readme_match_the_flagfiles_grids(self):
    # Each README row: cells as the plan lists them, and training steps = cells x (56 trials
    # + 1 refit) x budget, counted here from the grid each flagfile expands to.
    with open(os.path.join(fakes.REPO_ROOT, "docs", "studies.md")) as f:
      rows = {m.group(1): (int(m.group(2)), m.group(3)) for m in re.finditer(
          r"^  \| `(paper_\w+\.cfg)`[^|]*\| (\d+)[^|]*\| ([0-9.]+M?) \|", f.read(), re.M)}
    self.assertLen(rows, 5)
    # The README's "Reproduce the paper" commands give the same cell counts.
    with open(os.path.join(fakes.REPO_ROOT, "README.md")) as f:
      readme = {m.group(1): int(m.group(2)) for m in re.finditer(
          r"--flagfile=flags/(paper_\w+\.cfg) .*: (\d+) cells$", f.read(), re.M)}
    self.assertEqual(readme, {name: cells for name, (cells, _) in rows.items()})
    for name, (cells_in_readme, steps_in_readme) in rows.items():
      flags = _flagfile(name)
      values = {k: v if v == sweep.PAPER else tuple(int(x) for x in v.split(","))
                for k, v in flags.items() if k in ("examples_per_class", "train_steps")}
      grid = sweep.make_grid(models=flags["model"].split(","),
                             datasets=flags["dataset"].split(","),
                             regimes=flags["regime"].split(","),
                             seeds=[int(s) for s in flags["seeds"].split(",")], **values)
      cells = grid.cells(ExperimentConfig(model="m", dataset="digits", regime="logreg"))
      self.assertEqual(len(cells), cells_in_readme, name)
      trials = {r: len(regimes.get_regime_spec(r).learning_rates)
                * len(regimes.get_regime_spec(r).weight_decays) for r in PAPER_REGIMES}
      steps = sum((trials[c.regime] + 1) * c.train_steps for c in cells
                  if c.regime != "logreg")
      self.assertEqual(f"{steps / 1e6:.1f}M" if steps else "0", steps_in_readme, name)


class ProtocolKeyTest(tf.test.TestCase):

  def test_settings_that_change_the_outcome_change_the_key(self):
    base = ExperimentConfig(model="resnet_50", dataset="dtd", regime="finetune", train_steps=10)
    for change in (dict(train_steps=20), dict(batch_size=32), dict(learning_rates=(0.1,)),
                   dict(weight_decays=(0.0,)), dict(tuner="bayesian"), dict(max_trials=3),
                   dict(max_examples=5), dict(precision="mixed_bfloat16"),
                   dict(jit_compile=True)):
      other = base.__class__(**{**base.to_dict(), **change})
      self.assertNotEqual(other.protocol, base.protocol, change)
      self.assertNotEqual(other.cell, base.cell, change)
    # Where it runs and on what hardware is not what it measures.
    for change in (dict(workdir="/elsewhere"), dict(strategy="mirrored"),
                   dict(data_dir="/d"), dict(manual_dir="/m")):
      other = base.__class__(**{**base.to_dict(), **change})
      self.assertEqual(other.cell, base.cell, change)

  def test_examples_per_class_keys_every_regime(self):
    for regime in PAPER_REGIMES:
      full = ExperimentConfig(model="resnet_50", dataset="dtd", regime=regime)
      low = ExperimentConfig(model="resnet_50", dataset="dtd", regime=regime, examples_per_class=5)
      self.assertNotEqual(low.cell, full.cell, regime)
      self.assertEqual(low.protocol_settings()["examples_per_class"], 5)
    with self.assertRaisesRegex(ValueError,
                                r"examples_per_class=-1 must be an integer in \[1, .*or 0"):
      ExperimentConfig(model="resnet_50", dataset="dtd", regime="logreg", examples_per_class=-1)

  def test_defaults_are_keyed_by_their_values(self):
    spec = regimes.get_regime_spec("scratch")
    implicit = ExperimentConfig(model="resnet_50", dataset="dtd", regime="scratch")
    explicit = ExperimentConfig(model="resnet_50", dataset="dtd", regime="scratch",
                                train_steps=protocol.QUICK_TRAIN_STEPS,
                                learning_rates=spec.learning_rates,
                                weight_decays=spec.weight_decays)
    self.assertEqual(implicit.protocol, explicit.protocol)

  def test_logreg_ignores_the_training_settings(self):
    a = ExperimentConfig(model="resnet_50", dataset="dtd", regime="logreg", train_steps=10)
    b = ExperimentConfig(model="resnet_50", dataset="dtd", regime="logreg", train_steps=20,
                         learning_rates=(0.5,))
    self.assertEqual(a.protocol, b.protocol)
    self.assertNotEqual(a.protocol, dataclasses.replace(a, l2_grid_size=5).protocol)
    # Features computed in another precision or by XLA are other numbers.
    for change in (dict(precision="mixed_float16"), dict(jit_compile=True)):
      self.assertNotEqual(a.protocol, dataclasses.replace(a, **change).protocol)

  def test_preprocessing_options_key_every_regime_and_keep_the_default_ids(self):
    for regime in PAPER_REGIMES:
      base = ExperimentConfig(model="m", dataset="digits", regime=regime)
      for change in (dict(eval_preprocessing="simclr"), dict(fast_decode=True)):
        other = ExperimentConfig(model="m", dataset="digits", regime=regime, **change)
        self.assertNotEqual(other.cell, base.cell, (regime, change))
        self.assertEqual(other.protocol_settings()[next(iter(change))],
                         next(iter(change.values())))
        self.assertEqual(other.to_dict()[next(iter(change))], next(iter(change.values())))
      both = ExperimentConfig(model="m", dataset="digits", regime=regime,
                              eval_preprocessing="simclr", fast_decode=True)
      self.assertNotEqual(both.protocol, ExperimentConfig(
          model="m", dataset="digits", regime=regime, eval_preprocessing="simclr").protocol)
    # The defaults leave the protocol id as it was before the options existed: the hash of
    # the settings without them, written out here.
    before = {"protocol_version": 3, "max_examples": 0, "examples_per_class": 0,
              "precision": "float32", "jit_compile": False, "l2_grid_size": 45}
    expected = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:10]
    config = ExperimentConfig(model="m", dataset="digits", regime="logreg",
                              eval_preprocessing=crops.DEFAULT_EVAL_PREPROCESSING)
    self.assertEqual(config.protocol, expected)
    self.assertEqual(config.to_dict()["eval_preprocessing"], "slim")  # Still recorded.

  def test_unknown_eval_preprocessing_names_the_choices(self):
    with self.assertRaisesRegex(ValueError, "--eval_preprocessing='bicubic'.*slim, simclr"):
      ExperimentConfig(model="m", dataset="digits", regime="logreg", eval_preprocessing="bicubic")

  def test_unknown_precision_names_the_choices(self):
    with self.assertRaisesRegex(ValueError, "'float64'.*float32, mixed_bfloat16, mixed_float16"):
      ExperimentConfig(model="resnet_50", dataset="dtd", regime="finetune", precision="float64")

  def test_model_kwargs_are_frozen_and_parsed_once(self):
    config = ExperimentConfig(model="keras:MobileNet", dataset="digits", regime="logreg",
                              model_kwargs={"alpha": 0.25})
    with self.assertRaises(TypeError):
      config.model_kwargs["alpha"] = 1.0  # pytype: disable=unsupported-operands
    self.assertEqual(config.model_label, 'keras:MobileNet{"alpha":0.25}')
    self.assertEqual(hash(config), hash(ExperimentConfig(
        model="keras:MobileNet", dataset="digits", regime="logreg", model_kwargs={"alpha": 0.25})))
    self.assertEqual(config.to_dict()["model_kwargs"], {"alpha": 0.25})
    with self.assertRaisesRegex(TypeError, "FrozenKwargs.parse"):
      ExperimentConfig(model="resnet_50", dataset="dtd", regime="logreg", model_kwargs='{"a": 1}')


  def test_out_of_range_settings_are_refused_naming_the_flag(self):
    for field, bad, flag in (("batch_size", 0, "--batch_size"), ("seed", -1, "--seeds"),
                             ("image_size", -8, "--image_size"),
                             ("train_steps", -1, "--train_steps"),
                             ("max_trials", -1, "--max_trials"),
                             ("l2_grid_size", 0, "--l2_grid_size"),
                             ("max_examples", 2.5, "--max_examples"),
                             ("learning_rates", (0.1, 0.0), "--learning_rates"),
                             ("weight_decays", (-1e-4,), "--weight_decays")):
      with self.assertRaisesRegex(ValueError, f"{field}=.*must be.*\\({flag}\\)", msg=field):
        ExperimentConfig(model="resnet_50", dataset="dtd", regime="finetune", **{field: bad})


if __name__ == "__main__":
  tf.test.main()
