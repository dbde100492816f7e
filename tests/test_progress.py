"""Progress without a terminal: plain periodic log lines, never a redrawn bar."""

from absl.testing import absltest

from tfhub_transfer import progress


class ProgressTest(absltest.TestCase):

  def test_not_a_terminal_here(self):
    self.assertFalse(progress.is_live())  # The test runner captures stdout.
    self.assertEqual(progress.keras_verbosity(), 2)

  def test_importing_ipykernel_is_not_a_notebook(self):
    # CI's pytest process had imported ipykernel (the notebook test drives a kernel) and took
    # itself for a notebook; a kernel is a running IPython shell with a `kernel`.
    import ipykernel.kernelapp  # noqa: F401  pylint: disable=g-import-not-at-top
    self.assertFalse(progress.is_live())

  def test_plain_lines_every_interval_and_at_the_end(self):
    bar = progress.Progress(4, description="extract digits/train", live=False, interval_s=0.0)
    with self.assertLogs("absl", level="INFO") as logs:
      for done in range(1, 5):
        bar.update(done)
      bar.finish(4)
    messages = [record.getMessage() for record in logs.records]
    self.assertLen(messages, 4)
    self.assertRegex(messages[0], r"^extract digits/train: batch 1/4 \(25%\), \d+ s, ETA \d+ s$")
    self.assertRegex(messages[-1], r"^extract digits/train: batch 4/4 \(100%\), \d+ s$")
    for message in messages:
      self.assertNotIn("\x1b", message)
      self.assertNotIn("\r", message)

  def test_long_interval_gives_the_last_line_only(self):
    bar = progress.Progress(None, description="validate images", unit="file", live=False,
                            interval_s=3600.0)
    with self.assertLogs("absl", level="INFO") as logs:
      for done in range(1, 101):
        bar.update(done)
      bar.finish(100)
    self.assertLen(logs.records, 1)
    self.assertRegex(logs.records[0].getMessage(), r"^validate images: file 100, \d+ s$")


if __name__ == "__main__":
  absltest.main()
