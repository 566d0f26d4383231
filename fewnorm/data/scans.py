"""Omniglot scans to model input: decode the 1-bit PNGs, invert, resize (shared by splits and lake20)."""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F

from fewnorm.errors import DataError

# Images per interpolate call: a (256, 1, 105, 105) float chunk (11 MB) stays in cache,
# which measured several times faster than one call on the whole split.
_CHUNK = 256


def decode_pngs(blobs: list[bytes], names: list[str]) -> torch.Tensor:
    """Decode grayscale PNGs of one size into an ``(N, H, W)`` uint8 tensor.

    PIL, not ``torchvision.io``: decoding is equally fast for these 1-bit PNGs (~50 us
    each) and importing torchvision would add over a second to every first load.
    """
    from PIL import Image, UnidentifiedImageError

    raw, size = [], None
    for blob, name in zip(blobs, names, strict=True):
        try:
            im = Image.open(io.BytesIO(blob)).convert("L")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cannot decode image {name}: {exc}") from None
        size = size or im.size
        if im.size != size:
            raise DataError(f"image {name} is {im.size}, expected {size} like the others.")
        raw.append(im.tobytes())
    if size is None:
        raise DataError("no images to decode.")
    w, h = size
    return torch.frombuffer(bytearray(b"".join(raw)), dtype=torch.uint8).view(-1, h, w)


def preprocess(raw: torch.Tensor, image_size: int) -> torch.Tensor:
    """Invert and resize ``(N, H, W)`` uint8 scans to ``(N, 1, image_size, image_size)`` uint8.

    Scans are black strokes (0) on white (255); inverting makes strokes 255 on a 0
    background. Bilinear with antialiasing averages the 105x105 pixels each output pixel
    covers, so thin strokes fade to grey rather than vanish.
    """
    out = torch.empty(raw.shape[0], 1, image_size, image_size, dtype=torch.uint8)
    for i in range(0, raw.shape[0], _CHUNK):
        x = (255 - raw[i : i + _CHUNK]).unsqueeze(1).float()  # (n, 1, H, W)
        if x.shape[-2:] != (image_size, image_size):
            x = F.interpolate(
                x,
                size=(image_size, image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        out[i : i + _CHUNK] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out
