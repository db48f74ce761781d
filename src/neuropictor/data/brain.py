"""Encoding model of the synthetic world: stimulus -> noiseless response per cortical vertex.

Retinotopic vertices integrate local image features (edge energy, luminance, colour
opponency) over a Gaussian pRF and pass the sum through a compressive power law (the CSS
model of Kay et al. 2013). HVC vertices respond to the identity (shape) and colour of the
objects, weighted by object size, with broad position tolerance.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from . import cortex
from .stimuli import COLOURS, SHAPES, SIZES

FEATURE_GRID = 32  # features are pooled to this grid before the pRFs read them
N_CHANNELS = 7


def image_features(images: np.ndarray) -> np.ndarray:
    """(n, S, S, 3) uint8 -> (n, 7, G, G) float32 feature maps (G = FEATURE_GRID).

    Channels: edge energy, luminance ON / OFF (above / below mid-grey), R-G and B-Y colour
    opponency, each half-wave rectified into two channels.
    """
    x = images.astype(np.float32) / 255.0
    lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
    gy = ndimage.sobel(lum, axis=1)
    gx = ndimage.sobel(lum, axis=2)
    edges = np.sqrt(gx**2 + gy**2) / 4.0
    rg = x[..., 0] - x[..., 1]
    by = x[..., 2] - 0.5 * (x[..., 0] + x[..., 1])
    maps = np.stack([edges, np.maximum(lum - 0.5, 0), np.maximum(0.5 - lum, 0), np.maximum(rg, 0), np.maximum(-rg, 0),
                     np.maximum(by, 0), np.maximum(-by, 0)], axis=1)
    n, c, s, _ = maps.shape
    f = s // FEATURE_GRID
    return maps.reshape(n, c, FEATURE_GRID, f, FEATURE_GRID, f).mean(axis=(3, 5))


def prf_weights(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, field_deg: float) -> np.ndarray:
    """Gaussian pRF weights over the feature grid: (n_vertices, G*G).

    Normalised by the pRF's full integral (not the part on screen), so a pRF that falls
    off the stimulus gets proportionally less drive.
    """
    g = FEATURE_GRID
    step = field_deg / g
    centres = (np.arange(g) + 0.5) * step - field_deg / 2
    px, py = np.meshgrid(centres, -centres)  # y up, row 0 at the top of the image
    d2 = (px.ravel()[None] - x[:, None]) ** 2 + (py.ravel()[None] - y[:, None]) ** 2
    s2 = sigma[:, None] ** 2
    return (np.exp(-d2 / (2 * s2)) * step**2 / (2 * np.pi * s2)).astype(np.float32)


class SubjectBrain:
    """Noiseless responses of one subject's cortex (both hemispheres, 20484 vertices)."""

    def __init__(self, anatomy: cortex.Anatomy, field_deg: float, rng: np.random.Generator):
        self.anatomy = anatomy
        self.field_deg = field_deg
        self.maps = cortex.both_hemispheres(anatomy, len(SHAPES), len(COLOURS))
        area = self.maps["area"]
        self.retino = np.flatnonzero((area >= 1) & (area <= 5))
        self.hvc = np.flatnonzero(area == 6)
        m = self.maps
        self.weights = prf_weights(m["x"][self.retino], m["y"][self.retino], m["sigma"][self.retino], field_deg)
        names = [cortex.AREAS[a] for a in area[self.retino]]
        base = np.array([cortex.CHANNEL_WEIGHTS[n] for n in names], np.float32)
        self.channel_w = base * rng.uniform(0.7, 1.3, base.shape).astype(np.float32)
        self.exponent = np.array([cortex.CSS_EXPONENT[n] for n in names], np.float32)
        self.hvc_weights = prf_weights(m["x"][self.hvc], m["y"][self.hvc], m["sigma"][self.hvc], field_deg)
        n_vert = area.size
        self.gain = np.exp(rng.normal(0, 0.25, n_vert)).astype(np.float32)  # vertex gain
        self.scale: np.ndarray | None = None

    def drive(self, images: np.ndarray, attributes: pd.DataFrame | None = None,
              hvc_activation: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        """Raw (unscaled) response (n_images, 20484); zero outside visual cortex.

        HVC is driven by the objects in `attributes`, or (resting state) directly by
        `hvc_activation` (n_images, n_shapes + n_colours) category activations.
        """
        n = len(images)
        out = np.zeros((n, self.maps["area"].size), np.float32)
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            feats = image_features(images[sl]).reshape(sl.stop - start, N_CHANNELS, -1)
            resp = np.einsum("ncp,vp->nvc", feats, self.weights)
            resp = (resp * self.channel_w[None]).sum(-1)
            out[sl, self.retino] = np.power(np.maximum(resp, 0) + 1e-6, self.exponent[None])
            if attributes is not None:
                out[sl, self.hvc] = self._hvc_drive(attributes.iloc[sl])
            elif hvc_activation is not None:
                tuning = np.concatenate([self.maps["shape_tuning"], self.maps["colour_tuning"]], 1)
                out[sl, self.hvc] = hvc_activation[sl] @ tuning[self.hvc].T
        return out

    def _hvc_drive(self, attrs: pd.DataFrame) -> np.ndarray:
        shape_t = self.maps["shape_tuning"][self.hvc]  # (v, n_shapes)
        colour_t = self.maps["colour_tuning"][self.hvc]
        out = np.zeros((len(attrs), self.hvc.size), np.float32)
        g = FEATURE_GRID
        shape_idx = {s: i for i, s in enumerate(SHAPES)}
        colour_idx = {c: i for i, c in enumerate(COLOURS)}
        for row_i, (_, row) in enumerate(attrs.iterrows()):
            for k in range(int(row["n_objects"])):
                w = SIZES[row[f"size_{k}"]] / SIZES["large"]
                col = min(int(row[f"x_{k}"] * g), g - 1)
                rw = min(int(row[f"y_{k}"] * g), g - 1)
                where = self.hvc_weights[:, rw * g + col] / self.hvc_weights.max()
                out[row_i] += w * where * (shape_t[:, shape_idx[row[f"shape_{k}"]]]
                                           + 0.6 * colour_t[:, colour_idx[row[f"colour_{k}"]]])
        return out

    def calibrate(self, drive: np.ndarray) -> None:
        """Fix the per-vertex scale so the mean evoked response is 1 (set once per subject)."""
        mean = drive.mean(0)
        self.scale = np.where(mean > 0, 1.0 / np.maximum(mean, 1e-8), 0).astype(np.float32)

    def signal(self, drive: np.ndarray, amplitude_psc: float) -> np.ndarray:
        """Scaled response in percent signal change."""
        if self.scale is None:
            raise RuntimeError("call calibrate() on a reference set of drives first")
        return drive * (self.scale * self.gain * amplitude_psc)[None]
