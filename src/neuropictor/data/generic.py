"""Your own data: one .npz / .h5 / .mat file instead of the NSD layout.

Set `world: generic` and `paths.generic_input: path/to/file` in params.yaml. The file holds:

| key           | shape                        | required | meaning                                        |
|---------------|------------------------------|----------|------------------------------------------------|
| `images`      | (n_images, H, W, 3) uint8    | yes      | stimuli (float in [0, 1] is accepted too; greyscale (n, H, W) or (n, H, W, 1) is made RGB; RGBA loses its alpha; square only) |
| `fmri`        | (n_trials, n_voxels) float   | yes      | one response pattern per trial (e.g. betas)    |
| `trial_image` | (n_trials,) int              | no       | 0-based image index of each trial (default: trial i = image i); whole-valued floats (MATLAB doubles) are accepted |
| `session`     | (n_trials,) int              | no       | session of each trial, for per-session z-scoring |
| `split`       | (n_images,) "train"/"test"   | no       | default: a seeded random 10 % is test          |
| `captions`    | (n_images,) str              | no       | one caption per image                          |
| `labels`      | (n_images,) or (n_images, k) | no       | numbers kept beside the images (labels.npy)    |
| `roi`         | (n_voxels,) str              | no       | each voxel's area: V1, V2, V3, hV4 (or V4), or any other name for higher areas ("" = none); the CS292F graph decoder needs it |

The prepared output has the same form as NSD's (index.csv rows with subject "own", voxels,
stimuli), so the voxel-based decoders run on it unchanged. No flatmaps: those need surfaces.

What is refused, with the key and the fix named (never guessed): non-square images,
channel-first images, a `trial_image` that looks 1-based (MATLAB) or never shows image 0,
a split without test (or without training) images, sessions too short to z-score, and files
that cannot be read (truncated, empty, another format). MATLAB v7.3 files (HDF5 inside) are
read with h5py and their arrays transposed back to MATLAB's row-major meaning.
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
KEYS = ("images", "fmri", "trial_image", "session", "split", "captions", "labels", "roi")
EARLY_ROIS = {"V1": "V1", "V2": "V2", "V3": "V3", "V4": "hV4", "hV4": "hV4"}


def _strings(x) -> np.ndarray:
    """Any array of str / bytes / MATLAB cell strings -> 1-D array of str."""
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(x).ravel().tolist()])


def _read_mat73(path: Path) -> dict[str, np.ndarray]:
    """A MATLAB v7.3 file is HDF5 with every array stored column-major: h5py sees its axes
    reversed, so each is transposed back. Char arrays come as uint16 code points."""
    import h5py

    data = {}
    with h5py.File(path, "r") as f:
        for key in f.keys():
            if key.startswith("#"):
                continue
            node = f[key]
            if not isinstance(node, h5py.Dataset) or node.dtype.kind == "O":
                raise DataError(f"{path}: '{key}' is a MATLAB cell or struct in a v7.3 file, which cannot be read "
                                "here. Save captions/split as a char matrix or use save(..., '-v7') instead.")
            value = np.asarray(node[()]).T
            if node.attrs.get("MATLAB_class", b"") in (b"char", "char"):
                value = np.array(["".join(map(chr, row)).rstrip() for row in np.atleast_2d(value)])
            data[key] = value
    return data


def read_generic(path: str | Path) -> dict[str, np.ndarray]:
    """Read the keys above from an .npz, .h5/.hdf5 or .mat file (MATLAB v5-v7.3)."""
    import zipfile

    path = require_file(path, "generic input file", "Set paths.generic_input in params.yaml to your file.")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".h5", ".hdf5", ".mat"):
        raise DataError(f"{path}: unsupported extension '{suffix}'; use .npz, .h5/.hdf5 or .mat.")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes); export your data again.")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                groups = [k for k in f.keys() if not isinstance(f[k], h5py.Dataset)]
                if groups:
                    raise DataError(f"{path}: {groups} are HDF5 groups, not arrays; put each key at the file's top "
                                    "level as a dataset.")
                data = {k: f[k][()] for k in f.keys()}
        else:
            import scipy.io

            try:
                raw = scipy.io.loadmat(path, squeeze_me=True)
                data = {k: v for k, v in raw.items() if not k.startswith("__")}
            except NotImplementedError:  # scipy's answer to a v7.3 file
                data = _read_mat73(path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as err:
        kind = {".npz": "a NumPy .npz archive", ".mat": "a MATLAB .mat file"}.get(suffix, "an HDF5 file")
        raise DataError(f"{path} cannot be read as {kind} ({type(err).__name__}: {str(err)[:200]}). It may be "
                        "truncated or of another format: export it again (np.savez, h5py, or MATLAB save).") from err
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise DataError(f"{path}: unknown key(s) {unknown}; valid keys are {', '.join(KEYS)}.")
    for key in ("images", "fmri"):
        if key not in data:
            raise DataError(f"{path} has no '{key}' array; it needs 'images' and 'fmri' (see README, 'Your own data').")
    return {k: _strings(v) if k in ("split", "captions", "roi") else np.asarray(v) for k, v in data.items()}


def _whole_numbers(x: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    """Integers, or whole-valued floats (MATLAB saves doubles), as int64."""
    x = np.asarray(x).ravel()
    if x.shape != (n,) or x.dtype.kind not in "iuf" or (x.dtype.kind == "f" and not
                                                        (np.isfinite(x).all() and (x == np.round(x)).all())):
        raise DataError(f"{path}: '{key}' must be {n} whole numbers (one per trial), got shape {x.shape} "
                        f"dtype {x.dtype}.")
    return x.astype(np.int64)


def validate_generic(data: dict[str, np.ndarray], path: Path, seed: int) -> dict[str, np.ndarray]:
    """Check shapes and dtypes; fill defaults. Returns a cleaned copy."""
    images, fmri = data["images"], data["fmri"]
    if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 1):  # greyscale: documented, made RGB
        images = np.repeat(images.reshape(images.shape[:3])[..., None], 3, axis=-1)
    if images.ndim == 4 and images.shape[-1] == 4:  # RGBA: documented, the alpha channel is dropped
        images = images[..., :3]
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{path}: 'images' has shape {images.shape}, channels first; store them as "
                        "(n_images, H, W, 3), e.g. images.transpose(0, 2, 3, 1).")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: 'images' must be (n_images, H, W, 3), got shape {images.shape}.")
    if images.shape[1] != images.shape[2]:
        raise DataError(f"{path}: 'images' are {images.shape[1]} x {images.shape[2]} pixels, not square; the "
                        "models work on square images, and stretching would distort them. Crop or pad them to "
                        "square before saving.")
    if images.shape[0] == 0:
        raise DataError(f"{path}: 'images' holds no images.")
    if images.dtype != np.uint8:
        if images.dtype.kind != "f" or not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise DataError(f"{path}: 'images' must be uint8 0-255 or float in [0, 1], got {images.dtype} "
                            f"with range [{images.min()}, {images.max()}].")
        images = np.round(images * 255).astype(np.uint8)
    if fmri.ndim != 2 or 0 in fmri.shape:
        raise DataError(f"{path}: 'fmri' must be (n_trials, n_voxels) with at least one of each, got shape "
                        f"{fmri.shape}.")
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
    trial_image = _whole_numbers(trial_image, "trial_image", n_trials, path)
    if trial_image.min() < 0 or trial_image.max() >= n_img:
        hint = " It looks 1-based (MATLAB): subtract 1." if trial_image.min() >= 1 and trial_image.max() == n_img else ""
        raise DataError(f"{path}: 'trial_image' must index images 0..{n_img - 1} (0-based), got "
                        f"{trial_image.min()}..{trial_image.max()}.{hint}")
    if not (trial_image == 0).any():
        raise DataError(f"{path}: no trial shows image 0. If 'trial_image' is 1-based (MATLAB), subtract 1 (else "
                        "every response would be paired with the next image); if image 0 was really never shown, "
                        "drop it from 'images' and renumber.")
    session = _whole_numbers(data.get("session", np.zeros(n_trials, int)), "session", n_trials, path)
    split = data.get("split")
    if split is None:
        rng = np.random.default_rng(seed)
        split = np.where(rng.random(n_img) < 0.1, "test", "train")
    split = _strings(split)
    if split.shape != (n_img,) or not set(split) <= {"train", "test"}:
        raise DataError(f"{path}: 'split' must be {n_img} strings 'train' or 'test'.")
    shown = np.zeros(n_img, bool)
    shown[trial_image] = True
    for part in ("train", "test"):
        if not (shown & (split == part)).any():
            raise DataError(f"{path}: no {part} image is shown in any trial ('split' and 'trial_image'); the "
                            f"methods need both train and test images. Mark some images '{part}'.")
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
    if "roi" in data:
        roi = _strings(data["roi"]).ravel()
        if roi.shape != (fmri.shape[1],):
            raise DataError(f"{path}: 'roi' must be one label per voxel ({fmri.shape[1]}), got shape {roi.shape}.")
        out["roi"] = roi
    return out


def voxel_info_of(roi: np.ndarray) -> pd.DataFrame:
    """Generic `roi` labels -> the prepared voxel table (visual_roi for V1-hV4, stream
    'early' there and 'ventral' for any other non-empty label), as prep writes for NSD."""
    roi = [str(r).strip() for r in roi]
    visual = [EARLY_ROIS.get(r, "") for r in roi]
    stream = ["early" if v else ("ventral" if r else "") for r, v in zip(roi, visual)]
    return pd.DataFrame({"visual_roi": visual, "stream": stream, "roi": roi})


def prepare_generic(cfg: Settings, out_root: Path | None = None) -> dict:
    """Prepare a generic input file (voxel-based methods only)."""
    path = cfg.path("generic_input")
    data = validate_generic(read_generic(path), path, cfg.seed)
    out_root = Path(out_root) if out_root is not None else cfg.path("prepared")
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "index.csv").unlink(missing_ok=True)
    fmri = data["fmri"]
    if cfg.prep.zscore == "session":
        sessions, sizes = np.unique(data["session"], return_counts=True)
        short = sessions[sizes < 2].tolist()
        if short:
            raise DataError(f"{path}: session(s) {short[:10]} hold a single trial, which z-scoring per session "
                            "turns into zeros. Merge them into neighbouring sessions in 'session', or set "
                            "prep.zscore: train (or none) in params.yaml.")
        for s in sessions:
            sel = data["session"] == s
            fmri[sel] = zscore_rows(fmri[sel])
    n_img = data["images"].shape[0]
    counts = np.bincount(data["trial_image"], minlength=n_img)
    sums = np.zeros((n_img, fmri.shape[1]), np.float64)
    np.add.at(sums, data["trial_image"], fmri)
    keep = np.flatnonzero(counts >= cfg.prep.min_repeats)
    if not set(data["split"][keep]) >= {"train", "test"}:
        raise DataError(f"{path}: with prep.min_repeats {cfg.prep.min_repeats}, no "
                        f"{'test' if 'test' not in set(data['split'][keep]) else 'train'} image is left "
                        f"(images are shown at most {counts.max()} times). Lower prep.min_repeats.")
    voxels = (sums[keep] / counts[keep, None]).astype(np.float32)
    split = data["split"][keep]
    if cfg.prep.zscore == "train":
        train = split == "train"
        mean, sd = voxels[train].mean(0), voxels[train].std(0)
        voxels = (voxels - mean) / np.where(sd > 0, sd, 1)
    save_npy(out_root / SUBJECT / "voxels.npy", voxels.astype(np.float32))
    (out_root / SUBJECT / "voxel_info.csv").unlink(missing_ok=True)
    if "roi" in data:
        with atomic_path(out_root / SUBJECT / "voxel_info.csv") as tmp:
            voxel_info_of(data["roi"]).to_csv(tmp, index=False)
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
