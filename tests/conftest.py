"""pytest glue: absl test helpers (create_tempdir, get_temp_dir) read absl flags, which
`tf.test.main()` parses under bazel; under pytest they are marked parsed with defaults."""

from absl import flags


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
