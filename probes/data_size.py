"""Probe: is NeuroPictor limited by this world's training images, and does it gain more from
them than the ridge baseline does?

Issue 14: "If data, not steps, is the limit, the world may grow toward NSD's proportions".
Each subject has 400 training images here (NSD: 9,000). For each of `--fractions`, every
subject keeps the same seeded share of its training images (all their trials), and under each
of `--seeds`:

- NeuroPictor is pretrained on all subjects' kept scans and refined on `--subject`'s (the
  pipeline's params and steps: fewer images mean more passes over each);
- the Takagi & Nishimoto ridge (z and c from the voxels, img2img) is fitted on the same
  images and drawn with the same seed;

and both are scored on the subject's 100 shared test scans (Table 1's metrics, alpha 1). If
NeuroPictor's metrics rise from half to all of the images by more than its seed spread, and by
more than the ridge's, more images per subject is the lever. About 10 min per NeuroPictor run
on 2 cores (pretraining included), 1 per ridge run; resumes from `--out`.

    python probes/data_size.py --fractions 0.5 1.0 --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from neuropictor.methods import subject_data, takagi
from neuropictor.methods.base import draw
from common import KEEP, pretrain, probe_world, refine


def kept_ids(prepared, subject, fraction: float, seed: int = 0) -> np.ndarray:
    """The subject's training images kept at `fraction`: a seeded draw, nested across fractions
    (the images kept at 0.25 are among those kept at 0.5)."""
    ids = np.unique(prepared.rows(subject, "train").nsd_id.to_numpy())
    order = np.random.default_rng([seed, int(subject)]).permutation(ids)
    return np.sort(order[:max(1, round(fraction * len(ids)))])


def subset_pairs(pairs, prepared, fraction: float):
    """`decoding_data`'s rows restricted to each subject's kept images (in place)."""
    keep = np.zeros(len(pairs), bool)
    for s in np.unique(pairs.subjects):
        mine = pairs.subjects == s
        keep |= mine & np.isin(pairs.nsd_ids, kept_ids(prepared, s, fraction))
    pairs.where, pairs.nsd_ids, pairs.subjects = pairs.where[keep], pairs.nsd_ids[keep], pairs.subjects[keep]
    return pairs


def train_neuropictor(cfg, world, subject: int, fraction: float):
    """Stage 04's two trainings (under `cfg.seed`) on the kept scans only."""
    kept = lambda data: subset_pairs(data, world.prepared, fraction)  # noqa: E731
    model = pretrain(cfg, world, desc=f"{fraction:g} seed {cfg.seed} pretrain", rows=kept)
    refined = refine(cfg, world, model, subject, desc=f"{fraction:g} seed {cfg.seed} refine", rows=kept)
    ids = world.prepared.rows(subject, "train").nsd_id.to_numpy()
    return refined, int(np.isin(ids, kept_ids(world.prepared, subject, fraction)).sum())  # its refining scans


def ridge_images(cfg, world, subject: int, fraction: float, seed: int):
    """Takagi & Nishimoto fitted on the kept images' trials, drawn under `seed`."""
    data = subject_data(cfg, world.prepared, subject)
    keep = np.isin(data.ids_train, kept_ids(world.prepared, subject, fraction))
    data.x_train, data.ids_train = data.x_train[keep], data.ids_train[keep]
    data.z_train, data.c_train = data.z_train[torch.as_tensor(keep)], data.c_train[torch.as_tensor(keep)]
    if not np.array_equal(data.ids_test, world.ids):
        raise RuntimeError(f"subject {subject}: the voxel and flatmap test rows differ")
    decoded = takagi.fit_decode(cfg, data, seed)
    return draw(world.found, decoded, cfg, cfg.methods.takagi.strength, seed=seed), int(keep.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--methods", nargs="+", default=["ridge", "neuropictor"], choices=["ridge", "neuropictor"])
    ap.add_argument("--params", default=None, help="a params file of another world (default params.yaml), e.g. "
                    "one with more training images per subject whose stages 00-02b were run into paths of its own")
    ap.add_argument("--out", default="probes/results/data_size.json")
    args = ap.parse_args()
    base = load_params(args.params)
    world = probe_world(base, args.subject)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []  # resume: runs already scored
    for method in args.methods:
        for fraction in args.fractions:
            for seed in args.seeds:
                if any(r["method"] == method and r["fraction"] == fraction and r["seed"] == seed for r in rows):
                    continue
                cfg = load_params(args.params, overrides={"seed": seed})
                t0 = time.time()
                if method == "ridge":
                    images, n = ridge_images(cfg, world, args.subject, fraction, seed)
                else:
                    model, n = train_neuropictor(cfg, world, args.subject, fraction)
                    with torch.no_grad():
                        images = reconstruct_images(model, world.found, world.maps, cfg, alpha=1.0)
                s = score_reconstructions(world.gt, images, world.ids, world.found, world.prepared,
                                          cfg.world == "synthetic", world.networks)
                rows.append({"method": method, "fraction": fraction, "seed": seed, "training scans": n,
                             "minutes": round((time.time() - t0) / 60, 2), **{k: round(s[k], 4) for k in KEEP}})
                print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
                out.write_text(json.dumps({"subject": args.subject, "rows": rows}, indent=1, ensure_ascii=False) + "\n")
    print(f"\n{'method':12s}{'fraction':>9s}" + "".join(f"{k[:9]:>10s}" for k in KEEP))
    for method in args.methods:
        for fraction in args.fractions:
            mine = [r for r in rows if r["method"] == method and r["fraction"] == fraction and r["seed"] in args.seeds]
            if mine:
                mean = [np.mean([r[k] for r in mine]) for k in KEEP]
                spread = [np.ptp([r[k] for r in mine]) for k in KEEP]
                print(f"{method:12s}{fraction:>9g}" + "".join(f"{m:>10.3f}" for m in mean))
                print(f"{'  spread':21s}" + "".join(f"{d:>10.3f}" for d in spread))


if __name__ == "__main__":
    main()
