"""Probe: where does NeuroPictor's semantic read-out lose the caption states?

Ridge (penalty by leave-one-out) from three inputs to the caption states, test R^2 on the
shared images: the voxels (Takagi & Nishimoto's read-out), the flatmaps (the encoder's
input) and the refined model's S^r (the encoder's output, what the HLGN reads). Compare
with the HLGN's own F~txt R^2 (probes/semantic_ceiling.py). About 15 s per subject.

    python probes/semantic_readout.py
"""
from __future__ import annotations

import numpy as np
import torch

from common import load_world
from neuropictor.config import load_params
from neuropictor.decoding import build_neuropictor, load_model
from neuropictor.evaluation import held_out
from neuropictor.methods import r2_score, subject_data
from neuropictor.methods.base import ridge_fit_predict


def main(subjects=(1, 2)) -> None:
    cfg = load_params()
    world = load_world(cfg)
    # flatmaps and S^r have more columns than the voxels: two heavier penalties join the grid
    alphas = list(cfg.prep.ridge.alphas) + [1e5, 1e6]
    for s in subjects:
        voxels = subject_data(cfg, world.prepared, s)  # rows in prepared.rows(s, split) order, as the flatmaps
        ids, maps, _ = held_out(world.prepared, s)
        if not np.array_equal(voxels.ids_test, ids):
            raise RuntimeError(f"subject {s}: the voxel and flatmap test rows differ")
        maps_train = np.asarray(world.prepared.flatmaps(s, "train"), np.float32)
        model = load_model(cfg.path("models") / f"refine_subj{s}", build_neuropictor(cfg, world.found, world.mask, "refine"))
        with torch.no_grad():
            sr_train = model.conditions(torch.as_tensor(maps_train))[0].flatten(1).numpy()
            sr_test = model.conditions(torch.as_tensor(maps))[0].flatten(1).numpy()
        inputs = {"voxels": (voxels.x_train, voxels.x_test),
                  "flatmap": (maps_train.reshape(len(maps_train), -1), np.asarray(maps).reshape(len(maps), -1)),
                  "refined S^r": (sr_train, sr_test)}
        r2 = {k: r2_score(ridge_fit_predict(a, voxels.c_train, b, alphas), voxels.c_test) for k, (a, b) in inputs.items()}
        print(f"subject {s}: ridge -> caption states, test R^2: " + ", ".join(f"{k} {v:.3f}" for k, v in r2.items()),
              flush=True)

if __name__ == "__main__":
    main()
