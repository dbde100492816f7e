"""Benchmarks of tfhub_transfer, each a ratio to a baseline measured in the same run.

`python -m bench` (2 CPU cores, about 10 minutes) or `python -m bench --device` (one GPU, a
few minutes); see README.md in this directory.
"""
