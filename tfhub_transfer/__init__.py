"""tfhub_transfer: how well do ImageNet-pretrained networks transfer? (Kornblith et al., 2019)."""

__version__ = "0.1.0"


def __getattr__(name):
  # `load_results` is imported on first use, so `import tfhub_transfer` loads neither pandas
  # nor TensorFlow.
  if name == "load_results":
    from tfhub_transfer.frame import load_results  # pylint: disable=g-import-not-at-top
    return load_results
  raise AttributeError(f"module 'tfhub_transfer' has no attribute {name!r}")
