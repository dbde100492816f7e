"""The protocol's heuristics, each checked against the paper's numbers."""

import numpy as np
import tensorflow as tf

from tfhub_transfer import hparams


class HparamsTest(tf.test.TestCase):

  def test_finetune_grid_is_simclr_appendix(self):
    self.assertEqual(hparams.learning_rate_grid("finetune"),
                     (0.0001, 0.000316, 0.001, 0.00316, 0.01, 0.0316, 0.1))
    decays = hparams.weight_decay_grid("finetune")
    self.assertEqual(decays[0], 0.0)
    self.assertAllClose(decays[1:], 10 ** np.linspace(-6, -3, 7), rtol=2e-3)

  def test_scratch_grid(self):
    self.assertAllClose(hparams.learning_rate_grid("scratch"), 10 ** np.linspace(-3, 0, 7),
                        rtol=2e-3)
    decays = hparams.weight_decay_grid("scratch")
    self.assertLen(decays, 8)
    self.assertAllClose(decays[1:], 10 ** np.linspace(-5, -1.5, 7), rtol=2e-3)

  def test_logreg_has_no_training_grid(self):
    with self.assertRaisesRegex(ValueError, "only finetune and scratch"):
      hparams.learning_rate_grid("logreg")

  def test_batch_norm_momentum(self):
    # max(1 - 10/s, 0.9): s = 40 steps/epoch -> 0.9 (floor); 1,000 -> 0.99; 100 -> 0.9.
    self.assertEqual(hparams.batch_norm_momentum(40), 0.9)
    self.assertAlmostEqual(hparams.batch_norm_momentum(1000), 0.99)
    self.assertAlmostEqual(hparams.batch_norm_momentum(200), 0.95)
    with self.assertRaises(ValueError):
      hparams.batch_norm_momentum(0)

  def test_steps_and_batches(self):
    self.assertEqual(hparams.steps_per_epoch(75_750, 256), 296)  # Food-101 train.
    self.assertEqual(hparams.per_replica_batch_size(256, 8), 32)
    with self.assertRaisesRegex(ValueError, "multiple of 3"):
      hparams.per_replica_batch_size(256, 3)
    self.assertEqual(hparams.PAPER_FINETUNE_STEPS, 20_000)
    self.assertEqual(hparams.PAPER_SCRATCH_STEPS, 40_000)


if __name__ == "__main__":
  tf.test.main()
