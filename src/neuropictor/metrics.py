"""The MindEye metric suite (which NeuroPictor copies), plus synthetic-world attribute metrics.

One entry point: `evaluate(gt, rec, networks)`. Definitions follow MindEye's evaluation code
(see ../shared/REFERENCE.md):

| metric     | rule                                                    | input size |
|------------|---------------------------------------------------------|------------|
| PixCorr    | Pearson r of flattened RGB, mean over images            | 425        |
| SSIM       | grey, Gaussian weights sigma 1.5, population covariance | 425        |
| AlexNet(2) | two-way identification on features.4                    | 256        |
| AlexNet(5) | two-way identification on features.11                   | 256        |
| Inception  | two-way identification on avgpool                       | 342        |
| CLIP       | two-way identification on the image embedding           | 224        |
| EffNet-B   | mean correlation distance on avgpool (lower is better)  | 255        |
| SwAV       | mean correlation distance on avgpool (lower is better)  | 224        |

Networks are pluggable (`MetricNetworks`): the paper world uses the ImageNet / OpenAI
weights, the synthetic world in-world stand-ins, whose names carry a dagger ("AlexNet(2)†")
so that nobody mistakes them for the ImageNet networks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # (n, 3, s, s) in [0, 1] -> (n, ...) features

IDENTIFICATION = ("AlexNet(2)", "AlexNet(5)", "Inception", "CLIP")
DISTANCE = ("EffNet-B", "SwAV")
METRICS = ("PixCorr", "SSIM") + IDENTIFICATION + DISTANCE
LOWER_IS_BETTER = set(DISTANCE)
INPUT_SIZE = {"AlexNet(2)": 256, "AlexNet(5)": 256, "Inception": 342, "CLIP": 224, "EffNet-B": 255, "SwAV": 224}
PIXEL_SIZE = 425


@dataclass
class MetricNetworks:
    """Feature extractors by metric name; `stand_in` marks in-world networks (dagger)."""

    features: dict[str, FeatureFn] = field(default_factory=dict)
    stand_in: bool = False
    input_size: dict[str, int] = field(default_factory=lambda: dict(INPUT_SIZE))

    def label(self, metric: str) -> str:
        return f"{metric}†" if self.stand_in and metric in self.features else metric


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def to_tensor(images) -> torch.Tensor:
    """uint8 (n, H, W, 3) or float (n, 3, H, W) in [0, 1] -> float (n, 3, H, W) in [0, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    bad = ValueError(f"images must be (n, 3, H, W) float or (n, H, W, 3) uint8, got {tuple(images.shape)}")
    if images.ndim != 4:  # checked before the uint8 permute, which would fail with a RuntimeError
        raise bad
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float() / 255.0
    images = images.float()
    if images.shape[1] != 3:
        raise bad
    return images.clamp(0, 1)


def _pixel_batches(gt: torch.Tensor, rec: torch.Tensor, batch: int):
    """Pairs of batches resized to PIXEL_SIZE (float64): memory stays at `batch` images at
    425 px whatever the test-set size. Small batches on purpose: a few images' float64
    planes stay in the CPU cache (measured ~3x faster than batches of 32)."""
    for s in range(0, len(gt), batch):
        yield (_resize(gt[s:s + batch], PIXEL_SIZE).double(), _resize(rec[s:s + batch], PIXEL_SIZE).double())


def _pixcorr_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Pearson r of flattened RGB pixels, (n, 3, s, s) -> (n,)."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


GREY = np.array([0.2125, 0.7154, 0.0721])  # skimage's rgb2gray weights
SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5


def _blur(x: np.ndarray) -> np.ndarray:
    """skimage's Gaussian window, image by image (scipy is ~2x faster on 2-D arrays than with
    a zero sigma along a batch axis)."""
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(im, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE) for im in x])


def _ssim_rows(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image greyscale SSIM, (n, 3, s, s) -> (n,), as skimage's structural_similarity."""
    c1, c2 = 0.01**2, 0.03**2
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # skimage averages away from the borders the window overhangs
    a = np.einsum("nchw,c->nhw", a.numpy(), GREY)
    b = np.einsum("nchw,c->nhw", b.numpy(), GREY)
    mu_a, mu_b = _blur(a), _blur(b)
    va, vb, cov = _blur(a * a) - mu_a**2, _blur(b * b) - mu_b**2, _blur(a * b) - mu_a * mu_b
    s_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s_map[:, pad:-pad, pad:-pad].mean((1, 2))


def pixcorr(gt: torch.Tensor, rec: torch.Tensor, batch: int = 4) -> float:
    """Mean over images of the Pearson r between flattened RGB pixels (at 425 px)."""
    return float(torch.cat([_pixcorr_rows(a, b) for a, b in _pixel_batches(gt, rec, batch)]).mean())


def ssim(gt: torch.Tensor, rec: torch.Tensor, batch: int = 4) -> float:
    """Mean SSIM of greyscale images at 425 px, as skimage's structural_similarity with
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1: the same
    filters (scipy's gaussian_filter, truncate 3.5, mode 'reflect'), with the SSIM algebra
    done for a batch at once; equal to skimage to float precision (tested)."""
    return float(np.concatenate([_ssim_rows(a, b) for a, b in _pixel_batches(gt, rec, batch)]).mean())


def _corr_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """r[i, j] = Pearson r between a[i] and b[j] (rows are flattened feature vectors)."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True).clamp_min(1e-12)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True).clamp_min(1e-12)
    return a @ b.T / (a.shape[1] - 1)


def two_way_identification(gt_feats: torch.Tensor, rec_feats: torch.Tensor) -> float:
    """MindEye's two-way identification: for reconstruction j, the fraction of other ground
    truths i (i != j) with r(gt_i, rec_j) < r(gt_j, rec_j); mean over j."""
    n = gt_feats.shape[0]
    if n < 2:
        raise ValueError("two-way identification needs at least 2 images")
    r = _corr_matrix(gt_feats, rec_feats)
    congruent = torch.diagonal(r)
    success = (r < congruent[None, :]).sum(0)  # the diagonal itself never counts (not <)
    return float(success.double().mean() / (n - 1))


def correlation_distance(gt_feats: torch.Tensor, rec_feats: torch.Tensor) -> float:
    """Mean over images of 1 - Pearson r between matching feature vectors."""
    a = gt_feats.flatten(1).double()
    b = rec_feats.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return float((1 - r).mean())


@torch.no_grad()
def _features(fn: FeatureFn, images: torch.Tensor, size: int, batch: int) -> torch.Tensor:
    return torch.cat([fn(_resize(images[s:s + batch], size)).float().cpu()
                      for s in range(0, len(images), batch)])


def evaluate(gt, rec, networks: MetricNetworks | None = None, batch: int = 32) -> dict[str, float]:
    """All metrics of the suite for paired images (ground truth i <-> reconstruction i).

    Metrics whose network is not in `networks` are skipped. Keys carry a dagger for
    stand-in networks. Identification scores are fractions in [0, 1] (tables show %)."""
    gt, rec = to_tensor(gt), to_tensor(rec)
    if gt.shape[0] != rec.shape[0]:
        raise ValueError(f"{gt.shape[0]} ground-truth images but {rec.shape[0]} reconstructions")
    networks = networks or MetricNetworks()
    pix, ssims = [], []
    for a, b in _pixel_batches(gt, rec, 4):  # one resize to 425 px serves both pixel metrics
        pix.append(_pixcorr_rows(a, b))
        ssims.append(_ssim_rows(a, b))
    out = {"PixCorr": float(torch.cat(pix).mean()), "SSIM": float(np.concatenate(ssims).mean())}
    for metric in IDENTIFICATION + DISTANCE:
        fn = networks.features.get(metric)
        if fn is None:
            continue
        size = networks.input_size.get(metric, INPUT_SIZE[metric])
        fg, fr = _features(fn, gt, size, batch), _features(fn, rec, size, batch)
        score = two_way_identification(fg, fr) if metric in IDENTIFICATION else correlation_distance(fg, fr)
        out[networks.label(metric)] = score
    return out
