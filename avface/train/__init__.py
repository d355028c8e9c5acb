"""Staged training of AVFace (paper 3.1-3.5) with Ray Train on the preprocessed WebDataset shards, tracked in
MLflow. ``pipelines/train.py`` is the entry point; :func:`avface.train.trainer.run_training` the library call."""
