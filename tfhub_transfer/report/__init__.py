"""Report: the results store and its record schema, the paper's reference data, the
statistics, the tables and the figures. Nothing here imports TensorFlow (tests/test_report.py
checks it), so `--mode=report` answers quickly on any machine that holds a workdir.
"""
