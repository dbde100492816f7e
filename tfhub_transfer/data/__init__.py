"""Data: the dataset registry, splits, the input pipeline, preprocessing and image folders.

`datasets` holds the registry (`DatasetSpec`s, TF-free) and `loading.load_splits` turns a spec
into its splits; `readers` turns one split of a TFDS builder or an image folder (`folder`) into
encoded examples; `pipeline` decodes and preprocesses them into batches, with the image
transforms of `transforms` (the evaluation crop conventions of `crops`, TF-free) and the
threads of `threads`. `builders/` holds the
TFDS builders of the datasets TFDS lacks.
"""
