"""Why the two-stage GRU loses to ridge here: latent MSE of both on the same test images as
the training set grows (subsets of each subject's 400 training images; 3 seeds for the GRU
and for the subsets). If the GRU's gap to ridge closes with more images, the paper's NSD
result (9,000 images per subject) and this world's (400) need not disagree.

    python probes/gru_training_size.py [--subjects 1 2] [--sizes 100 200 400] [--out probes/results/gru_training_size.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from neuropictor.config import load_params
from neuropictor.data.prep import Prepared
from neuropictor.methods import gru, load_hvae_of, subject_data
from neuropictor.methods.base import SubjectData, ridge_fit_predict
from neuropictor.models.foundation import load_world_foundation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="probes/results/gru_training_size.json")
    args = parser.parse_args()
    cfg = load_params()
    prepared, found, hvae = Prepared(cfg.path("prepared")), load_world_foundation(cfg), load_hvae_of(cfg)
    groups = cfg.methods.gru.groups
    rows = []
    for s in args.subjects:
        full = subject_data(cfg, prepared, found, s, hvae=hvae)
        target_train, target_test = full.hvae_latents("train", groups), full.hvae_latents("test", groups)
        for size in args.sizes:
            for seed in args.seeds:
                rows_kept = np.sort(np.random.default_rng(seed).permutation(len(full.x_train))[:size])
                part = SubjectData(
                    s, full.ids_train[rows_kept], full.ids_test, full.x_train[rows_kept], full.x_test,
                    None, full.images_test, full.z_train[rows_kept], full.z_test, None, None, full.info, hvae)
                part._hvae_cache["train"] = [target_train[rows_kept]]  # one block: the first `groups` groups
                t = time.time()
                flat, record = gru.decode_latents(cfg, part, groups, seed)
                gru_mse = float((flat - target_test).pow(2).mean())
                ridge = ridge_fit_predict(part.x_train, target_train[rows_kept], part.x_test, cfg.prep.ridge.alphas)
                ridge_mse = float((ridge - target_test).pow(2).mean())
                rows.append({"subject": s, "train_images": int(size), "seed": seed, "gru": gru_mse, "ridge": ridge_mse,
                             "gru_epochs": record["epochs"], "seconds": round(time.time() - t, 1)})
                print(rows[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    by_size = {}
    for r in rows:
        by_size.setdefault(r["train_images"], []).append(r["gru"] / r["ridge"] - 1)
    for size, gaps in by_size.items():
        print(f"{size} training images: GRU latent MSE {100 * np.mean(gaps):+.1f} % vs ridge "
              f"(s.d. {100 * np.std(gaps):.1f}, {len(gaps)} runs)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
