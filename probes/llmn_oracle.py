"""Probe: can the LLMN's ControlNet copy learn to use a low-level map at all within refining?

Across refining seeds the LLMN's effect (alpha 1 against alpha 0) averages zero on subject 1
(`probes/refine_seeds.py`). Two explanations: the map E_ft makes from S^r carries too little
of the image's layout, or the ControlNet copy cannot learn to use any map in the 240 + 48
refining steps. This probe separates them: it refines the pipeline's pretrained model on
`--subject` exactly as the pipeline does, except that F_0^l is replaced by an oracle made
from the stimulus's own VAE latent z0 (the target of L_dif): `full` (z0 itself) or `coarse`
(z0 averaged over 4 x 4 latent pixels, the layout and colours without outlines). The same
oracle is given at sampling. `decoded` is no oracle but what a decoder of the scan gives: a
ridge regression from the flatmap to the coarse latent (penalty by cross-validation), its
training-scan maps predicted out of fold (5 folds) so they are as noisy as the test scans'.
`decoded_sr` is the same ridge read from the calibrated encoder's S^r (stage 03, all tokens)
instead of the flatmap: what the encoder keeps before end-to-end training. If the
reconstructions at alpha 1 then beat alpha 0 by far, the ControlNet copy learns within the
budget and E_ft's map is what lacks; if not, the budget or the copy's learning rate is the
limit. `--steps` changes the refining steps (mask
phase kept at the pipeline's share). Not part of a pipeline; ~3 min per hint on 2 cores.

    python probes/llmn_oracle.py --hints full coarse decoded
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import neuropictor.decoding as decoding
from neuropictor.config import load_params
from neuropictor.evaluation import reconstruct_images, score_reconstructions
from neuropictor.features import FeatureStore
from common import KEEP, probe_world, refine  # probes/common.py (this folder is on sys.path when run as a script)


def pooled(z0: torch.Tensor) -> torch.Tensor:
    """The latent averaged over 4 x 4 latent pixels (n, c, h / 4, w / 4)."""
    return F.avg_pool2d(z0, 4)


def upsampled(p: torch.Tensor, side: int) -> torch.Tensor:
    """A pooled latent back at the latent's size, each value over its 4 x 4 block."""
    return F.interpolate(p, size=(side, side), mode="nearest")


def coarse(z0: torch.Tensor) -> torch.Tensor:
    return upsampled(pooled(z0), z0.shape[-1])


HINTS = {"full": lambda maps, z0: z0, "coarse": lambda maps, z0: coarse(z0)}


def key(m) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(m, np.float32)).tobytes()).hexdigest()


def decoded_hint(prepared, store, subject: int, test_maps, features=lambda X: X.reshape(len(X), -1)):
    """A ridge decoder flatmap -> coarse latent for `subject` (reading `features(maps)`):
    out-of-fold predictions for its training maps, the all-training fit for `test_maps`;
    returns hint(maps, z0) looking maps up."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    train = prepared.rows(subject, "train")
    X = np.asarray(prepared.flatmaps(subject, "train"), np.float32)
    z = store.latents(train.nsd_id.to_numpy())
    Y = pooled(z).flatten(1).numpy()
    ridge = RidgeCV(alphas=np.logspace(-1, 6, 15))
    A, B = features(X), features(np.asarray(test_maps, np.float32))
    oof = cross_val_predict(ridge, A, Y, cv=KFold(5, shuffle=True, random_state=0))
    test = ridge.fit(A, Y).predict(B)
    side, c = z.shape[-1], z.shape[1]

    def grid(y):
        return upsampled(torch.as_tensor(y, dtype=torch.float32).reshape(len(y), c, side // 4, side // 4), side)
    table = {key(m): h for m, h in zip(X, grid(oof))}
    table.update({key(m): h for m, h in zip(test_maps, grid(test))})

    def hint(maps, z0):
        try:
            return torch.stack([table[key(m)] for m in maps.cpu().numpy()])
        except KeyError:
            raise SystemExit("a training map is not among the subject's prepared flatmaps") from None
    return hint


def with_oracle(hint):
    """Make a fresh model's LLMN read `hint(maps, z0)` instead of E_ft(S^r): in training from each
    batch's latents, at sampling from `model.llmn.oracle` (set by the caller)."""
    def wrap(model):
        llmn = model.llmn

        def feature_map(S_r):
            o = llmn.oracle.to(S_r)
            return o.repeat(len(S_r) // len(o), 1, 1, 1)  # CFG stacks [uncond; cond] rows
        llmn.feature_map = feature_map
        forward = model.forward

        def train_forward(maps, z0, text_states):
            llmn.oracle = hint(maps, z0)
            return forward(maps, z0, text_states)
        model.forward = train_forward
        return model
    return wrap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--hints", nargs="+", default=["full", "coarse"], choices=[*HINTS, "decoded", "decoded_sr"])
    ap.add_argument("--steps", type=int, default=None, help="refining steps (default: the pipeline's)")
    ap.add_argument("--seed", type=int, default=None, help="training and sampling seed (default: params')")
    ap.add_argument("--out", default="probes/results/llmn_oracle.json")
    args = ap.parse_args()
    loop = load_params().neuropictor.refine
    over = {} if args.seed is None else {"seed": args.seed}
    if args.steps:
        over.update({"neuropictor.refine.steps": args.steps,
                     "neuropictor.refine.mask_steps": round(args.steps * loop.mask_steps / loop.steps)})
    cfg = load_params(overrides=over)
    world = probe_world(cfg, args.subject)
    prepared, found, networks, mask, ids, maps, gt = world
    store = FeatureStore(cfg.path("features"))
    z0 = store.latents(ids)
    if "decoded" in args.hints:
        HINTS["decoded"] = decoded_hint(prepared, store, args.subject, maps)
    if "decoded_sr" in args.hints:
        encoder = decoding.load_encoder(cfg.path("encoder")).eval()

        def calibrated(X):
            with torch.no_grad():
                return encoder.encode(torch.as_tensor(X), output="full").flatten(1).numpy()
        HINTS["decoded_sr"] = decoded_hint(prepared, store, args.subject, maps, calibrated)
    pre = decoding.load_model(cfg.path("models") / "pretrain", decoding.build_neuropictor(cfg, found, mask, "pretrain"))
    rows = []
    for name in args.hints:
        t0 = time.time()
        model = refine(cfg, world, pre, args.subject, wrap=with_oracle(HINTS[name]), desc=f"oracle {name}")
        minutes = (time.time() - t0) / 60
        model.llmn.oracle = HINTS[name](torch.as_tensor(maps), z0)
        for a in (0.0, 1.0):
            with torch.no_grad():
                s = score_reconstructions(gt, reconstruct_images(model, found, maps, cfg, alpha=a), ids, found,
                                          prepared, cfg.world == "synthetic", networks)
            rows.append({"hint": name, "seed": cfg.seed, "steps": cfg.neuropictor.refine.steps, "alpha": a,
                         "minutes": round(minutes, 2), **{k: round(s[k], 4) for k in KEEP}})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"subject": args.subject, "rows": rows}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
