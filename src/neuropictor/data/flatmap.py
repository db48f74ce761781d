"""Project fsaverage5 surface values onto a 2D flatmap image cropped to visual cortex.

NeuroPictor turns each scan into a 1 x H x W "brain activation image" (Sec. 3.1). Here the
image is built from nilearn's fsaverage5 flat patches: each hemisphere's flat mesh is cropped
to the bounding box of an ROI label (default: nsdgeneral), scaled uniformly into half of the
image (left hemisphere left, right hemisphere right) and sampled at pixel centres by
barycentric interpolation inside the flat triangles. The result is one sparse matrix
(pixels x vertices), so projecting a whole session is one sparse product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import cortex


@dataclass
class Flatmap:
    size: int
    projection: sp.csr_matrix  # (size * size, 2 * 10242)
    mask: np.ndarray  # (size, size) bool: pixels that fall on cortex
    pixel_xy: np.ndarray  # (size, size, 2) flat-mesh coordinates of pixel centres
    hemi: np.ndarray  # (size, size) 0 = left, 1 = right

    def project(self, values: np.ndarray) -> np.ndarray:
        """(n, 2 * 10242) vertex values -> (n, size, size) images (0 off cortex)."""
        values = np.asarray(values, np.float32)
        flat = (self.projection @ values.T).T
        return np.ascontiguousarray(flat, np.float32).reshape(-1, self.size, self.size)


def _rasterise(xy: np.ndarray, faces: np.ndarray, px: np.ndarray, py: np.ndarray):
    """Barycentric weights of pixel centres (px, py grids) inside flat triangles.

    Vectorised over (triangle, candidate pixel) pairs: each triangle's candidates are the
    pixels of its bounding box. Returns (pixel index, 3 vertex ids, 3 weights) per hit.
    """
    h, w = px.shape
    x0, dx = px[0, 0], px[0, 1] - px[0, 0]
    y0, dy = py[0, 0], py[1, 0] - py[0, 0]  # dy < 0: row 0 is the top of the image
    tri = xy[faces]  # (F, 3, 2)
    lo, hi = tri.min(1), tri.max(1)
    c0 = np.clip(np.ceil((lo[:, 0] - x0) / dx).astype(int), 0, w)
    c1 = np.clip(np.floor((hi[:, 0] - x0) / dx).astype(int) + 1, 0, w)
    r0 = np.clip(np.ceil((hi[:, 1] - y0) / dy).astype(int), 0, h)
    r1 = np.clip(np.floor((lo[:, 1] - y0) / dy).astype(int) + 1, 0, h)
    nc, nr = np.maximum(c1 - c0, 0), np.maximum(r1 - r0, 0)
    count = nc * nr
    face = np.repeat(np.arange(len(faces)), count)
    k = np.arange(face.size) - np.repeat(np.cumsum(count) - count, count)  # index within the box
    rr = r0[face] + k // np.maximum(nc[face], 1)
    cc = c0[face] + k % np.maximum(nc[face], 1)
    p = np.stack([px[rr, cc], py[rr, cc]], 1)
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    v0, v1, v2 = b - a, c - a, p - a
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    ok = np.abs(det) > 1e-12
    det = np.where(ok, det, 1.0)
    l1 = (v2[:, 0] * v1[:, 1] - v2[:, 1] * v1[:, 0]) / det
    l2 = (v0[:, 0] * v2[:, 1] - v0[:, 1] * v2[:, 0]) / det
    bary = np.stack([1 - l1 - l2, l1, l2], 1)
    inside = ok & (bary >= -1e-9).all(1)
    return (rr * w + cc)[inside], faces[face[inside]], bary[inside]


def build_flatmap(roi: np.ndarray, size: int = 64, margin: float = 0.05, roi_only: bool = True) -> Flatmap:
    """Flatmap projection cropped to the bounding box of `roi` (bool, 2 * 10242 vertices).

    roi_only: only the ROI's vertices are drawn and the pixels they do not reach are zero (off
    the mask), as NeuroPictor's flatmaps are (zero outside the visual-cortex mask); a pixel on
    the ROI's border interpolates its ROI vertices only. False: every vertex in the crop is
    drawn, i.e. the cortex around the ROI too."""
    roi = np.asarray(roi, bool)
    n = cortex.N_VERTS
    if roi.shape != (2 * n,):
        raise ValueError(f"roi must have {2 * n} entries (fsaverage5, both hemispheres), got {roi.shape}")
    fs = cortex.fsaverage5()
    half = size // 2
    rows, cols, vals = [], [], []
    pixel_xy = np.zeros((size, size, 2), np.float32)
    hemi_img = np.zeros((size, size), np.int8)
    for h, hemi in enumerate(cortex.HEMIS):
        xy, faces = fs[hemi]["flat"], fs[hemi]["flat_faces"]
        on_mesh = np.zeros(n, bool)
        on_mesh[np.unique(faces)] = True
        sel = roi[h * n:(h + 1) * n] & on_mesh
        if not sel.any():
            raise ValueError(f"the flatmap ROI has no vertex on the {hemi} flat mesh")
        lo, hi = xy[sel].min(0), xy[sel].max(0)
        pad = margin * (hi - lo)
        lo, hi = lo - pad, hi + pad
        scale = min(half / (hi[0] - lo[0]), size / (hi[1] - lo[1]))  # pixels per flat unit
        centre = (lo + hi) / 2
        cx = centre[0] + (np.arange(half) + 0.5 - half / 2) / scale
        cy = centre[1] - (np.arange(size) + 0.5 - size / 2) / scale
        px, py = np.meshgrid(cx, cy)
        pix, verts, w = _rasterise(xy, faces, px, py)
        if roi_only:  # weights on vertices outside the ROI dropped; the rows renormalised below
            w = np.where(roi[h * n:(h + 1) * n][verts], w, 0.0)
        r, c = np.divmod(pix, half)
        rows.append(np.repeat(r * size + c + h * half, 3))
        cols.append(verts.ravel() + h * n)
        vals.append(w.ravel())
        pixel_xy[:, h * half:(h + 1) * half] = np.stack([px, py], -1)
        hemi_img[:, h * half:(h + 1) * half] = h
    proj = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(size * size, 2 * n)).tocsr()
    # a pixel hit by two overlapping triangles keeps the average of both interpolations
    proj.eliminate_zeros()
    total = np.asarray(proj.sum(1)).ravel()
    norm = np.where(total > 0, 1.0 / np.maximum(total, 1e-12), 0.0)
    proj = sp.diags(norm) @ proj
    mask = (total > 0).reshape(size, size)
    return Flatmap(size, proj.astype(np.float32).tocsr(), mask, pixel_xy, hemi_img)
