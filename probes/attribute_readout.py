"""Probe: at which step of NeuroPictor's input path do the stimulus attributes stop being readable?

A linear classifier (standardised inputs, logistic regression, penalty by 5-fold CV) is fitted
on a subject's training scans and scored on its shared test scans, for the primary object's
shape, colour and size and the background, from each representation along the path:

    voxels (what the ridge baselines read) -> flatmap (the encoder's input) -> S^r of the
    calibrated encoder -> S^r after multi-subject pretraining -> S^r after refining -> F^sem

and from ridge c (the voxels' linear read-out of the caption states), for comparison. Where the
accuracy drops between two steps, that step loses what the decoder needs. About 6 min per
subject on 2 cores.

    python probes/attribute_readout.py [--subjects 1 2]
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from common import load_world
from neuropictor.config import load_params
from neuropictor.decoding import build_neuropictor, load_encoder, load_model
from neuropictor.evaluation import held_out
from neuropictor.methods import subject_data
from neuropictor.methods.base import ridge_fit_predict

ATTRIBUTES = ("shape_0", "colour_0", "size_0", "background")


def accuracy(train: np.ndarray, y: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[1e-4, 1e-3, 1e-2, 1e-1], max_iter=300))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.9 announcing LogisticRegressionCV changes
        clf.fit(train, y)
    return float(clf.score(test, y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    cfg = load_params()
    world = load_world(cfg)
    encoder = load_encoder(cfg.path("encoder"))
    pretrained = load_model(cfg.path("models") / "pretrain", build_neuropictor(cfg, world.found, world.mask, "pretrain"))
    print(f"{'':22s}" + "".join(f"{a:>12s}" for a in ATTRIBUTES))
    for s in args.subjects:
        data = subject_data(cfg, world.prepared, s)
        ids, maps, _ = held_out(world.prepared, s)
        if not np.array_equal(data.ids_test, ids):
            raise RuntimeError(f"subject {s}: the voxel and flatmap test rows differ")
        maps_train = torch.as_tensor(np.asarray(world.prepared.flatmaps(s, "train"), np.float32))
        maps_test = torch.as_tensor(np.asarray(maps, np.float32))
        refined = load_model(cfg.path("models") / f"refine_subj{s}", build_neuropictor(cfg, world.found, world.mask, "refine"))
        flat = lambda x: x.flatten(1).numpy()  # noqa: E731
        with torch.no_grad():
            refined_train, refined_test = refined.conditions(maps_train), refined.conditions(maps_test)
            reps = {
                "voxels": (data.x_train, data.x_test),
                "flatmap": (flat(maps_train), flat(maps_test)),
                "S^r calibrated": (flat(encoder.encode(maps_train, output="full")),
                                   flat(encoder.encode(maps_test, output="full"))),
                "S^r pretrained": (flat(pretrained.conditions(maps_train)[0]), flat(pretrained.conditions(maps_test)[0])),
                "S^r refined": (flat(refined_train[0]), flat(refined_test[0])),
                "F^sem refined": (flat(refined_train[2]), flat(refined_test[2])),
            }
        alphas = cfg.prep.ridge.alphas
        reps["ridge c (voxels)"] = (flat(ridge_fit_predict(data.x_train, data.c_train, data.x_train, alphas)),
                                    flat(ridge_fit_predict(data.x_train, data.c_train, data.x_test, alphas)))
        attrs, attrs_test = world.prepared.attributes(data.ids_train), world.prepared.attributes(ids)
        print(f"subject {s} ({len(data.ids_train)} training scans, {len(ids)} test)")
        for name, (a, b) in reps.items():
            acc = [accuracy(a, attrs[k].to_numpy(), b, attrs_test[k].to_numpy()) for k in ATTRIBUTES]
            print(f"  {name:20s}" + "".join(f"{x:12.2f}" for x in acc), flush=True)


if __name__ == "__main__":
    main()
