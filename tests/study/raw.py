"""A constructed ``study.json``: known accuracies, a collapse, a transductive normalizer, probes."""

from __future__ import annotations

from typing import Any

import numpy as np

SEEDS, EPISODES = (0, 1, 2), 40
#: label -> (norm, accuracy offset, one-at-a-time offset, collapsed, property scale)
NORMS = {
    "batchnorm": ("batchnorm", 0.00, -0.50, False, 2.0),
    "groupnorm": ("groupnorm", 0.05, 0.00, False, 3.0),
    "instancenorm": ("instancenorm", -0.05, 0.00, False, 1.0),
    "swbn": ("swbn", 0.10, -0.40, False, 4.0),
    "layernorm": ("layernorm", 0.02, 0.00, False, 2.5),
    "rmsnorm": ("rmsnorm", -0.02, 0.00, False, 1.5),
    "none": ("none", -0.60, 0.00, True, 0.5),
}


def layers(scale: float) -> list[dict[str, Any]]:
    """Four probe layers whose properties all grow with ``scale``."""
    return [
        {"layer": i, "name": f"blocks.{i}.1", "variance": 1.0 + i * scale, "cosine": 0.1 * scale,
         "stable_rank": 1.0 + scale, "grad_norm": scale ** (3 - i)}
        for i in range(4)
    ]  # fmt: skip


def make_raw(algo: str = "protonet") -> dict[str, Any]:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, size=(len(SEEDS), EPISODES))  # shared difficulty of (seed, episode)
    runs = []
    for label, (_, offset, alone, collapsed, _) in NORMS.items():
        for i, seed in enumerate(SEEDS):
            accs = np.clip(base[i] + offset + 0.02 * rng.standard_normal(EPISODES), 0, 1)
            runs.append({
                "label": label, "seed": seed, "status": "ok", "message": "",
                "test_accuracies": accs.tolist(), "parameters": 100, "seconds_per_episode": 0.1,
                "curve": [], "curve_ci95": [], "losses": [],
                "collapse": "accuracy at chance (20%)" if collapsed else "",
                "one_at_a_time": np.clip(accs + alone, 0, 1).tolist(),
            })  # fmt: skip
    cell = {
        "name": f"{algo}-5w1s", "algo": algo, "ways": 5, "shots": 1, "backbone": "conv4",
        "baseline": "batchnorm", "settings": {"base": {"episodes": 10}, "seeds": list(SEEDS)},
        "norms": [{"label": k, "norm": v[0], "options": {}} for k, v in NORMS.items()],
        "runs": runs, "memory_bytes": {k: 2**20 * (i + 1) for i, k in enumerate(NORMS)},
    }  # fmt: skip
    probes = [{"backbone": "conv4", "label": k, "norm": v[0], "options": {}, "layers": layers(v[4])}
              for k, v in NORMS.items()]  # fmt: skip
    command = "fewnorm study runs/s/spec.yaml --out runs/s"
    return {"command": command, "invoked": "", "spec_file": "runs/s/spec.yaml", "out": "runs/s",
            "versions": {"torch": "x"}, "spec": {"algos": [algo]}, "probe_seeds": 3, "cells": [cell],
            "probes": probes}  # fmt: skip
