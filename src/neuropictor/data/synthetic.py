"""Write the synthetic world to disk in NSD's own file layout, plus a resting-state corpus.

    write_world(cfg)   # -> paths.synthetic_root/{nsd, corpus, truth, attributes.csv}

What is simulated (all sizes from params.yaml, `synthetic` section):
- stimuli: procedural scenes (stimuli.py), 5 captions each, an attribute table;
- a design like NSD's: a shared test set every subject sees, unique training images per
  subject, `n_repeats` presentations each, spread randomly over sessions; subjects 1, 2, 5, 7
  complete all sessions, the others stop early (missing some repeats, as in NSD);
- per subject: an anatomy (warp of the maps), an SNR factor, trial noise with a spatially
  shared component, and per-session drift of each vertex's baseline and gain;
- betas on fsaverage5 (`.mgh`, float32, percent signal change) and in a subject-specific
  volume grid (`.nii.gz`, int16 = percent signal change x 300) sampled from the same
  cortex, with nsdgeneral / prf-visualrois / streams ROIs and ncsnr estimated from repeats.
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from tqdm import tqdm

from ..config import Settings
from ..io import atomic_dir, save_json
from . import cortex
from .brain import SubjectBrain
from .nsd import N_SUBJECTS, NSDLayout, read_expdesign
from .prep import zscore_rows
from .stimuli import COLOURS, SHAPES, make_stimuli

CORPUS_DIR = "corpus"


# --------------------------------------------------------------------------- design
def make_design(n_shared: int, n_unique: int, n_repeats: int, rng: np.random.Generator):
    """NSD-style design: (subjectim (8, n) 0-based ids, masterordering 0-based, shared ids)."""
    n_total = n_shared + N_SUBJECTS * n_unique
    perm = rng.permutation(n_total)
    shared = np.sort(perm[:n_shared])
    own = np.sort(perm[n_shared:].reshape(N_SUBJECTS, n_unique), axis=1)
    subjectim = np.concatenate([np.tile(shared, (N_SUBJECTS, 1)), own], axis=1)
    n_per = n_shared + n_unique
    order = rng.permutation(np.repeat(np.arange(n_per), n_repeats))
    return subjectim, order, shared


def noise_ceiling(ncsnr: np.ndarray, n_avg: int) -> np.ndarray:
    """NSD's noise ceiling (percent) for responses averaged over `n_avg` trials."""
    return 100 * ncsnr**2 / (ncsnr**2 + 1.0 / n_avg)


class RepeatStats:
    """Running per-image sums of z-scored betas -> ncsnr (NSD's definition)."""

    def __init__(self, n_images: int, n_units: int):
        self.s1 = np.zeros((n_images, n_units), np.float64)
        self.s2 = np.zeros((n_images, n_units), np.float64)
        self.n = np.zeros(n_images, np.int64)

    def add(self, image_idx: np.ndarray, z: np.ndarray) -> None:
        np.add.at(self.s1, image_idx, z)
        np.add.at(self.s2, image_idx, z.astype(np.float64) ** 2)
        np.add.at(self.n, image_idx, 1)

    def ncsnr(self) -> np.ndarray:
        rep = self.n >= 2
        n = self.n[rep, None]
        var = (self.s2[rep] - self.s1[rep] ** 2 / n) / (n - 1)
        noise_var = np.maximum(var.mean(0), 1e-6)
        return (np.sqrt(np.maximum(1 - noise_var, 0)) / np.sqrt(noise_var)).astype(np.float32)


# --------------------------------------------------------------------------- volume
def volume_sampling(pial: np.ndarray, voxel_mm: float, rng: np.random.Generator):
    """Assign jittered cortical vertices to a subject's voxel grid.

    Returns (dims, affine, voxel linear indices of brain voxels, sparse averaging matrix
    (n_brain_voxels, n_vertices)).
    """
    scale = np.exp(rng.normal(0, 0.03))
    coords = pial * scale + rng.normal(0, 2.0, 3)
    origin = coords.min(0) - 2 * voxel_mm
    ijk = np.floor((coords - origin) / voxel_mm).astype(np.int64)
    dims = tuple(int(d) for d in ijk.max(0) + 3)
    lin = np.ravel_multi_index(ijk.T, dims)
    brain, inv = np.unique(lin, return_inverse=True)
    counts = np.bincount(inv)
    avg = sp.csr_matrix((1.0 / counts[inv], (inv, np.arange(lin.size))), shape=(brain.size, lin.size))
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = origin
    return dims, affine, brain, avg.astype(np.float32)


def _majority(labels: np.ndarray, avg: sp.csr_matrix, n_codes: int) -> np.ndarray:
    onehot = sp.csr_matrix((np.ones(labels.size), (np.arange(labels.size), labels)),
                           shape=(labels.size, n_codes))
    return np.asarray((avg @ onehot).argmax(1)).ravel()


def _save_volume(values: np.ndarray, brain: np.ndarray, dims, affine, path: Path, dtype, fill=0):
    """Values of the brain voxels (n_brain[, frames]) -> a NIfTI grid, `fill` elsewhere."""
    extra = values.shape[1:]
    grid = np.full((int(np.prod(dims)), *extra), fill, dtype)
    grid[brain] = values
    grid = grid.reshape(*dims, *extra)
    img = nib.Nifti1Image(grid, affine)
    img.set_data_dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _save_mgh(values: np.ndarray, path: Path) -> None:
    """(n_vertices,) or (n_vertices, n_frames) -> FreeSurfer MGH/MGZ (n, 1, 1, frames)."""
    data = values.reshape(values.shape[0], 1, 1, -1)
    if data.shape[-1] == 1:
        data = data[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.MGHImage(np.ascontiguousarray(data), np.eye(4)), str(path))


def _save_hemis(values: np.ndarray, path_of) -> None:
    n = cortex.N_VERTS
    for h, hemi in enumerate(cortex.HEMIS):
        _save_mgh(values[h * n:(h + 1) * n], path_of(hemi))


# --------------------------------------------------------------------------- subjects
def _noise_model(rng: np.random.Generator, cfg: Settings, n_vert: int) -> dict:
    syn = cfg.synthetic
    snr = rng.uniform(*syn.snr_range)
    sd = (syn.noise_psc / snr * np.exp(rng.normal(0, 0.2, n_vert))).astype(np.float32)
    direction = rng.normal(size=3)
    sphere = np.concatenate([cortex.fsaverage5()[h]["sphere"] for h in cortex.HEMIS])
    loading = (0.5 * syn.noise_psc * (0.5 + 0.5 * np.abs(sphere @ direction / np.linalg.norm(direction))))
    return {"snr": float(snr), "sd": sd, "loading": loading.astype(np.float32)}


def simulate_subject(cfg: Settings, subj: int, out: Path) -> dict:
    """Write one subject's betas, ROIs and ncsnr under `out` (an NSD root)."""
    sizes, syn = cfg.sizes, cfg.synthetic
    layout = NSDLayout(out)
    rng = np.random.default_rng([cfg.seed, subj])
    design = read_expdesign(layout)
    subjectim, order = design.subjectim[subj - 1], design.masterordering
    with h5py.File(layout.stimuli, "r") as fh:
        images = fh["imgBrick"][np.sort(subjectim)]
    images = images[np.argsort(np.argsort(subjectim))]
    attrs = pd.read_csv(out.parent / "attributes.csv").iloc[subjectim].reset_index(drop=True)

    anatomy = cortex.Anatomy.sample(rng, syn.anatomy_jitter)
    brain = SubjectBrain(anatomy, syn.visual_field_deg, rng)
    drive = brain.drive(images, attrs)
    brain.calibrate(drive)
    signal = brain.signal(drive, syn.signal_psc)  # (n_images_of_subject, n_vertices)
    n_vert = signal.shape[1]
    noise = _noise_model(rng, cfg, n_vert)

    pial = np.concatenate([cortex.fsaverage5()[h]["pial"] for h in cortex.HEMIS])
    dims, affine, brain_vox, avg = volume_sampling(pial, sizes.voxel_size_mm, rng)
    area = brain.maps["area"]
    visual = _majority((area > 0).astype(np.int64), avg, 2)
    rois = {
        "nsdgeneral": visual,
        "prf-visualrois": _majority(cortex.prf_visualrois(area, brain.maps["v"]), avg, 8),
        "streams": _majority(cortex.streams(area), avg, 8),
    }
    for name, values in rois.items():
        _save_volume(values.astype(np.int16), brain_vox, dims, affine, layout.roi(subj, name), np.int16, fill=-1)

    complete = subj in syn.complete_subjects
    n_sessions = sizes.n_sessions_complete if complete else sizes.n_sessions_partial
    T = sizes.trials_per_session
    vox_stats = RepeatStats(subjectim.size, brain_vox.size)
    vert_stats = RepeatStats(subjectim.size, n_vert)
    for session in range(1, n_sessions + 1):
        cols = order[(session - 1) * T: session * T]  # image index within the subject
        offset = rng.normal(0, syn.session_offset_psc, n_vert).astype(np.float32)
        gain = (1 + rng.normal(0, syn.session_gain_sd, n_vert)).astype(np.float32)
        shared = rng.normal(0, 1, (T, 1)).astype(np.float32)
        trial_noise = rng.standard_normal((T, n_vert), np.float32) * noise["sd"]
        betas = signal[cols] * gain + offset + trial_noise + shared * noise["loading"]
        _save_hemis(betas.T, lambda hemi: layout.surface_betas(subj, session, hemi))
        vox = (avg @ betas.T).T  # (T, n_brain_voxels)
        vox += rng.standard_normal(vox.shape, np.float32) * 0.3 * syn.noise_psc
        vox_int = np.clip(np.round(vox * cfg.prep.volume_beta_scale), -32768, 32767).astype(np.int16)
        _save_volume(vox_int.T, brain_vox, dims, affine, layout.volume_betas(subj, session), np.int16)
        vox_stats.add(cols, zscore_rows(vox_int.astype(np.float32)))
        vert_stats.add(cols, zscore_rows(betas))  # last use of betas: z-scored in place

    _save_volume(vox_stats.ncsnr(), brain_vox, dims, affine, layout.volume_ncsnr(subj), np.float32)
    _save_hemis(vert_stats.ncsnr(), lambda hemi: layout.surface_ncsnr(subj, hemi))
    truth = out.parent / "truth" / f"subj{subj:02d}.npz"
    truth.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(truth, **{k: v for k, v in brain.maps.items()}, snr=noise["snr"],
                        anatomy=np.array(json.dumps(anatomy.__dict__)))
    return {"subject": subj, "sessions": n_sessions, "snr": noise["snr"],
            "n_voxels": int(brain_vox.size), "n_nsdgeneral": int(visual.sum())}


# --------------------------------------------------------------------------- corpus
def resting_state_maps(brain: SubjectBrain, n_maps: int, rng: np.random.Generator,
                       size: int = 64) -> np.ndarray:
    """Spontaneous activity maps: the visual hierarchy driven by random smooth patterns,
    random category activity in HVC, and smooth fluctuations of non-visual cortex."""
    from scipy import ndimage

    noise = rng.normal(0, 1, (n_maps, size, size, 3))
    noise = ndimage.gaussian_filter(noise, sigma=(0, 4, 4, 0))
    noise = (noise - noise.mean()) / noise.std()
    patterns = np.clip(127.5 + 60 * noise, 0, 255).astype(np.uint8)
    hvc = rng.dirichlet(np.ones(len(SHAPES) + len(COLOURS)) * 0.5, n_maps).astype(np.float32)
    drive = brain.drive(patterns, hvc_activation=hvc)
    brain.calibrate(drive)
    maps = brain.signal(drive, 1.0)
    sphere = np.concatenate([cortex.fsaverage5()[h]["sphere"] for h in cortex.HEMIS])
    centres = rng.normal(size=(n_maps, 4, 3))
    centres /= np.linalg.norm(centres, axis=-1, keepdims=True)
    blobs = np.exp((np.einsum("vd,mkd->mkv", sphere, centres) - 1) / 0.05)  # von Mises bumps
    maps += (rng.normal(0, 1, (n_maps, 4, 1)) * blobs).sum(1).astype(np.float32)
    maps += rng.standard_normal(maps.shape, np.float32) * 0.3
    return maps


def simulate_corpus(cfg: Settings, out: Path) -> int:
    """Resting-state surface maps of many further subjects (the UK Biobank stand-in)."""
    sizes, syn = cfg.sizes, cfg.synthetic
    rows = []
    for k in tqdm(range(1, sizes.n_corpus_subjects + 1), desc="corpus subjects", leave=False):
        rng = np.random.default_rng([cfg.seed, 1000 + k])
        brain = SubjectBrain(cortex.Anatomy.sample(rng, syn.anatomy_jitter), syn.visual_field_deg, rng)
        maps = resting_state_maps(brain, sizes.corpus_maps_per_subject, rng)
        sub = out / f"sub-{k:04d}"
        _save_hemis(maps.T, lambda hemi: sub / f"{'lh' if hemi == 'left' else 'rh'}.rest.mgh")
        rows.append({"participant_id": f"sub-{k:04d}", "n_maps": sizes.corpus_maps_per_subject})
    pd.DataFrame(rows).to_csv(out / "participants.tsv", sep="\t", index=False)
    return len(rows)


# --------------------------------------------------------------------------- world
def _savemat_reproducible(path: Path, arrays: dict) -> None:
    """scipy's savemat stamps the creation time into the 116-byte text header; a fixed text
    keeps the file (and so DVC's hash of the world) identical for identical params."""
    import io

    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays)
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by neuropictor (synthetic world)".ljust(116)
    path.write_bytes(bytes(data))


def _write_captions(layout: NSDLayout, stim_info: pd.DataFrame, caps: list[list[str]], size: int):
    for split in ("train2017", "val2017"):
        rows = stim_info[stim_info.cocoSplit == split]
        doc = {"info": {"description": "synthetic world captions (COCO format)"},
               "images": [{"id": int(c), "file_name": f"{int(c):012d}.png", "height": size, "width": size}
                          for c in rows.cocoId],
               "annotations": [{"id": int(c) * 10 + j, "image_id": int(c), "caption": cap}
                               for i, c in zip(rows.nsdId, rows.cocoId) for j, cap in enumerate(caps[i])]}
        path = layout.captions(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))


def _stim_info(subjectim, order, shared, n_total, sizes, rng) -> pd.DataFrame:
    info = pd.DataFrame({"nsdId": np.arange(n_total), "cocoId": 1_000_000 + np.arange(n_total),
                         "cocoSplit": np.where(rng.random(n_total) < 0.8, "train2017", "val2017"),
                         "cropBox": "(0, 0, 0, 0)", "shared1000": np.isin(np.arange(n_total), shared)})
    for s in range(N_SUBJECTS):
        seen = np.zeros(n_total, int)
        seen[subjectim[s]] = 1
        info[f"subject{s + 1}"] = seen
        trials = np.zeros((n_total, sizes.n_repeats), int)
        reps = np.zeros(n_total, int)
        for t, col in enumerate(order):  # 1-based trial numbers of each presentation
            nsd_id = subjectim[s, col]
            trials[nsd_id, reps[nsd_id]] = t + 1
            reps[nsd_id] += 1
        for r in range(sizes.n_repeats):
            info[f"subject{s + 1}_rep{r}"] = trials[:, r]
    return info


def write_world(cfg: Settings, root: Path | None = None, n_workers: int | None = None) -> dict:
    """Simulate and write the whole synthetic world; returns a summary (also saved as JSON)."""
    root = Path(root) if root is not None else cfg.path("synthetic_root")
    sizes = cfg.sizes
    rng = np.random.default_rng(cfg.seed)
    n_total = sizes.n_shared + N_SUBJECTS * sizes.n_unique_per_subject
    with atomic_dir(root) as tmp:
        nsd_root = tmp / "nsd"
        layout = NSDLayout(nsd_root)
        images, caps, attrs = make_stimuli(n_total, sizes.image_size, rng)
        attrs.insert(0, "nsd_id", np.arange(n_total))
        attrs.to_csv(tmp / "attributes.csv", index=False)
        subjectim, order, shared = make_design(sizes.n_shared, sizes.n_unique_per_subject, sizes.n_repeats, rng)
        layout.expdesign.parent.mkdir(parents=True, exist_ok=True)
        _savemat_reproducible(layout.expdesign, {"masterordering": (order + 1)[None].astype(np.float64),
                                                 "subjectim": (subjectim + 1).astype(np.float64),
                                                 "sharedix": (shared + 1)[None].astype(np.float64)})
        info = _stim_info(subjectim, order, shared, n_total, sizes, rng)
        info.to_csv(layout.stim_info, index=False)
        layout.stimuli.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(layout.stimuli, "w") as fh:
            fh.create_dataset("imgBrick", data=images, chunks=(1, *images.shape[1:]))
        _write_captions(layout, info, caps, sizes.image_size)

        template = cortex.both_hemispheres(cortex.Anatomy(), len(SHAPES), len(COLOURS))
        labels = {"nsdgeneral": (template["area"] > 0).astype(np.int16),
                  "prf-visualrois": cortex.prf_visualrois(template["area"], template["v"]),
                  "streams": cortex.streams(template["area"])}
        for name, values in labels.items():
            _save_hemis(values.astype(np.int32), lambda hemi: layout.fsaverage_label(name, hemi))

        workers = n_workers or cfg.prep.n_workers
        subjects = list(range(1, N_SUBJECTS + 1))
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                futures = [pool.submit(simulate_subject, cfg, s, nsd_root) for s in subjects]
                results = [f.result() for f in tqdm(futures, desc="subjects")]
        else:
            results = [simulate_subject(cfg, s, nsd_root) for s in tqdm(subjects, desc="subjects")]
        n_corpus = simulate_corpus(cfg, tmp / CORPUS_DIR)
        summary = {"n_images": n_total, "n_shared": int(shared.size), "subjects": results,
                   "n_corpus_subjects": n_corpus, "smoke": cfg.smoke, "seed": cfg.seed}
        save_json(tmp / "summary.json", summary)
    return summary
