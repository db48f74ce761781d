"""Per-image features on disk (stage 02b), computed once and streamed by every later stage.

    compute_features(cfg, prepared, found)          # the stage: paths.features/
    store = FeatureStore(cfg.path("features"))
    z, c = store.latents(ids), store.states(ids)    # rows of the given nsd_ids, read from disk
    pairs = StreamedPairs(prepared, store, subjects=[1, 2], split="train")  # NeuroPictor's training set

What is stored, one row per prepared stimulus (sorted `nsd_ids.npy`):
- `latents.npy`: the foundation VAE's scaled posterior means z0 (n, 4, h, w): what the UNet
  denoises and what the voxel methods decode (NSD at SD-2.1-base: 4 x 64 x 64);
- `caption_states.npy`: the frozen text tower's token states of each image's reference caption
  (n, L_T, d_T): NeuroPictor's L_sem target and the methods' text condition c (NSD: 77 x 1024);
  absent for your own scans without captions.

The stage reads the stimuli `compute.feature_batch` at a time and writes each batch into the
arrays through a short-lived memory map, so its memory does not grow with the number of
images (benchmarks/bench_memory.py); training reads only a batch's rows (`StreamedPairs`,
through `train.fit`'s DataLoader). At NSD's 73k images that is ~19 GB of latents and states
at float32, ~10 GB at `compute.feature_dtype: float16`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .io import DataError, NpyRows, atomic_dir, row_positions

FIX = "Run the features stage first (`dvc repro features`, notebook 02b)."


def has_captions(cfg, prepared) -> bool:
    """NSD and the synthetic world have captions; your own scans only with a captions.json."""
    return cfg.world != "generic" or (Path(prepared.root) / "captions.json").exists()


@torch.no_grad()
def compute_features(cfg, prepared, found, out: str | Path | None = None) -> dict:
    """Encode every prepared stimulus once (VAE latents, caption states) into `out`
    (default `paths.features`), on `compute.device`, `compute.feature_batch` images at a time.
    The folder is written whole or not at all. Returns its manifest."""
    from . import compute
    from .decoding import caption_states, reference_captions
    from .models.foundation import image_latents, images_of

    out = Path(out) if out is not None else cfg.path("features")
    t0 = time.time()
    ids = prepared.stimulus_ids()
    batch, dtype = cfg.compute.feature_batch, cfg.compute.feature_dtype
    pipe = found.pipe
    device = compute.device_of(cfg.compute)
    vae, text = pipe.vae.to(device), has_captions(cfg, prepared)
    if text:
        pipe.text_encoder.to(device)
    with atomic_dir(out) as tmp:
        np.save(tmp / "nsd_ids.npy", ids)
        latents = states = None
        for start in tqdm(range(0, len(ids), batch), desc="features", unit="batch"):
            chunk = ids[start:start + batch]
            with compute.autocast(cfg.compute):
                z = image_latents(vae, images_of(prepared, chunk).to(device)).float().cpu().numpy()
                c = (caption_states(pipe, reference_captions(cfg, prepared, chunk)).float().cpu().numpy()
                     if text else None)
            if latents is None:
                latents = NpyRows(tmp / "latents.npy", (len(ids), *z.shape[1:]), dtype)
                if text:
                    states = NpyRows(tmp / "caption_states.npy", (len(ids), *c.shape[1:]), dtype)
            latents.write(start, z)
            if text:
                states.write(start, c)
        manifest = {"n_images": int(len(ids)), "dtype": dtype, "batch": batch, "device": str(device),
                    "precision": cfg.compute.precision, "world": cfg.world,
                    "latents": list(np.load(tmp / "latents.npy", mmap_mode="r").shape),
                    "caption_states": (list(np.load(tmp / "caption_states.npy", mmap_mode="r").shape)
                                       if text else None),
                    "seconds": round(time.time() - t0, 1)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


class FeatureStore:
    """Read access to the features folder: rows by nsd_id, read from disk on each call."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.exists():
            raise DataError(f"{path} not found: no per-image features at {self.root}. {FIX}")
        self.manifest = json.loads(path.read_text())
        self.ids = np.load(self.root / "nsd_ids.npy")
        for name in ("latents",) + (("caption_states",) if self.has_text else ()):
            shape = list(np.load(self.root / f"{name}.npy", mmap_mode="r").shape)
            if shape != self.manifest[name]:
                raise DataError(f"{self.root / name}.npy has shape {shape}, its manifest says {self.manifest[name]}: "
                                f"the folder is damaged. Delete {self.root} and {FIX[0].lower() + FIX[1:]}")

    @property
    def has_text(self) -> bool:
        return self.manifest.get("caption_states") is not None

    def positions(self, nsd_ids) -> np.ndarray:
        return row_positions(self.ids, nsd_ids, self.root,
                             f"The features folder is older than the prepared data. {FIX}")

    def _rows(self, name: str, nsd_ids) -> torch.Tensor:
        pos = self.positions(nsd_ids)
        order = np.argsort(pos, kind="stable")  # read in file order, return in the order asked
        values = np.empty((len(pos), *self.manifest[name][1:]), np.float32)
        values[order] = np.load(self.root / f"{name}.npy", mmap_mode="r")[pos[order]]
        return torch.from_numpy(values)

    def latents(self, nsd_ids) -> torch.Tensor:
        """VAE-scaled latents z0 (n, c, h, w), float32."""
        return self._rows("latents", nsd_ids)

    def states(self, nsd_ids) -> torch.Tensor | None:
        """Caption states (n, L_T, d_T), float32; None without captions."""
        return self._rows("caption_states", nsd_ids) if self.has_text else None


class StreamedPairs:
    """NeuroPictor's training set: (flatmap, z0, caption states) for every row of `subjects`'
    `split`, nothing of it in memory: `pairs[rows]` reads those rows' flatmaps from the
    subjects' prepared arrays and their features from the store (what `train.fit` calls once
    per micro-batch)."""

    def __init__(self, prepared, store: FeatureStore, subjects, split: str):
        if not store.has_text:
            raise DataError(f"{store.root} has no caption states: NeuroPictor trains on captions (L_sem and the "
                            "text condition). Add captions to your data, or use a voxel method.")
        self.prepared, self.store = prepared, store
        self.files, rows, ids, subj = [], [], [], []
        for k, s in enumerate(subjects):
            table = prepared.rows(s, split)
            self.files.append(prepared.flatmap_file(s))
            rows.append(np.stack([np.full(len(table), k), table.row.to_numpy()], 1))
            ids.append(table.nsd_id.to_numpy())
            subj.append(np.full(len(table), int(s) if str(s).isdigit() else s))
        self.where = np.concatenate(rows)  # (n, 2): subject slot, row in its flatmaps.npy
        self.nsd_ids, self.subjects = np.concatenate(ids), np.concatenate(subj)

    def __len__(self) -> int:
        return len(self.nsd_ids)

    def maps(self, rows) -> torch.Tensor:
        rows = np.asarray(rows)
        where = self.where[rows]
        out = None
        for k in np.unique(where[:, 0]):
            sel = np.flatnonzero(where[:, 0] == k)
            block = np.load(self.files[k], mmap_mode="r")[where[sel, 1]]
            if out is None:
                out = np.empty((len(rows), *block.shape[1:]), np.float32)
            out[sel] = block
        return torch.from_numpy(out)

    def __getitem__(self, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = np.asarray(rows)
        ids = self.nsd_ids[rows]
        return self.maps(rows), self.store.latents(ids), self.store.states(ids)
