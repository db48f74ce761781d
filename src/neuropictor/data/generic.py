"""Your own data: one .npz / .h5 / .mat file instead of the NSD layout.

Set `world: generic` and `paths.generic_input: path/to/file` in params.yaml. The file holds:

| key           | shape                        | required | meaning                                        |
|---------------|------------------------------|----------|------------------------------------------------|
| `images`      | (n_images, H, W, 3) uint8    | yes      | stimuli (float in [0, 1] is accepted too)      |
| `fmri`        | (n_trials, n_voxels) float   | yes      | one response pattern per trial (e.g. betas)    |
| `trial_image` | (n_trials,) int              | no       | image index of each trial (default: trial i = image i) |
| `session`     | (n_trials,) int              | no       | session of each trial, for per-session z-scoring |
| `split`       | (n_images,) "train"/"test"   | no       | default: a seeded random 10 % is test          |
| `captions`    | (n_images,) str              | no       | one caption per image                          |
| `labels`      | (n_images,) or (n_images, k) | no       | numbers kept beside the images (labels.npy)    |

The prepared output has the same form as NSD's (index.csv rows with subject "own", voxels,
stimuli), so the voxel-based decoders run on it unchanged. No flatmaps: those need surfaces.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Settings
from ..io import DataError, atomic_path, require_file, save_json, save_npy
from .nsd import resize_images
from .prep import zscore_rows

SUBJECT = "own"
KEYS = ("images", "fmri", "trial_image", "session", "split", "captions", "labels")


def _strings(x) -> np.ndarray:
    """Any array of str / bytes / MATLAB cell strings -> 1-D array of str."""
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(x).ravel().tolist()])


def read_generic(path: str | Path) -> dict[str, np.ndarray]:
    """Read the keys above from an .npz, .h5/.hdf5 or .mat file."""
    path = require_file(path, "generic input file", "Set paths.generic_input in params.yaml to your file.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    elif suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            data = {k: f[k][()] for k in f.keys()}
    elif suffix == ".mat":
        import scipy.io

        raw = scipy.io.loadmat(path, squeeze_me=True)
        data = {k: v for k, v in raw.items() if not k.startswith("__")}
    else:
        raise DataError(f"{path}: unsupported extension '{suffix}'; use .npz, .h5/.hdf5 or .mat.")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise DataError(f"{path}: unknown key(s) {unknown}; valid keys are {', '.join(KEYS)}.")
    for key in ("images", "fmri"):
        if key not in data:
            raise DataError(f"{path} has no '{key}' array; it needs 'images' and 'fmri' (see README, 'Your own data').")
    return {k: _strings(v) if k in ("split", "captions") else np.asarray(v) for k, v in data.items()}


def validate_generic(data: dict[str, np.ndarray], path: Path, seed: int) -> dict[str, np.ndarray]:
    """Check shapes and dtypes; fill defaults. Returns a cleaned copy."""
    images, fmri = data["images"], data["fmri"]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: 'images' must be (n_images, H, W, 3), got shape {images.shape}.")
    if images.dtype != np.uint8:
        if images.dtype.kind != "f" or images.min() < 0 or images.max() > 1:
            raise DataError(f"{path}: 'images' must be uint8 0-255 or float in [0, 1], got {images.dtype} "
                            f"with range [{images.min()}, {images.max()}].")
        images = np.round(images * 255).astype(np.uint8)
    if fmri.ndim != 2:
        raise DataError(f"{path}: 'fmri' must be (n_trials, n_voxels), got shape {fmri.shape}.")
    if fmri.dtype.kind not in "fiu":
        raise DataError(f"{path}: 'fmri' must be numeric, got dtype {fmri.dtype}.")
    fmri = fmri.astype(np.float32)
    if not np.isfinite(fmri).all():
        raise DataError(f"{path}: 'fmri' has {int((~np.isfinite(fmri)).sum())} NaN/inf values; "
                        "drop those voxels (columns) or trials before preparing.")
    n_img, n_trials = images.shape[0], fmri.shape[0]
    trial_image = data.get("trial_image")
    if trial_image is None:
        if n_trials != n_img:
            raise DataError(f"{path}: {n_trials} fMRI trials but {n_img} images and no 'trial_image' "
                            "saying which image each trial showed.")
        trial_image = np.arange(n_trials)
    trial_image = np.asarray(trial_image).ravel()
    if trial_image.shape != (n_trials,) or trial_image.dtype.kind not in "iu":
        raise DataError(f"{path}: 'trial_image' must be {n_trials} integers, got {trial_image.shape} "
                        f"{trial_image.dtype}.")
    if trial_image.min() < 0 or trial_image.max() >= n_img:
        raise DataError(f"{path}: 'trial_image' must index images 0..{n_img - 1} (0-based).")
    session = np.asarray(data.get("session", np.zeros(n_trials, int))).ravel()
    if session.shape != (n_trials,):
        raise DataError(f"{path}: 'session' must have one entry per trial ({n_trials}), got {session.shape}.")
    split = data.get("split")
    if split is None:
        rng = np.random.default_rng(seed)
        split = np.where(rng.random(n_img) < 0.1, "test", "train")
    split = _strings(split)
    if split.shape != (n_img,) or not set(split) <= {"train", "test"}:
        raise DataError(f"{path}: 'split' must be {n_img} strings 'train' or 'test'.")
    out = {"images": images, "fmri": fmri, "trial_image": trial_image, "session": session, "split": split}
    if "captions" in data:
        caps = _strings(data["captions"])
        if caps.shape != (n_img,):
            raise DataError(f"{path}: 'captions' must be one string per image ({n_img}), got {caps.shape}.")
        out["captions"] = caps
    if "labels" in data:
        labels = np.asarray(data["labels"])
        if labels.shape[0] != n_img or labels.dtype.kind not in "fiub":
            raise DataError(f"{path}: 'labels' must be numeric with {n_img} rows, got {labels.shape} {labels.dtype}.")
        out["labels"] = labels
    return out


def prepare_generic(cfg: Settings, out_root: Path | None = None) -> dict:
    """Prepare a generic input file (voxel-based methods only)."""
    path = cfg.path("generic_input")
    data = validate_generic(read_generic(path), path, cfg.seed)
    out_root = Path(out_root) if out_root is not None else cfg.path("prepared")
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "index.csv").unlink(missing_ok=True)
    fmri = data["fmri"]
    if cfg.prep.zscore == "session":
        for s in np.unique(data["session"]):
            sel = data["session"] == s
            fmri[sel] = zscore_rows(fmri[sel])
    n_img = data["images"].shape[0]
    counts = np.bincount(data["trial_image"], minlength=n_img)
    sums = np.zeros((n_img, fmri.shape[1]), np.float64)
    np.add.at(sums, data["trial_image"], fmri)
    keep = np.flatnonzero(counts >= cfg.prep.min_repeats)
    voxels = (sums[keep] / counts[keep, None]).astype(np.float32)
    split = data["split"][keep]
    if cfg.prep.zscore == "train":
        train = split == "train"
        mean, sd = voxels[train].mean(0), voxels[train].std(0)
        voxels = (voxels - mean) / np.where(sd > 0, sd, 1)
    save_npy(out_root / SUBJECT / "voxels.npy", voxels.astype(np.float32))
    images = data["images"][keep]
    if images.shape[1] != cfg.prep.image_size:
        images = resize_images(images, cfg.prep.image_size)
    save_npy(out_root / "stimuli.npy", images)
    save_npy(out_root / "stimuli_ids.npy", keep)
    if "captions" in data:
        with atomic_path(out_root / "captions.json") as tmp:
            tmp.write_text(json.dumps({str(i): [str(data["captions"][i])] for i in keep}))
    if "labels" in data:
        save_npy(out_root / "labels.npy", data["labels"][keep])
    index = pd.DataFrame({"subject": SUBJECT, "row": np.arange(keep.size), "nsd_id": keep,
                          "split": split, "n_repeats": counts[keep]})
    summary = {"world": "generic", "input": str(path), "subjects": [SUBJECT],
               "n_train": {SUBJECT: int((split == "train").sum())}, "n_test": {SUBJECT: int((split == "test").sum())},
               "n_voxels": {SUBJECT: int(voxels.shape[1])}, "zscore": cfg.prep.zscore}
    save_json(out_root / "summary.json", summary)
    with atomic_path(out_root / "index.csv") as tmp:
        index.to_csv(tmp, index=False)
    return summary
