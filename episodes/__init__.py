"""Episodic pipelines: sampler, pure step functions, training loop (installed as ``fewnorm.episodes``)."""
