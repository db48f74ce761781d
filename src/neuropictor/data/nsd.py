"""Readers for the Natural Scenes Dataset's own file layout.

The same functions read the real NSD and the synthetic tree the project writes; see
../shared/REFERENCE.md for the files. Indices in NSD files are 1-based (MATLAB); every
array returned here is 0-based.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from ..io import DataError, require_file

N_SUBJECTS = 8
FSAVERAGE5_VERTS = 10242  # fsaverage5 = the first 10242 vertices of each fsaverage hemisphere
FSAVERAGE_VERTS = 163842
HEMI_PREFIX = {"left": "lh", "right": "rh"}
GET_NSD = ("Get it from the NSD data release (https://naturalscenesdataset.org) into "
           "paths.nsd_root, or set world: synthetic in params.yaml to simulate one.")


class NSDLayout:
    """Paths of one NSD tree."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def expdesign(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_expdesign.mat"

    @property
    def stim_info(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"

    @property
    def stimuli(self) -> Path:
        return self.root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"

    def captions(self, split: str) -> Path:
        return self.root / f"annotations/captions_{split}.json"

    def _betas(self, subj: int, space: str) -> Path:
        return self.root / f"nsddata_betas/ppdata/subj{subj:02d}/{space}/betas_fithrf_GLMdenoise_RR"

    def volume_betas(self, subj: int, session: int) -> Path:
        return self._betas(subj, "func1pt8mm") / f"betas_session{session:02d}.nii.gz"

    def surface_betas(self, subj: int, session: int, hemi: str) -> Path:
        return self._betas(subj, "fsaverage") / f"{HEMI_PREFIX[hemi]}.betas_session{session:02d}.mgh"

    def volume_ncsnr(self, subj: int) -> Path:
        return self._betas(subj, "func1pt8mm") / "ncsnr.nii.gz"

    def surface_ncsnr(self, subj: int, hemi: str) -> Path:
        return self._betas(subj, "fsaverage") / f"{HEMI_PREFIX[hemi]}.ncsnr.mgh"

    def roi(self, subj: int, name: str) -> Path:
        return self.root / f"nsddata/ppdata/subj{subj:02d}/func1pt8mm/roi/{name}.nii.gz"

    def fsaverage_label(self, name: str, hemi: str) -> Path:
        return self.root / f"nsddata/freesurfer/fsaverage/label/{HEMI_PREFIX[hemi]}.{name}.mgz"

    def sessions(self, subj: int, space: str = "func1pt8mm") -> list[int]:
        """Session numbers whose beta files exist (for the surface: both hemispheres)."""
        folder = self._betas(subj, space)
        if not folder.exists():
            return []
        pat = re.compile(r"(?:lh\.)?betas_session(\d+)\.(?:nii\.gz|mgh)$")
        found = sorted({int(m.group(1)) for p in folder.iterdir() if (m := pat.match(p.name))})
        if space == "fsaverage":
            found = [s for s in found if self.surface_betas(subj, s, "right").exists()]
        return found


@dataclass(frozen=True)
class ExpDesign:
    masterordering: np.ndarray  # (n_trials,) 0-based column of subjectim shown on each trial
    subjectim: np.ndarray  # (8, n_images_per_subject) 0-based NSD ids
    sharedix: np.ndarray  # (n_shared,) 0-based NSD ids seen by every subject

    def trial_images(self, subj: int, n_trials: int) -> np.ndarray:
        """0-based NSD id of each of the first `n_trials` trials of subject `subj`."""
        if n_trials > self.masterordering.size:
            raise DataError(
                f"subject {subj} has {n_trials} trials of betas but nsd_expdesign.mat's masterordering "
                f"lists only {self.masterordering.size}; the beta files and design do not belong together.")
        return self.subjectim[subj - 1, self.masterordering[:n_trials]]


def read_expdesign(layout: NSDLayout) -> ExpDesign:
    path = require_file(layout.expdesign, "NSD experiment design", GET_NSD)
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for corrupt files
        raise DataError(f"{path} is not a readable MATLAB file ({err}). Re-download or regenerate it.") from err
    for key in ("masterordering", "subjectim", "sharedix"):
        if key not in mat:
            raise DataError(f"{path} has no variable '{key}'; is this nsd_expdesign.mat?")
    order = np.asarray(mat["masterordering"]).ravel().astype(np.int64) - 1
    subjectim = np.asarray(mat["subjectim"]).astype(np.int64) - 1
    shared = np.asarray(mat["sharedix"]).ravel().astype(np.int64) - 1
    if subjectim.ndim != 2 or subjectim.shape[0] != N_SUBJECTS:
        raise DataError(f"{path}: subjectim should be 8 x n_images, got shape {subjectim.shape}.")
    if order.min() < 0 or order.max() >= subjectim.shape[1]:
        raise DataError(f"{path}: masterordering indexes outside subjectim's {subjectim.shape[1]} columns.")
    return ExpDesign(order, subjectim, shared)


def read_stim_info(layout: NSDLayout) -> pd.DataFrame:
    path = require_file(layout.stim_info, "NSD stimulus table", GET_NSD)
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as err:  # pandas' EmptyDataError / ParserError are ValueErrors
        raise DataError(f"{path} is not a readable CSV table ({err}). Download it again.") from err
    missing = {"cocoId", "cocoSplit", "shared1000"} - set(table.columns)
    if missing:
        raise DataError(f"{path} lacks column(s) {sorted(missing)}; is this nsd_stim_info_merged.csv?")
    if "nsdId" not in table.columns:
        table["nsdId"] = np.arange(len(table))
    return table


def read_stimuli(layout: NSDLayout, ids: np.ndarray, size: int | None = None) -> np.ndarray:
    """Images `ids` (0-based NSD ids) from nsd_stimuli.hdf5 -> (n, size, size, 3) uint8."""
    import h5py

    path = require_file(layout.stimuli, "NSD stimuli", GET_NSD)
    ids = np.asarray(ids, np.int64)
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path} is not a readable HDF5 file ({err}); it may be truncated. Download it again.") from err
    with fh:
        if "imgBrick" not in fh:
            raise DataError(f"{path} has no dataset 'imgBrick'; is this nsd_stimuli.hdf5?")
        brick = fh["imgBrick"]
        if brick.ndim != 4 or brick.shape[-1] != 3:
            raise DataError(f"{path}: imgBrick should be (n, H, W, 3), got {brick.shape}.")
        if ids.size and ids.max() >= brick.shape[0]:
            raise DataError(f"{path} holds {brick.shape[0]} images but id {ids.max()} was asked for.")
        uniq, inverse = np.unique(ids, return_inverse=True)
        side = size or brick.shape[1]
        out = np.empty((uniq.size, side, side, 3), np.uint8)
        for start in range(0, uniq.size, 256):  # chunks bound memory for 425 px NSD images
            want = uniq[start:start + 256]
            lo, hi = int(want[0]), int(want[-1]) + 1
            # a contiguous slab reads far faster than an HDF5 point selection when dense enough
            chunk = brick[lo:hi][want - lo] if hi - lo <= 4 * want.size else brick[want]
            out[start:start + 256] = chunk if chunk.shape[1] == side else resize_images(chunk, side)
    images = out[inverse]
    return images


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 images to size x size."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def read_captions(layout: NSDLayout, stim_info: pd.DataFrame, ids: np.ndarray) -> dict[int, list[str]]:
    """COCO captions of NSD images `ids`, joined by cocoId."""
    by_coco: dict[int, list[str]] = {}
    for split in sorted(set(stim_info.loc[ids, "cocoSplit"])):
        path = require_file(layout.captions(split), f"COCO captions ({split})",
                            "Put COCO's annotations/captions_*.json under paths.nsd_root/annotations.")
        for ann in json.loads(path.read_text())["annotations"]:
            by_coco.setdefault(int(ann["image_id"]), []).append(ann["caption"].strip())
    out = {}
    for i in ids:
        coco = int(stim_info.at[i, "cocoId"])
        if coco not in by_coco:
            raise DataError(f"No caption for NSD image {i} (cocoId {coco}) in {layout.root / 'annotations'}.")
        out[int(i)] = by_coco[coco]
    return out


def _check_betas(data: np.ndarray, path: Path) -> None:
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{path} contains {bad} NaN/inf betas. Re-export the session, or mask those "
                        "voxels out of the ROI before preparing.")


def read_image(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI / MGH file -> (data as stored, affine); a truncated or foreign file stops with
    its path and the fix instead of a gzip or nibabel traceback."""
    import zlib

    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
        return np.asanyarray(img.dataobj), img.affine
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError) as err:
        raise DataError(f"{path} cannot be read as a NIfTI/MGH image ({type(err).__name__}: {str(err)[:200]}); it "
                        "may be truncated. Download it again (or regenerate the synthetic world: "
                        "`dvc repro synthetic_world`).") from err


def load_volume_session(path: Path, mask: np.ndarray, scale: float) -> np.ndarray:
    """One session of volume betas within `mask` -> (n_trials, n_voxels) percent signal change."""
    require_file(path, "volume betas", GET_NSD)
    raw, _ = read_image(path)  # int16 on disk: no float64 copy of the whole volume
    if raw.ndim != 4 or raw.shape[:3] != mask.shape:
        raise DataError(f"{path} has shape {raw.shape}; expected (X, Y, Z, trials) with X, Y, Z = "
                        f"{mask.shape} as in the subject's nsdgeneral ROI.")
    data = raw[mask].T.astype(np.float32)  # (trials, voxels)
    if np.issubdtype(raw.dtype, np.integer):
        data /= scale  # int16 betas are percent signal change x 300
    _check_betas(data, path)
    return data


def to_fsaverage5(values: np.ndarray, path: Path) -> np.ndarray:
    """First axis from fsaverage (163842) or fsaverage5 (10242) vertices -> fsaverage5."""
    n = values.shape[0]
    if n == FSAVERAGE_VERTS or n == FSAVERAGE5_VERTS:
        return values[:FSAVERAGE5_VERTS]
    raise DataError(f"{path} has {n} vertices; expected fsaverage ({FSAVERAGE_VERTS}) or "
                    f"fsaverage5 ({FSAVERAGE5_VERTS}) per hemisphere.")


def load_surface_session(layout: NSDLayout, subj: int, session: int) -> np.ndarray:
    """One session of fsaverage betas, both hemispheres -> (n_trials, 2 * 10242)."""
    out = None
    for h, hemi in enumerate(("left", "right")):
        path = require_file(layout.surface_betas(subj, session, hemi), "surface betas", GET_NSD)
        data, _ = read_image(path)
        data = to_fsaverage5(data.reshape(data.shape[0], -1), path)  # (vertices, trials)
        if out is None:
            out = np.empty((data.shape[1], 2 * FSAVERAGE5_VERTS), np.float32)
        elif data.shape[1] != out.shape[0]:
            raise DataError(f"Session {session} of subject {subj}: left and right hemisphere files have "
                            f"{out.shape[0]} and {data.shape[1]} trials.")
        block = out[:, h * FSAVERAGE5_VERTS:(h + 1) * FSAVERAGE5_VERTS]
        block[:] = data.T  # one copy: byte order and layout converted on the way
        _check_betas(block, path)
    return out


def read_fsaverage_label(layout: NSDLayout, name: str) -> np.ndarray:
    """An fsaverage label (both hemispheres) reduced to fsaverage5 -> (2 * 10242,)."""
    parts = []
    for hemi in ("left", "right"):
        path = require_file(layout.fsaverage_label(name, hemi), f"fsaverage label '{name}'",
                            "It ships with NSD under nsddata/freesurfer/fsaverage/label; "
                            "or choose another prep.flatmap_roi.")
        parts.append(to_fsaverage5(read_image(path)[0].ravel(), path))
    return np.concatenate(parts)


def read_roi(layout: NSDLayout, subj: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A subject's volume ROI -> (values (X, Y, Z), affine)."""
    path = require_file(layout.roi(subj, name), f"ROI '{name}' of subject {subj}", GET_NSD)
    return read_image(path)
