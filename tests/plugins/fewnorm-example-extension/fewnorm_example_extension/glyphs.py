"""Procedural glyphs: a few-shot dataset drawn by code, deterministic, with no files.

Each class is three random line segments (its seed: the split and the class index); each of
its images draws them again in a random colour, with the endpoints jittered and the glyph
shifted by up to three pixels, on faint noise: the shape, not the colour, tells classes
apart. Splits have disjoint classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fewnorm.data.store import ImageStore
from fewnorm.errors import OptionError

SIZE = 32
CLASSES = {"train": 64, "val": 16, "test": 16}
IMAGES_PER_CLASS = 20
SEGMENTS = 3
_SPLIT_SEED = {"train": 1, "val": 2, "test": 3}


def _draw(segments: torch.Tensor, colour: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Segments ``(S, 2, 2)`` (endpoints, xy in pixels) in ``colour`` (3,) over ``noise``: (3, H, W) in [0, 1]."""
    coords = torch.arange(SIZE, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), -1).reshape(-1, 1, 2)  # (H*W, 1, 2)
    a, b = segments[:, 0], segments[:, 1]  # (S, 2) each
    ab = b - a
    t = ((grid - a) * ab).sum(-1) / ab.pow(2).sum(-1).clamp_min(1e-6)  # (H*W, S)
    nearest = a + t.clamp(0, 1)[..., None] * ab  # (H*W, S, 2)
    distance = (grid - nearest).norm(dim=-1).min(dim=1).values  # (H*W,)
    ink = (1.5 - distance).clamp(0, 1).reshape(1, SIZE, SIZE)  # (1, H, W): strokes about 3 px wide
    return (ink * colour[:, None, None] + noise).clamp(0, 1)


def _class_images(split: str, index: int) -> torch.Tensor:
    """The ``(IMAGES_PER_CLASS, 3, SIZE, SIZE)`` uint8 images of one class."""
    g = torch.Generator().manual_seed(_SPLIT_SEED[split] * 100_003 + index)
    template = torch.rand(SEGMENTS, 2, 2, generator=g) * (SIZE - 8) + 4  # (S, 2, 2)
    images = []
    for _ in range(IMAGES_PER_CLASS):
        colour = torch.rand(3, generator=g) * 0.6 + 0.4  # (3,)
        jitter = torch.randn(SEGMENTS, 2, 2, generator=g) * 2.0
        shift = torch.randint(-3, 4, (1, 1, 2), generator=g).float()
        noise = torch.rand(3, SIZE, SIZE, generator=g) * 0.1
        images.append(_draw(template + jitter + shift, colour, noise))
    return (torch.stack(images) * 255).round().to(torch.uint8)


def load_split(dataset: str, split: str, root: Path | str | None = None, **options: Any) -> ImageStore:
    """The store of one split, drawn now (about a second); ``root`` is unused, options are refused."""
    if options:
        raise OptionError(f"{dataset} takes no load options, got {', '.join(options)}.")
    if split not in CLASSES:
        raise OptionError(f"unknown split '{split}'; use one of: {', '.join(CLASSES)}.")
    per_class = [_class_images(split, i) for i in range(CLASSES[split])]
    return ImageStore.from_classes(per_class, [f"{split}/glyph{i:03d}" for i in range(CLASSES[split])])
