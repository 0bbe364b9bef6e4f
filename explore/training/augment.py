"""Augmentation and intensity transforms on batched tensors, on whatever device holds them.

All functions take float images N×1×H×W in 0..1 (or uint8 for histogram equalisation) and
a torch.Generator, so a seeded run augments identically every time. No horizontal flip
unless asked: on a chest X-ray the heart is on the left, and a flipped image is anatomy
that does not exist.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 7.0
MAX_SHIFT = 0.06  # fraction of the image
MAX_SCALE = 0.07
NOISE_STD = 0.03


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.rand(n, device=like.device, generator=generator) * (high - low) + low


def geometry(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Small random rotation, shift and zoom (one affine warp per image)."""
    n = x.shape[0]
    angle = _uniform(n, -MAX_ROTATION_DEG, MAX_ROTATION_DEG, x, generator) * (math.pi / 180)
    scale = 1.0 + _uniform(n, -MAX_SCALE, MAX_SCALE, x, generator)
    shift = _uniform(2 * n, -MAX_SHIFT, MAX_SHIFT, x, generator).view(n, 2) * 2  # grid units span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def intensity(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Random brightness, contrast and gamma: the differences between scanners and exposures."""
    n = x.shape[0]
    gamma = torch.exp(_uniform(n, math.log(0.75), math.log(1.33), x, generator)).view(n, 1, 1, 1)
    contrast = _uniform(n, 0.8, 1.2, x, generator).view(n, 1, 1, 1)
    brightness = _uniform(n, -0.1, 0.1, x, generator).view(n, 1, 1, 1)
    x = x.clamp(0, 1).pow(gamma)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0, 1)


def noise(x: torch.Tensor, generator=None) -> torch.Tensor:
    std = _uniform(x.shape[0], 0.0, NOISE_STD, x, generator).view(-1, 1, 1, 1)
    return x + torch.randn(x.shape, device=x.device, generator=generator) * std


def hflip(x: torch.Tensor, generator=None) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


TRANSFORMS = {"geometry": geometry, "intensity": intensity, "noise": noise, "hflip": hflip}


def apply(x: torch.Tensor, names: tuple[str, ...], generator=None) -> torch.Tensor:
    for name in ("geometry", "hflip", "intensity", "noise"):  # fixed order, whatever the config lists
        if name in names:
            x = TRANSFORMS[name](x, generator)
    return x


def equalize_histogram(images: torch.Tensor) -> torch.Tensor:
    """Per-image histogram equalisation of uint8 N×1×H×W images (vectorised over the batch)."""
    n = images.shape[0]
    if n == 0:
        return images
    flat = images.reshape(n, -1).long()
    hist = torch.zeros(n, 256, dtype=torch.float32, device=images.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).min(1, keepdim=True).values
    lut = ((cdf - cdf_min) / (cdf[:, -1:] - cdf_min).clamp_min(1) * 255).clamp(0, 255).round().to(torch.uint8)
    return torch.gather(lut, 1, flat).reshape(images.shape)
