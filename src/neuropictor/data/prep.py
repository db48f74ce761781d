"""Data prep (stage 1): NSD layout (real or synthetic) -> prepared arrays + an index table.

For every subject, session by session (memory bounded by one session):
  volume betas within nsdgeneral -> /300 -> z-score per voxel within the session
  surface betas (fsaverage -> fsaverage5) -> z-score per vertex -> flatmap projection
  -> running per-image sums on disk; then repeats are averaged and images split into
  train (the subject's own images) and test (the shared images every subject saw).

Output (paths.prepared):
  index.csv                      one row per (subject, image): row, nsd_id, split, n_repeats
  subjXX/voxels.npy              (n_images, n_voxels) float32, rows as in index.csv
  subjXX/flatmaps.npy            (n_images, size, size) float32
  subjXX/flatmap_halves.npz      test images seen >= 2 times: nsd_id (n,), halves (n, 2, size, size),
                                 the means of their even- and odd-numbered repeats (split-half
                                 reliability of the maps)
  subjXX/voxel_info.csv          one row per voxel column: i, j, k (volume index), visual_roi
                                 (V1/V2/V3/hV4 from prf-visualrois, "" elsewhere), stream (streams)
  stimuli.npy, stimuli_ids.npy   images (n, S, S, 3) uint8 of every nsd_id in index.csv
  captions.json                  nsd_id -> captions
  attributes.csv                 synthetic world only: the true scene attributes
  flatmap_mask.npy               (size, size) bool: pixels on cortex
  corpus_flatmaps.npy            resting-state corpus as flatmaps (encoder pretraining), normalised
                                 as the task maps are (`prep.corpus_zscore`)
"""
from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..config import Settings
from ..io import DataError, NpyRows, atomic_path, row_positions, save_json, save_npy
from .flatmap import Flatmap, build_flatmap
from .nsd import (NSDLayout, load_surface_session, load_volume_session, read_captions,
                  read_expdesign, read_fsaverage_label, read_roi, read_stim_info, read_stimuli,
                  read_image, to_fsaverage5)


def zscore_rows(x: np.ndarray) -> np.ndarray:
    """Z-score each column (voxel) across rows (trials), in place for float32 input;
    constant columns become 0."""
    x = np.asarray(x, np.float32)
    x -= x.mean(0, dtype=np.float64).astype(np.float32)
    sd = np.sqrt(np.einsum("ij,ij->j", x, x, dtype=np.float64) / max(len(x), 1)).astype(np.float32)
    x /= np.where(sd > 0, sd, 1)
    return x


@dataclass
class Accumulator:
    """Per-image running sums on disk (np.memmap), so memory stays at one session."""

    path: Path
    sums: np.ndarray
    counts: np.ndarray

    @classmethod
    def create(cls, path: Path, n_images: int, shape: tuple[int, ...]) -> "Accumulator":
        sums = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_images, *shape))
        return cls(path, sums, np.zeros(n_images, np.int64))

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
        # repeats within one session are rare: add unique rows in one shot, the rest in a loop
        first = np.r_[True, rows[1:] != rows[:-1]]
        self.sums[rows[first]] += values[first]
        for i in np.flatnonzero(~first):
            self.sums[rows[i]] += values[i]
        np.add.at(self.counts, rows, 1)

    def finish(self, keep: np.ndarray, out: Path, chunk: int = 512) -> None:
        """Write mean over repeats of rows `keep` to `out` (atomically) and drop the sums."""
        with atomic_path(out) as tmp:
            mean = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                             shape=(keep.size, *self.sums.shape[1:]))
            for start in range(0, keep.size, chunk):
                rows = keep[start:start + chunk]
                shape = (-1,) + (1,) * (self.sums.ndim - 1)
                mean[start:start + chunk] = self.sums[rows] / self.counts[rows].reshape(shape)
            mean.flush()
            del mean
        del self.sums
        self.path.unlink(missing_ok=True)


VISUAL_ROIS = {1: "V1", 2: "V1", 3: "V2", 4: "V2", 5: "V3", 6: "V3", 7: "hV4"}  # NSD prf-visualrois codes
STREAMS = {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral", 6: "lateral",
           7: "parietal"}  # NSD streams codes


def write_voxel_info(layout: NSDLayout, subj: int, mask: np.ndarray, path: Path) -> None:
    """Each voxel column's volume index and ROI labels (NSD's prf-visualrois and streams
    files, same grid as nsdgeneral): what the ROI-based decoders (CS292F) select and group by."""
    ijk = np.argwhere(mask)  # C order: the order `mask` selects voxels in
    info = pd.DataFrame({"i": ijk[:, 0], "j": ijk[:, 1], "k": ijk[:, 2]})
    for column, name, names in (("visual_roi", "prf-visualrois", VISUAL_ROIS), ("stream", "streams", STREAMS)):
        values, _ = read_roi(layout, subj, name)
        if values.shape != mask.shape:
            raise DataError(f"{layout.roi(subj, name)} has shape {values.shape}; nsdgeneral has {mask.shape}. "
                            "Both must be on the func1pt8mm grid.")
        codes = np.rint(values[mask]).astype(int)
        info[column] = [names.get(c, "") for c in codes]
    with atomic_path(path) as tmp:
        info.to_csv(tmp, index=False)


def _require_contiguous(sessions: list[int], subj: int, folder: Path) -> None:
    missing = sorted(set(range(1, len(sessions) + 1)) - set(sessions))
    if missing:
        raise DataError(f"Subject {subj}: sessions {missing} are missing under {folder}; trials are matched "
                        "to images by position, so sessions must run 1..N without gaps.")


def prepare_subject(cfg: Settings, subj: int, flat: Flatmap | None, out_root: Path) -> pd.DataFrame:
    """Prepare one subject; returns its rows of the index table."""
    layout = NSDLayout(cfg.path("nsd_root"))
    design = read_expdesign(layout)
    sessions = layout.sessions(subj, "func1pt8mm")
    if not sessions:
        raise DataError(f"No volume betas for subject {subj} under {layout.volume_betas(subj, 1).parent}. "
                        "Remove the subject from prep.subjects or add its betas.")
    _require_contiguous(sessions, subj, layout.volume_betas(subj, 1).parent)
    if flat is not None:
        surf_sessions = layout.sessions(subj, "fsaverage")
        if surf_sessions != sessions:
            raise DataError(f"Subject {subj}: surface sessions {surf_sessions} differ from volume sessions "
                            f"{sessions} under {layout.surface_betas(subj, 1, 'left').parent}; "
                            "add the missing .mgh files or set prep.surface: false.")
    roi, _ = read_roi(layout, subj, "nsdgeneral")
    mask = roi > 0
    if not mask.any():
        raise DataError(f"{layout.roi(subj, 'nsdgeneral')} selects no voxel (no value > 0).")

    ids = np.unique(design.subjectim[subj - 1])  # every image the subject could have seen
    out = out_root / f"subj{subj:02d}"
    out.mkdir(parents=True, exist_ok=True)
    write_voxel_info(layout, subj, mask, out / "voxel_info.csv")
    vox = Accumulator.create(out / ".voxel_sums.npy", ids.size, (int(mask.sum()),))
    fm = Accumulator.create(out / ".flatmap_sums.npy", ids.size, (flat.size, flat.size)) if flat else None
    # the shared images' odd-numbered repeats once more, apart: split halves for reliability
    shared = np.intersect1d(ids, design.sharedix)
    odd = Accumulator.create(out / ".flatmap_odd_sums.npy", shared.size, (flat.size, flat.size)) if flat else None
    zscore = cfg.prep.zscore == "session"
    n_done = 0
    for session in tqdm(sessions, desc=f"subj{subj:02d}", leave=False):
        path = layout.volume_betas(subj, session)
        betas = load_volume_session(path, mask, cfg.prep.volume_beta_scale)
        n_trials = betas.shape[0]
        trial_ids = design.trial_images(subj, n_done + n_trials)[n_done:]
        rows = np.searchsorted(ids, trial_ids)
        vox.add(rows, zscore_rows(betas) if zscore else betas)
        if fm is not None:
            surf = load_surface_session(layout, subj, session)
            if surf.shape[0] != n_trials:
                raise DataError(f"Session {session} of subject {subj}: {n_trials} trials in {path.name} but "
                                f"{surf.shape[0]} in the .mgh files; they must describe the same trials.")
            before = repeat_numbers(rows, fm.counts)
            maps = flat.project(zscore_rows(surf) if zscore else surf)
            fm.add(rows, maps)
            pick = np.flatnonzero(np.isin(trial_ids, shared) & (before % 2 == 1))
            if pick.size:
                odd.add(np.searchsorted(shared, trial_ids[pick]), maps[pick])
        n_done += n_trials

    keep = np.flatnonzero(vox.counts >= cfg.prep.min_repeats)
    counts = vox.counts[keep]
    vox.finish(keep, out / "voxels.npy")
    if fm is not None:
        _write_halves(fm, odd, ids, shared, out / "flatmap_halves.npz")
        fm.finish(keep, out / "flatmaps.npy")
    if cfg.prep.zscore == "train":  # Brain-Diffuser: z-score the averaged data with training stats
        _zscore_with_train(out, np.isin(ids[keep], design.sharedix, invert=True))
    return pd.DataFrame({
        "subject": subj, "row": np.arange(keep.size), "nsd_id": ids[keep],
        "split": np.where(np.isin(ids[keep], design.sharedix), "test", "train"),
        "n_repeats": counts,
    })


def repeat_numbers(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """0-based repeat number of each of a session's trials (`rows`: their images' rows),
    given `counts`, each image's trials in earlier sessions; repeats within the session count
    on in trial order."""
    order = np.argsort(rows, kind="stable")
    ranked = rows[order]
    start = np.r_[0, np.flatnonzero(ranked[1:] != ranked[:-1]) + 1]
    within = np.arange(ranked.size) - np.repeat(start, np.diff(np.r_[start, ranked.size]))
    out = np.empty(rows.size, np.int64)
    out[order] = counts[ranked] + within
    return out


def _write_halves(fm: Accumulator, odd: Accumulator, ids: np.ndarray, shared: np.ndarray, out: Path) -> None:
    """Split halves of the shared images seen at least twice: the mean of their even- and of
    their odd-numbered repeats (`fm` sums every repeat of `ids`, `odd` the odd-numbered ones
    of `shared`), written with their nsd_ids; then drops `odd`'s sums."""
    rows = np.searchsorted(ids, shared)
    total, n_odd = fm.counts[rows], odd.counts
    two = np.flatnonzero(total >= 2)
    halves = np.empty((two.size, 2, *fm.sums.shape[1:]), np.float32)
    for k, (i, r) in enumerate(zip(two, rows[two])):
        halves[k, 0] = (fm.sums[r] - odd.sums[i]) / (total[i] - n_odd[i])
        halves[k, 1] = odd.sums[i] / n_odd[i]
    del odd.sums
    odd.path.unlink(missing_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, nsd_id=shared[two], halves=halves)


def _zscore_with_train(out: Path, train: np.ndarray) -> None:
    for name in ("voxels.npy", "flatmaps.npy"):
        path = out / name
        if path.exists():
            data = np.load(path)
            mean, sd = data[train].mean(0), data[train].std(0)
            sd = np.where(sd > 0, sd, 1)
            save_npy(path, ((data - mean) / sd).astype(np.float32))
            halves = out / "flatmap_halves.npz"
            if name == "flatmaps.npy" and halves.exists():  # the split halves on the same scale
                with np.load(halves) as h:
                    ids, split = h["nsd_id"], ((h["halves"] - mean) / sd).astype(np.float32)
                with atomic_path(halves) as tmp, open(tmp, "wb") as f:
                    np.savez(f, nsd_id=ids, halves=split)


def normalise_corpus(values: np.ndarray, how: str) -> np.ndarray:
    """One participant's resting-state maps (n_maps, n_vertices), normalised: `vertex` z-scores
    each vertex across the participant's maps, as task maps are z-scored per vertex across a
    session's trials (so the encoder sees the same kind of map in both); `map` z-scores each
    map across vertices (keeps the pattern the maps share, which task maps do not have)."""
    if how == "vertex":
        return zscore_rows(values)
    if how == "map":
        return zscore_rows(values.T).T
    raise ValueError(f"prep.corpus_zscore is {how!r}; use vertex or map.")


def prepare_corpus(cfg: Settings, flat: Flatmap, out_root: Path) -> int:
    """Resting-state corpus (one folder per participant, {lh,rh}.rest.mgh) -> flatmaps."""
    root = cfg.path("corpus_root")
    subs = sorted(p for p in root.glob("sub-*") if p.is_dir()) if root.exists() else []
    if not subs:
        raise DataError(f"No corpus participants (sub-*/lh.rest.mgh) under {root}. Point paths.corpus_root "
                        "at your resting-state surface maps, or run the synthetic-world stage.")
    maps, rows = [], []
    for sub in tqdm(subs, desc="corpus", leave=False):
        parts = []
        for h in ("lh", "rh"):
            path = sub / f"{h}.rest.mgh"
            if not path.exists():
                raise DataError(f"Missing {path}; each corpus participant needs lh.rest.mgh and rh.rest.mgh.")
            data, _ = read_image(path)
            parts.append(to_fsaverage5(data.reshape(data.shape[0], -1), path).T.astype(np.float32))
        values = np.concatenate(parts, 1)
        if not np.isfinite(values).all():
            raise DataError(f"{sub} has NaN/inf values in its resting-state maps.")
        maps.append(flat.project(normalise_corpus(values, cfg.prep.corpus_zscore)))
        rows += [{"participant_id": sub.name, "map": k} for k in range(values.shape[0])]
    save_npy(out_root / "corpus_flatmaps.npy", np.concatenate(maps))
    pd.DataFrame(rows).to_csv(out_root / "corpus_index.csv", index=False)
    return len(subs)


def _write_stimuli(cfg: Settings, layout: NSDLayout, index: pd.DataFrame, out_root: Path, chunk: int = 512) -> None:
    """The stimuli of every prepared trial, resized, into stimuli.npy `chunk` images at a
    time (NSD: 73k images; never all in memory)."""
    ids = np.unique(index.nsd_id.to_numpy())
    side = cfg.prep.image_size
    with atomic_path(out_root / "stimuli.npy") as tmp:
        out = NpyRows(tmp, (len(ids), side, side, 3), "uint8")
        for start in tqdm(range(0, len(ids), chunk), desc="stimuli", leave=False):
            out.write(start, read_stimuli(layout, ids[start:start + chunk], side))
    save_npy(out_root / "stimuli_ids.npy", ids)
    info = read_stim_info(layout)
    caps = read_captions(layout, info, ids)
    with atomic_path(out_root / "captions.json") as tmp:
        tmp.write_text(json.dumps({str(k): v for k, v in caps.items()}))
    attrs = cfg.path("synthetic_root") / "attributes.csv"
    if cfg.world == "synthetic" and attrs.exists():
        table = pd.read_csv(attrs).set_index("nsd_id").loc[ids].reset_index()
        with atomic_path(out_root / "attributes.csv") as tmp:
            table.to_csv(tmp, index=False)


def prepare(cfg: Settings, out_root: Path | None = None) -> dict:
    """Run data prep for the world in `cfg`; returns a summary (also saved as summary.json)."""
    if cfg.world == "generic":
        from .generic import prepare_generic

        return prepare_generic(cfg, out_root)
    t0 = time.time()
    out_root = Path(out_root) if out_root is not None else cfg.path("prepared")
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "index.csv").unlink(missing_ok=True)  # written last: its presence means complete
    layout = NSDLayout(cfg.path("nsd_root"))
    read_expdesign(layout)  # fail early, with a clear message, if the tree is not there
    flat = None
    n_corpus = 0
    if cfg.prep.surface:
        roi = read_fsaverage_label(layout, cfg.prep.flatmap_roi) > 0
        flat = build_flatmap(roi, cfg.prep.flatmap_size, cfg.prep.flatmap_margin, cfg.prep.flatmap_roi_only)
        save_npy(out_root / "flatmap_mask.npy", flat.mask)
        # the corpus first, independently of the subjects: a missing corpus stops in seconds
        n_corpus = prepare_corpus(cfg, flat, out_root)
    subjects = list(cfg.prep.subjects)
    for stale in out_root.glob("subj0*"):
        if int(stale.name[4:]) not in subjects:
            shutil.rmtree(stale)
    if cfg.prep.n_workers > 1 and len(subjects) > 1:
        with ProcessPoolExecutor(min(cfg.prep.n_workers, len(subjects))) as pool:
            futures = [pool.submit(prepare_subject, cfg, s, flat, out_root) for s in subjects]
            tables = [f.result() for f in tqdm(futures, desc="subjects")]
    else:
        tables = [prepare_subject(cfg, s, flat, out_root) for s in tqdm(subjects, desc="subjects")]
    index = pd.concat(tables, ignore_index=True)
    _write_stimuli(cfg, layout, index, out_root)
    summary = {
        "world": cfg.world, "subjects": subjects, "zscore": cfg.prep.zscore,
        "n_train": {int(s): int(((index.subject == s) & (index.split == "train")).sum()) for s in subjects},
        "n_test": {int(s): int(((index.subject == s) & (index.split == "test")).sum()) for s in subjects},
        "n_voxels": {int(s): int(np.load(out_root / f"subj{s:02d}/voxels.npy", mmap_mode="r").shape[1])
                     for s in subjects},
        "flatmap_size": cfg.prep.flatmap_size if flat else None,
        "n_corpus_participants": n_corpus,
    }
    print(f"prepared {len(subjects)} subjects in {time.time() - t0:.1f} s")
    save_json(out_root / "summary.json", summary)
    with atomic_path(out_root / "index.csv") as tmp:
        index.to_csv(tmp, index=False)
    return summary


# --------------------------------------------------------------------------- loading
class Prepared:
    """Read access to a prepared folder (what later stages use)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index = self.root / "index.csv"
        if not index.exists():
            raise DataError(f"{index} not found: data prep has not finished for {self.root}. "
                            "Run `dvc repro prep` (or notebook 01) first.")
        self.index = pd.read_csv(index)

    def rows(self, subject: int | str, split: str) -> pd.DataFrame:
        sel = self.index[(self.index.subject.astype(str) == str(subject)) & (self.index.split == split)]
        if sel.empty:
            raise DataError(f"No {split} rows for subject {subject} in {self.root / 'index.csv'}; "
                            f"prepared subjects: {sorted(self.index.subject.astype(str).unique())}.")
        return sel

    def _subject_dir(self, subject) -> Path:
        return self.root / (f"subj{int(subject):02d}" if str(subject).isdigit() else str(subject))

    def voxels(self, subject, split: str) -> np.ndarray:
        return np.load(self._subject_dir(subject) / "voxels.npy", mmap_mode="r")[self.rows(subject, split).row.to_numpy()]

    def voxel_info(self, subject) -> pd.DataFrame:
        """One row per voxel column (i, j, k, visual_roi, stream); generic data: its `roi` labels."""
        path = self._subject_dir(subject) / "voxel_info.csv"
        if not path.exists():
            raise DataError(f"{path} not found: prep predates ROI labels, or your file has no `roi` key. "
                            "Re-run `dvc repro prep` (NSD layout) or add `roi` (one label per voxel) to your file.")
        return pd.read_csv(path, keep_default_na=False)

    def flatmaps(self, subject, split: str) -> np.ndarray:
        return np.load(self.flatmap_file(subject), mmap_mode="r")[self.rows(subject, split).row.to_numpy()]

    def flatmap_halves(self, subject) -> tuple[np.ndarray, np.ndarray]:
        """(nsd_ids, halves (n, 2, size, size)): the shared images seen at least twice, each as
        the mean of its even- and of its odd-numbered repeats (split-half reliability)."""
        path = self._subject_dir(subject) / "flatmap_halves.npz"
        if not path.exists():
            raise DataError(f"{path} not found: prep predates split halves, or this world has no repeats "
                            "(your own scans). Re-run `dvc repro prep` on NSD-layout data.")
        with np.load(path) as h:
            return h["nsd_id"], h["halves"]

    def flatmap_file(self, subject) -> Path:
        """The subject's flatmaps.npy (rows: `rows(...).row`), for readers that stream it."""
        return self._subject_dir(subject) / "flatmaps.npy"

    def stimulus_ids(self) -> np.ndarray:
        """nsd_ids of every prepared stimulus, sorted (the rows of stimuli.npy)."""
        return np.load(self.root / "stimuli_ids.npy")

    def images(self, nsd_ids: np.ndarray) -> np.ndarray:
        pos = row_positions(self.stimulus_ids(), nsd_ids, self.root / "stimuli.npy",
                            "Re-run data prep (`dvc repro prep`) after changing the world.")
        return np.load(self.root / "stimuli.npy", mmap_mode="r")[pos]

    def attributes(self, nsd_ids: np.ndarray) -> pd.DataFrame:
        path = self.root / "attributes.csv"
        if not path.exists():
            raise DataError(f"{path} not found: attribute metrics exist only in the synthetic world.")
        return pd.read_csv(path).set_index("nsd_id").loc[nsd_ids].reset_index()

    def captions(self) -> dict[int, list[str]]:
        return {int(k): v for k, v in json.loads((self.root / "captions.json").read_text()).items()}
