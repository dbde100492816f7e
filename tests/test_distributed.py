"""A 2-replica MirroredStrategy step equals a one-device step on the same global batch
(`tests/mirrored_check.py`, in its own process: logical devices are set before TensorFlow
starts)."""

import json
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests import fakes


class MirroredEquivalenceTest(tf.test.TestCase):

  def test_two_replicas_match_one_device(self):
    done = subprocess.run([sys.executable, "-m", "tests.mirrored_check"], cwd=fakes.REPO_ROOT,
                          env=fakes.subprocess_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    out = json.loads(done.stdout)
    self.assertEqual((out["one"]["replicas"], out["two"]["replicas"]), (1, 2))
    # Both batch norms compute their statistics over the global batch on two replicas.
    self.assertEqual((out["one"]["synchronized"], out["two"]["synchronized"]),
                     ([False, False], [True, True]))
    # Same first-step loss: the loss is averaged over the global batch, not per replica.
    self.assertNear(out["one"]["loss"], out["two"]["loss"], 1e-4)
    # Same updated weights, batch-norm moving statistics included (synchronized BN).
    self.assertLen(out["two"]["weights"], len(out["one"]["weights"]))
    # Float32 sums run in another order on two replicas: compare at each array's scale.
    for one, two in zip(out["one"]["weights"], out["two"]["weights"]):
      one, two = np.array(one), np.array(two)
      self.assertLessEqual(np.abs(two - one).max(), 1e-4 * (np.abs(one).max() + 1.0))
    changed = [not np.allclose(a, b) for a, b in zip(out["initial"], out["one"]["weights"])]
    self.assertGreater(sum(changed), len(changed) // 2)  # The step did update the backbone.


if __name__ == "__main__":
  tf.test.main()
