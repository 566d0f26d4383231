"""Episodic pipelines: sampler, step functions, training loop (``fewnorm.episodes``)."""
