"""Small affine distortions: identity at zero ranges, seeded, within their ranges, batched per image."""

from __future__ import annotations

import math

import torch

from fewnorm.data.affine import SMALL, AffineRanges, affine_episode, affine_images, random_matrices
from fewnorm.episodes.sampler import Episode

NONE = AffineRanges(degrees=0.0, shear=0.0, scale=0.0, translate=0.0)


def _images(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_zero_ranges_leave_images_unchanged() -> None:
    images = _images()
    out = affine_images(images, torch.Generator().manual_seed(0), NONE)
    assert torch.allclose(out, images, atol=1e-5)


def test_the_generator_decides_every_distortion() -> None:
    images = _images()
    a = affine_images(images, torch.Generator().manual_seed(3))
    b = affine_images(images, torch.Generator().manual_seed(3))
    c = affine_images(images, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == images.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0 + 1e-6


def test_matrices_stay_within_the_ranges() -> None:
    theta = random_matrices(2000, torch.Generator().manual_seed(0))  # (n, 2, 3)
    assert theta.shape == (2000, 2, 3)
    assert float(theta[:, :, 2].abs().max()) <= 2 * SMALL.translate + 1e-7  # normalized units
    # |det| = sx * sy * (1 - shx * shy): bounded by the scale and shear ranges.
    det = torch.linalg.det(theta[:, :, :2]).abs()
    low = (1 - SMALL.scale) ** 2 * (1 - SMALL.shear**2)
    high = (1 + SMALL.scale) ** 2 * (1 + SMALL.shear**2)
    assert float(det.min()) >= low - 1e-6 and float(det.max()) <= high + 1e-6
    rotation_only = random_matrices(500, torch.Generator().manual_seed(1), AffineRanges(shear=0, scale=0))
    angles = torch.atan2(rotation_only[:, 1, 0], rotation_only[:, 0, 0]).abs()
    assert float(angles.max()) <= math.radians(SMALL.degrees) + 1e-6


def test_each_image_of_an_episode_gets_its_own_distortion() -> None:
    image = _images(1)
    episode = Episode(
        image.expand(4, -1, -1, -1), torch.arange(4), image.expand(4, -1, -1, -1), torch.arange(4), 4, 1, 1
    )
    out = affine_episode(episode, torch.Generator().manual_seed(0))
    both = torch.cat([out.support, out.query])  # (8, 1, 28, 28): eight copies, eight distortions
    assert len({tuple(x.flatten()[:200].tolist()) for x in both}) == 8
    assert out.support_labels is episode.support_labels and out.query_labels is episode.query_labels
