"""Normalizer registry, phase signal and built-in normalizers.

>>> from fewnorm.norms import create_norm
>>> layer = create_norm("groupnorm", 64, groups=8)
"""

from fewnorm.norms.builtin import register_builtins
from fewnorm.norms.phase import (
    Phase,
    current_learning_rate_scale,
    current_phase,
    in_vectorized_tasks,
    learning_rate_scale,
    norm_phase,
    task_load,
    task_scope,
    task_store,
    vectorized_tasks,
)
from fewnorm.norms.plugins import load_entry_points, load_plugin, load_plugins
from fewnorm.norms.registry import (
    REGISTRY,
    NormRegistry,
    create_norm,
    get_norm,
    list_norms,
    register_norm,
)
from fewnorm.norms.spec import BoundNorm, NormKind, NormOption, NormSpec

register_builtins(REGISTRY)
REGISTRY.discoverer = load_entry_points  # injected: the registry never imports its plugin loaders

__all__ = [
    "REGISTRY",
    "BoundNorm",
    "NormKind",
    "NormOption",
    "NormRegistry",
    "NormSpec",
    "Phase",
    "create_norm",
    "current_learning_rate_scale",
    "current_phase",
    "get_norm",
    "in_vectorized_tasks",
    "learning_rate_scale",
    "list_norms",
    "load_plugin",
    "load_plugins",
    "norm_phase",
    "register_norm",
    "task_load",
    "task_scope",
    "task_store",
    "vectorized_tasks",
]
