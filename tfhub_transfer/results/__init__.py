"""Results: what a run stores and everything that reads it back, with no TensorFlow.

  records.py      `ResultRecord`, `TrialRecord`, `ScoreRecord`: frozen, one JSON form each
  store.py        `ResultsStore`: one host's SQLite file (results, trials, scores)
  merged.py       `WorkdirResults`: every host's file of a workdir, read together; `forget`
  predictions.py  per-example test predictions files
  workdir.py      `Workdir`: every path in a workdir; `cell_dirname`
  storage.py      `StoreError` and atomic writes

The run side writes through `ResultsStore`; the report reads sequences of records and never
writes a store.
"""
