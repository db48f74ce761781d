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
from neuropictor.decoding import build_neuropictor, decoding_data, load_model
from neuropictor.evaluation import held_out
from neuropictor.methods import r2_score, subject_data
from neuropictor.methods.base import ridge_fit_predict


def main(subjects=(1, 2)) -> None:
    cfg = load_params()
    world = load_world(cfg)
    alphas = list(cfg.prep.ridge.alphas) + [1e5, 1e6]
    for s in subjects:
        voxels = subject_data(cfg, world.prepared, s)
        ids, maps, _ = held_out(world.prepared, s)
        if not np.array_equal(voxels.ids_test, ids):
            raise RuntimeError(f"subject {s}: the voxel and flatmap test rows differ")
        data = decoding_data(cfg, world.prepared, [s], "train")
        maps_train, _, states_train = data[torch.arange(len(data))]
        model = load_model(cfg.path("models") / f"refine_subj{s}", build_neuropictor(cfg, world.found, world.mask, "refine"))
        with torch.no_grad():
            sr_train = torch.cat([model.conditions(m)[0] for m in torch.split(maps_train, 100)]).flatten(1).numpy()
            sr_test = model.conditions(torch.as_tensor(maps))[0].flatten(1).numpy()
        r2 = {"voxels": ridge_fit_predict(voxels.x_train, voxels.c_train, voxels.x_test, alphas),
              "flatmap": ridge_fit_predict(maps_train.flatten(1).numpy(), states_train,
                                           np.asarray(maps).reshape(len(maps), -1), alphas),
              "refined S^r": ridge_fit_predict(sr_train, states_train, sr_test, alphas)}
        print(f"subject {s}: ridge -> caption states, test R^2: "
              + ", ".join(f"{k} {r2_score(v, voxels.c_test):.3f}" for k, v in r2.items()), flush=True)


if __name__ == "__main__":
    main()
