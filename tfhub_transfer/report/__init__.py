"""Report: the paper's reference data, the statistics, the tables and the figures, read from
sequences of records (`tfhub_transfer.results`). Nothing here imports TensorFlow
(tests/test_report.py checks it), so `--mode=report` answers quickly on any machine that holds a
workdir.
"""
