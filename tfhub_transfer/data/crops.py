"""The evaluation resize-and-crop conventions (`--eval_preprocessing`), as plain data.

The 2019 paper does not state how it resized and cropped images for its fixed features;
two readings are available, each one `EvalPreprocessing` spec. The input pipeline
(`transforms.py`) reads the spec; the CLI and the report read this module, which imports no
TensorFlow.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class EvalPreprocessing:
  """How an evaluation image becomes a square of the network's size.

  The shorter side is resized to round(image_size / crop_fraction), then the central
  image_size x image_size square is kept.

  Attributes:
    name: registry name (`--eval_preprocessing`).
    crop_fraction: share of the resized shorter side kept (1.0: no margin).
    method: resampling kernel, "bilinear" or "bicubic" (antialiased when downscaling).
    source: where the convention comes from.
  """
  name: str
  crop_fraction: float
  method: str
  source: str

  def describe(self) -> str:
    """One phrase for reports, e.g. "shorter side to S / 0.875, central S crop, bilinear"."""
    side = "S" if self.crop_fraction == 1.0 else f"S / {self.crop_fraction:g}"
    return f"shorter side to {side}, central S crop, {self.method} ({self.name})"


EVAL_PREPROCESSINGS: dict[str, EvalPreprocessing] = {s.name: s for s in [
    EvalPreprocessing(
        name="slim", crop_fraction=0.875, method="bilinear",
        source="the ImageNet evaluation crop of TF-slim's checkpoints, the kind of network "
               "the paper evaluates (256 -> 224)"),
    EvalPreprocessing(
        name="simclr", crop_fraction=1.0, method="bicubic",
        source="SimCLR (Chen et al. 2020), Appendix B.8 (paraphrased): the shorter side "
               "resized to the network's size with bicubic resampling, then a central crop "
               "of that size; it says its preprocessing differs slightly from the 2019 "
               "paper's"),
]}

# The default. Kept because every result stored before the option existed was measured with
# it (its protocol id stays what it was), and because the 2019 text gives no crop: the
# standard ImageNet evaluation crop of the checkpoints it studies is the closer reading.
# `simclr` is the convention of the only per-dataset reference numbers the report prints.
DEFAULT_EVAL_PREPROCESSING = "slim"


def get_eval_preprocessing(name: str) -> EvalPreprocessing:
  """The spec of `--eval_preprocessing=name`.

  Raises:
    ValueError: unknown name (the message lists the valid ones).
  """
  if name not in EVAL_PREPROCESSINGS:
    raise ValueError(f"Unknown --eval_preprocessing={name!r}. Valid choices: "
                     f"{', '.join(EVAL_PREPROCESSINGS)}.")
  return EVAL_PREPROCESSINGS[name]
