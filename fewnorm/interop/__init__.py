"""Adapters between fewnorm and other few-shot libraries (``fewnorm.interop.learn2learn``).

Submodules import their library lazily: ``import fewnorm.interop`` never needs it.
"""
