"""Two replicas on two logical CPU devices, standing in for two GPUs, in one process
(`tests/gpu_paths_check.py`: logical devices are set before TensorFlow starts) shared by the
class: a 2-replica MirroredStrategy step equals a one-device step on the same global batch
(`tests/mirrored_check.py`); `--jit_compile` on two replicas is refused before any work; the
feature extractor runs one shape over both replicas."""

import json
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from tests import fakes


class TwoLogicalCpusTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._workdir = tempfile.TemporaryDirectory()
    cls._done = subprocess.run(
        [sys.executable, "-m", "tests.gpu_paths_check", cls._workdir.name],
        cwd=fakes.REPO_ROOT, env=fakes.subprocess_env(), capture_output=True, text=True,
        timeout=300, check=False)

  @classmethod
  def tearDownClass(cls):
    cls._workdir.cleanup()
    super().tearDownClass()

  def _out(self):
    self.assertEqual(self._done.returncode, 0, self._done.stderr[-3000:])
    return json.loads(self._done.stdout)

  def test_two_replicas_match_one_device(self):
    out = self._out()["step"]
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

  def test_every_cell_of_a_process_gets_the_one_strategy_object(self):
    # A second `mirrored` over the same two devices is the object made before, so that a
    # cell's kept model (its TraceKey compares strategies by identity) serves the next cell.
    self.assertIs(self._out()["same_strategy"], True)

  def test_jit_on_two_replicas_is_refused_and_features_extract_one_shape(self):
    out = self._out()
    self.assertEqual(out["mirrored_replicas"], 2)
    for key in ("library_error", "experiment_error"):
      self.assertStartsWith(out[key], "--jit_compile with --strategy=mirrored on 2 replicas")
      self.assertNotIn("\n", out[key])
    self.assertFalse(out["experiment_wrote"])
    self.assertEqual(out["cli_code"], 2)
    errors = [line for line in out["cli_stderr"].splitlines()
              if line.startswith("tfhub_transfer:")]
    self.assertEqual(errors, ["tfhub_transfer: " + out["library_error"]])
    self.assertFalse(out["cli_wrote"])
    # Batches 4, 4 and 3 over two replicas: the short batch traced nothing new, every trace
    # saw one replica's share of a full batch.
    self.assertEqual(len(out["traced_shapes"]), out["traces_after_first_batch"])
    self.assertEqual({tuple(s) for s in out["traced_shapes"]}, {(2, 8, 8, 3)})
    self.assertAllClose(out["features"], out["reference"], atol=1e-5)
    # Windows (`resize_on_device`): each replica resamples its share of the batch, one shape.
    self.assertEqual({tuple(s) for s in out["window_traced_shapes"]}, {(1, 8, 8, 3)})
    self.assertAllClose(out["window_features"], out["window_reference"], atol=1e-4)


if __name__ == "__main__":
  tf.test.main()
