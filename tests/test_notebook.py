"""The Colab quickstart notebook, executed top to bottom offline, as a new user would: it uses
only the names `tfhub_transfer` exports."""

import os

import tensorflow as tf

from tests import fakes

_NOTEBOOK = os.path.join(fakes.REPO_ROOT, "notebooks", "quickstart.ipynb")
_SHARED_WEIGHTS = os.path.join(fakes.REPO_ROOT, "..", "shared", "weights",
                               "mobilenet_2_5_224_tf_no_top.h5")


class QuickstartNotebookTest(tf.test.TestCase):

  def test_runs_top_to_bottom(self):
    import nbclient
    import nbformat
    notebook = nbformat.read(_NOTEBOOK, as_version=4)
    workdir = self.get_temp_dir()
    # The real ImageNet file where this machine has it; otherwise random weights, which run
    # the same code path offline.
    weights = _SHARED_WEIGHTS if os.path.exists(_SHARED_WEIGHTS) else "random"
    # TFDS's own variable for its default data_dir: the notebook builds digits there, not
    # in ~/tensorflow_datasets.
    env = fakes.subprocess_env(TFHUB_TRANSFER_WEIGHTS=weights,
                               TFHUB_TRANSFER_WORKDIR=workdir,
                               TFDS_DATA_DIR=self.create_tempdir().full_path)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # The kernel inherits this process's environment.
    try:
      client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                       resources={"metadata": {"path": os.path.dirname(
                                           _NOTEBOOK)}})
      client.execute()
    finally:
      for k, v in old.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v
    outputs = "\n".join(o.get("text", "") for cell in notebook.cells
                        if cell.cell_type == "code" for o in cell.outputs)
    self.assertIn("digits / logreg (seed 0): test top1 =", outputs)
    self.assertIn("digits / scratch (seed 0): test top1 =", outputs)
    tables = "\n".join(o.get("data", {}).get("text/plain", "") for cell in notebook.cells
                       if cell.cell_type == "code" for o in cell.outputs)
    self.assertIn("test_metric", tables)  # The load_results DataFrame, one row per cell.
    self.assertIn("logreg", tables)
    self.assertIn("scratch", tables)
    self.assertIn("logme", tables)  # The load_scores DataFrame.
    images = [o for cell in notebook.cells if cell.cell_type == "code"
              for o in cell.outputs if "image/png" in o.get("data", {})]
    self.assertLen(images, 1)
    self.assertTrue(os.path.exists(os.path.join(workdir, "report", "figure1.png")))


if __name__ == "__main__":
  tf.test.main()
