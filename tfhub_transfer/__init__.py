"""tfhub_transfer: how well do ImageNet-pretrained networks transfer? (Kornblith et al., 2019)."""

__version__ = "0.1.0"
