"""The report without its figures, for tests that read only its text and tables
(TensorFlow-free, like the report side): drawing is most of a report's time. The figures
themselves are drawn and checked in test_report (WriteReportTest, Figure1Test,
RegimeColoursTest, test_statistics_section_and_figure2) and test_studies."""

import contextlib
from unittest import mock

from tfhub_transfer.report import plots
from tfhub_transfer.report import study_plots

# (module, function) of each figure `document.write_report` draws by default.
FIGURES = ((plots, "plot_figure1"), (plots, "plot_figure2"),
           (study_plots, "plot_per_dataset"))


def not_drawn(*more: tuple) -> contextlib.ExitStack:
  """A context in which `FIGURES` (and `more` (module, function) pairs) draw nothing."""
  stack = contextlib.ExitStack()
  for module, name in FIGURES + more:
    stack.enter_context(mock.patch.object(module, name, autospec=True))
  return stack
