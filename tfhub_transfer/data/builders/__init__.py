"""TFDS builders for the datasets TFDS lacks.

Importing this package registers the builders with TFDS (that is how TFDS builders work), so
`tfds.builder("fgvc_aircraft")`, `"birdsnap"` and `"digits"` resolve; nothing is built or
downloaded at import.
"""

from tfhub_transfer.data.builders import birdsnap
from tfhub_transfer.data.builders import digits
from tfhub_transfer.data.builders import fgvc_aircraft

__all__ = ["birdsnap", "digits", "fgvc_aircraft"]
