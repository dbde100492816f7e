"""The Colab quickstart notebook, executed top to bottom offline, as a new user would: it uses
only the names `tfhub_transfer` exports. Its code runs unchanged, at smaller sizes set as
papermill sets parameters: in a cell after the one tagged `parameters`."""

import os
import unittest
from unittest import mock

import tensorflow as tf

from tests import fakes
from tests import shared_data
from tfhub_transfer.results import merged

_NOTEBOOK = os.path.join(fakes.REPO_ROOT, "notebooks", "quickstart.ipynb")
# A few examples per split and steps per training: the same code path in seconds, not minutes.
QUICK_SIZES = {"MAX_EXAMPLES": 64, "SCRATCH_STEPS": 2}


class QuickstartNotebookTest(tf.test.TestCase):

  def test_runs_top_to_bottom(self):
    import nbclient
    import nbformat
    notebook = nbformat.read(_NOTEBOOK, as_version=4)
    (settings,) = [i for i, cell in enumerate(notebook.cells)
                   if "parameters" in cell.metadata.get("tags", [])]
    for name in QUICK_SIZES:  # Each one a setting of the notebook's own.
      self.assertRegex(notebook.cells[settings].source, rf"(?m)^{name} = ")
    notebook.cells.insert(settings + 1, nbformat.v4.new_code_cell(
        "\n".join(f"{name} = {value!r}" for name, value in QUICK_SIZES.items())))
    workdir = self.get_temp_dir()
    # The real ImageNet file where this machine has it (always under CI=true); otherwise
    # random weights, which run the same code path offline.
    try:
      weights = shared_data.path(shared_data.MOBILENET_WEIGHTS)
    except unittest.SkipTest:
      weights = "random"
    # TFDS's own variable for its default data_dir: the notebook builds digits there, not
    # in ~/tensorflow_datasets.
    env = fakes.subprocess_env(TFHUB_TRANSFER_WEIGHTS=weights,
                               TFHUB_TRANSFER_WORKDIR=workdir,
                               TFDS_DATA_DIR=self.create_tempdir().full_path)
    # The kernel inherits this process's environment.
    with mock.patch.dict(os.environ, env):
      client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                       resources={"metadata": {"path": os.path.dirname(
                                           _NOTEBOOK)}})
      client.execute()
    outputs = "\n".join(o.get("text", "") for cell in notebook.cells
                        if cell.cell_type == "code" for o in cell.outputs)
    self.assertIn("digits / logreg (seed 0): test top1 =", outputs)
    self.assertIn("digits / scratch (seed 0): test top1 =", outputs)
    # Both cells ran at the quick sizes: the notebook passes its settings on.
    configs = {r["regime"]: r["config"] for r in merged.read_workdir(workdir).records()}
    self.assertEqual({regime: c["max_examples"] for regime, c in configs.items()},
                     dict.fromkeys(("logreg", "scratch"), QUICK_SIZES["MAX_EXAMPLES"]))
    self.assertEqual(configs["scratch"]["train_steps"], QUICK_SIZES["SCRATCH_STEPS"])
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
