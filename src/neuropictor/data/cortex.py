"""The simulated visual cortex on nilearn's fsaverage5 meshes.

Retinotopic areas V1, V2, V3 (dorsal + ventral), hV4 and V3ab around the occipital pole
follow a log-polar (complex-log-like) map with mirror-reversed polar angle at each area
border; population receptive fields (pRFs) grow with eccentricity and from V1 to hV4.
Higher ventral cortex (HVC) carries patches tuned to object shape and colour. Each
subject's maps are a smooth warp of the template (pole shift, rotation, scaling), which
is the individual difference a cross-subject fMRI encoder has to absorb.

Coordinates: every vertex gets map coordinates (u, v) on the sphere around the pole:
u runs from the pole (fovea) anteriorly (periphery), v across the areas (+ dorsal).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

HEMIS = ("left", "right")
N_VERTS = 10242  # per hemisphere, fsaverage5
AREAS = ("none", "V1", "V2", "V3", "hV4", "V3ab", "HVC")
# NSD's prf-visualrois codes: 1 V1v, 2 V1d, 3 V2v, 4 V2d, 5 V3v, 6 V3d, 7 hV4
# NSD's streams codes used here: 1 early, 2 midventral, 5 ventral, 7 parietal

# template geometry (radians of arc on the unit sphere)
MAP_LENGTH = 0.7  # pole -> ecc_max along u
ECC_RHO = 0.23  # log-polar compression: ecc ~ exp(u / rho)
BAND = 0.19  # width of one area across v
ECC_MAX = 8.0  # deg; covers the corners of an 8.4 deg stimulus
# pRF size: sigma = a + b * ecc  (deg), roughly as measured in human early visual cortex
PRF_SIZE = {"V1": (0.25, 0.10), "V2": (0.3, 0.15), "V3": (0.4, 0.22), "hV4": (0.6, 0.35), "V3ab": (0.8, 0.4)}
CSS_EXPONENT = {"V1": 0.8, "V2": 0.7, "V3": 0.6, "hV4": 0.5, "V3ab": 0.5, "HVC": 1.0}
# feature channels: edge energy, luminance ON, OFF, R-G (+/-), B-Y (+/-)
CHANNEL_WEIGHTS = {
    "V1": (1.0, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3),
    "V2": (1.0, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3),
    "V3": (0.9, 0.3, 0.3, 0.4, 0.4, 0.4, 0.4),
    "hV4": (0.4, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9),
    "V3ab": (0.9, 0.6, 0.6, 0.1, 0.1, 0.1, 0.1),
}
N_SHAPE_PATCHES = 2  # patches per category in HVC


@functools.lru_cache(maxsize=1)
def fsaverage5() -> dict:
    """nilearn's bundled fsaverage5 meshes (offline), as plain arrays per hemisphere."""
    from nilearn import datasets

    fs = datasets.load_fsaverage("fsaverage5")
    out = {}
    for hemi in HEMIS:
        sphere = fs["sphere"].parts[hemi].coordinates
        flat = fs["flat"].parts[hemi]
        out[hemi] = {
            "sphere": sphere / np.linalg.norm(sphere, axis=1, keepdims=True),
            "pial": fs["pial"].parts[hemi].coordinates,
            "flat": flat.coordinates[:, :2],
            "flat_faces": flat.faces,
        }
    out["meshes"] = fs
    return out


@dataclass(frozen=True)
class Anatomy:
    """One subject's warp of the template maps (all zero = the template)."""

    pole_shift: tuple[float, float] = (0.0, 0.0)  # radians, along (axis, across)
    rotation: float = 0.0  # radians, rotation of the map axis about the pole
    length_scale: float = 1.0
    band_scale: float = 1.0
    patch_shift: tuple[float, float] = (0.0, 0.0)  # HVC patch displacement (radians)

    @classmethod
    def sample(cls, rng: np.random.Generator, jitter: float = 1.0) -> "Anatomy":
        return cls(
            pole_shift=tuple(rng.normal(0, 0.06 * jitter, 2)),
            rotation=float(rng.normal(0, 0.12 * jitter)),
            length_scale=float(np.exp(rng.normal(0, 0.08 * jitter))),
            band_scale=float(np.exp(rng.normal(0, 0.08 * jitter))),
            patch_shift=tuple(rng.normal(0, 0.05 * jitter, 2)),
        )


def _frame(hemi: str, anatomy: Anatomy):
    """Pole and tangent axes (axis -> periphery, across -> dorsal) for one hemisphere."""
    fs = fsaverage5()[hemi]
    pole = fs["sphere"][np.argmin(fs["pial"][:, 1])]  # the occipital pole
    axis = np.array([0.0, 1.0, 0.0]) - pole[1] * pole  # anterior, in the tangent plane
    axis /= np.linalg.norm(axis)
    across = np.cross(pole, axis)
    if across[2] < 0:
        across = -across  # + = superior = dorsal
    # warp: shift the pole along the tangent plane, then rotate the axes about it
    shift = anatomy.pole_shift[0] * axis + anatomy.pole_shift[1] * across
    pole = pole * np.cos(np.linalg.norm(shift)) + (
        shift / max(np.linalg.norm(shift), 1e-12)) * np.sin(np.linalg.norm(shift))
    pole /= np.linalg.norm(pole)
    axis = axis - (axis @ pole) * pole
    axis /= np.linalg.norm(axis)
    across = np.cross(pole, axis)
    if across[2] < 0:
        across = -across
    c, s = np.cos(anatomy.rotation), np.sin(anatomy.rotation)
    return pole, c * axis + s * across, -s * axis + c * across


def map_coordinates(hemi: str, anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of every vertex: azimuthal-equidistant coordinates around the pole."""
    x = fsaverage5()[hemi]["sphere"]
    pole, axis, across = _frame(hemi, anatomy)
    cos_t = np.clip(x @ pole, -1, 1)
    theta = np.arccos(cos_t)
    tangent = x - cos_t[:, None] * pole
    norm = np.linalg.norm(tangent, axis=1)
    norm[norm == 0] = 1
    tangent /= norm[:, None]
    u = theta * (tangent @ axis) / anatomy.length_scale
    v = theta * (tangent @ across) / anatomy.band_scale
    far = theta > 1.7  # the map lives within ~100 degrees of the pole; not the antipode
    u[far], v[far] = 10.0, 10.0
    return u, v


def _category_centres(n_cat: int, seed: int) -> np.ndarray:
    """Template (u, v) centres of the HVC patches: (n_cat, N_SHAPE_PATCHES, 2)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.2 * MAP_LENGTH, 1.2 * MAP_LENGTH, (n_cat, N_SHAPE_PATCHES))
    v = rng.uniform(-5.8 * BAND, -4.2 * BAND, (n_cat, N_SHAPE_PATCHES))
    return np.stack([u, v], -1)


def retinotopy(hemi: str, anatomy: Anatomy, n_shapes: int, n_colours: int) -> dict:
    """Per-vertex area, pRF (x, y, sigma in deg; y up), and HVC tuning for one hemisphere."""
    u, v = map_coordinates(hemi, anatomy)
    w = BAND
    av = np.abs(v)
    inside_u = (u > -0.4 * w) & (u < MAP_LENGTH)
    area = np.zeros(u.shape, np.int8)
    area[inside_u & (av < w)] = 1
    area[inside_u & (av >= w) & (av < 2 * w)] = 2
    area[inside_u & (av >= 2 * w) & (av < 3 * w)] = 3
    short_u = (u > -0.4 * w) & (u < 0.8 * MAP_LENGTH)
    area[short_u & (v <= -3 * w) & (v > -4 * w)] = 4
    area[short_u & (v >= 3 * w) & (v < 4 * w)] = 5
    hvc = (u > 0.1 * MAP_LENGTH) & (u < 1.3 * MAP_LENGTH) & (v <= -4 * w) & (v > -6 * w)
    area[hvc] = 6

    uu = np.clip(u, 0, None)
    ecc = ECC_MAX * np.expm1(uu / ECC_RHO) / np.expm1(MAP_LENGTH / ECC_RHO)
    # polar angle within the contralateral hemifield, degrees, -90 (lower) .. 90 (upper)
    angle = np.zeros_like(u)
    angle = np.where(area == 1, -(v / w) * 90, angle)
    angle = np.where(area == 2, -np.sign(v) * (2 * w - av) / w * 90, angle)
    angle = np.where(area == 3, -np.sign(v) * (av - 2 * w) / w * 90, angle)
    angle = np.where(area == 4, 90 - (av - 3 * w) / w * 180, angle)
    angle = np.where(area == 5, -90 + (v - 3 * w) / w * 180, angle)
    side = 1.0 if hemi == "left" else -1.0  # left hemisphere sees the right visual field
    rad = np.deg2rad(angle)
    x_deg, y_deg = side * ecc * np.cos(rad), ecc * np.sin(rad)
    sigma = np.zeros_like(u)
    for code, name in enumerate(AREAS):
        if name in PRF_SIZE:
            a, b = PRF_SIZE[name]
            sigma = np.where(area == code, a + b * ecc, sigma)
    # HVC: broad pRFs near the contralateral fovea, tuned to shape and colour patches
    x_deg = np.where(area == 6, side * 1.5, x_deg)
    y_deg = np.where(area == 6, 0.0, y_deg)
    sigma = np.where(area == 6, 3.5, sigma)
    ecc = np.where(area == 6, 1.5, ecc)
    pos = np.stack([u, v], -1) - np.asarray(anatomy.patch_shift)
    tuning = {}
    for name, n_cat, seed in (("shape", n_shapes, 11), ("colour", n_colours, 23)):
        centres = _category_centres(n_cat, seed)  # (n_cat, patches, 2)
        d2 = ((pos[:, None, None, :] - centres[None]) ** 2).sum(-1)  # (verts, n_cat, patches)
        strength = np.exp(-d2 / (2 * (0.6 * w) ** 2)).sum(-1)  # (verts, n_cat)
        pref = np.exp(6 * strength)
        tuning[name] = (pref / pref.sum(1, keepdims=True)).astype(np.float32)
    off = area == 0
    ecc, sigma, x_deg, y_deg = (np.where(off, 0.0, a) for a in (ecc, sigma, x_deg, y_deg))
    polar = np.where(side > 0, angle, 180 - angle) % 360  # NSD convention: 0 = right, 90 = up
    return {"area": area, "u": u, "v": v, "ecc": ecc, "angle": polar, "x": x_deg, "y": y_deg,
            "sigma": sigma, "shape_tuning": tuning["shape"], "colour_tuning": tuning["colour"]}


def both_hemispheres(anatomy: Anatomy, n_shapes: int, n_colours: int) -> dict:
    """`retinotopy` of left then right hemisphere, concatenated (2 x 10242 vertices)."""
    maps = [retinotopy(h, anatomy, n_shapes, n_colours) for h in HEMIS]
    return {k: np.concatenate([m[k] for m in maps]) for k in maps[0]}


def prf_visualrois(area: np.ndarray, v: np.ndarray) -> np.ndarray:
    """NSD prf-visualrois codes (1 V1v .. 7 hV4) from areas; ventral = v < 0."""
    code = np.zeros(area.shape, np.int16)
    ventral = v < 0
    for a, (vent, dors) in {1: (1, 2), 2: (3, 4), 3: (5, 6)}.items():
        code[(area == a) & ventral] = vent
        code[(area == a) & ~ventral] = dors
    code[area == 4] = 7
    return code


def streams(area: np.ndarray) -> np.ndarray:
    """NSD streams codes: 1 early (V1-V3), 2 midventral (hV4), 5 ventral (HVC), 7 parietal."""
    code = np.zeros(area.shape, np.int16)
    code[np.isin(area, (1, 2, 3))] = 1
    code[area == 4] = 2
    code[area == 6] = 5
    code[area == 5] = 7
    return code
