"""Corpus discovery, clip processing and sharded WebDataset output; sample decoding for training.

See :mod:`avface.data.preprocess` for the pipeline and :mod:`avface.data.sample` for the sample schema.
"""
