"""The main job (``make demo``, ``pipelines/main.py``): face model, turntable, synthetic corpus, shards, preview.

Config: :class:`avface.demo.config.MainConfig`; run: :func:`avface.demo.job.run_main_job`.
"""
