"""Probe: can the HLGN's own layout read the caption states out of S^r as well as ridge does?

The refined model's encoder is frozen here; its S^r (train and shared test scans) is
computed once. Then, on L_sem alone (no UNet, no L_dif), a HLGN E_txt head is fitted to
the caption states, AdamW at the pipeline's HLGN lr (refine lr x hlgn_lr_scale; `--lrs`),
batch 32, for each `--weight-decays` x `--dropouts` (dropout on S^r, as
`neuropictor.hlgn_dropout`):

- fresh: a new head (same layout, seeded), test R^2 after each step count;
- continued: the refined model's own head, trained on;
- ridge on S^r (penalty by leave-one-out), the linear reference.

Measured (subject 1, README): without dropout the head overfits the 400 training scans (test
R^2 .233 at 240 steps, .016 at 4000, train .94); dropout 0.5 lets the refined model's own head
reach .293, ridge's level. About 1 min per setting and subject on 2 cores.

    python probes/hlgn_fit.py [--subjects 1 2] [--steps 240 1000 4000] [--weight-decays 0 1] [--dropouts 0 0.5]
"""
from __future__ import annotations

import argparse
import copy
import itertools

import numpy as np
import torch

from common import load_world
from neuropictor.config import load_params
from neuropictor.decoding import build_neuropictor, load_model
from neuropictor.evaluation import held_out
from neuropictor.methods import r2_score, subject_data
from neuropictor.methods.base import ridge_fit_predict
from neuropictor.models.neuropictor import HLGN


def fit(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
        lr: float, checkpoints: list[int], seed: int, weight_decay: float = 0.0,
        dropout: float = 0.0) -> dict[int, tuple[float, float]]:
    """AdamW on the element-wise MSE, batch 32, dropout on S^r; (train R^2, test R^2) at each
    checkpoint."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    out = {}
    for step in range(1, max(checkpoints) + 1):
        idx = torch.randint(len(x), (32,), generator=g)
        xb = x[idx]
        if dropout:
            xb = xb * (torch.rand(xb.shape, generator=g) > dropout) / (1 - dropout)
        loss = torch.nn.functional.mse_loss(head(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in checkpoints:
            with torch.no_grad():
                out[step] = (r2_score(head(x), y), r2_score(head(x_test), y_test))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[240, 1000, 4000])
    parser.add_argument("--lrs", type=float, nargs="+", default=None)
    parser.add_argument("--weight-decays", type=float, nargs="+", default=[0.0])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0])
    args = parser.parse_args()
    cfg = load_params()
    world = load_world(cfg)
    n = cfg.neuropictor
    lrs = args.lrs or [n.refine.lr * n.refine.hlgn_lr_scale]
    alphas = list(cfg.prep.ridge.alphas) + [1e5, 1e6]
    for s in args.subjects:
        data = subject_data(cfg, world.prepared, s)
        ids, maps, _ = held_out(world.prepared, s)
        assert np.array_equal(data.ids_test, ids)
        maps_train = torch.as_tensor(np.asarray(world.prepared.flatmaps(s, "train"), np.float32))
        model = load_model(cfg.path("models") / f"refine_subj{s}", build_neuropictor(cfg, world.found, world.mask, "refine"))
        with torch.no_grad():
            sr, F_txt_tr, F_sem_tr = model.conditions(maps_train)
            sr_test, F_txt, F_sem = model.conditions(torch.as_tensor(maps))
        c, c_test = data.c_train.float(), data.c_test.float()
        print(f"subject {s}: S^r {tuple(sr.shape[1:])}, caption states {tuple(c.shape[1:])}, {len(sr)} train scans")
        print(f"  refined model   F~txt train {r2_score(F_txt_tr, c):.3f} test {r2_score(F_txt, c_test):.3f}; "
              f"F^sem train {r2_score(F_sem_tr, c):.3f} test {r2_score(F_sem, c_test):.3f}")
        ridge = r2_score(ridge_fit_predict(sr.flatten(1).numpy(), c, sr_test.flatten(1).numpy(), alphas), c_test)
        print(f"  ridge on S^r    test {ridge:.3f}")
        L_r, d_r = sr.shape[1:]
        L_T, d_T = c.shape[1:]
        for lr, wd, p in itertools.product(lrs, args.weight_decays, args.dropouts):
            torch.manual_seed(cfg.seed)
            fresh = HLGN(L_r, d_r, L_T, d_T, n.hlgn_hidden_tokens, use_aux=False, layer_norm=n.hlgn_layer_norm).fmri_to_text
            own = copy.deepcopy(model.hlgn.fmri_to_text).requires_grad_(True)
            for name, head in (("fresh", fresh), ("continued", own)):
                curve = fit(head, sr, c, sr_test, c_test, lr, args.steps, cfg.seed, wd, p)
                print(f"  {name:9s} lr {lr:g} wd {wd:g} dropout {p:g}: " + ", ".join(
                    f"{k} steps train {a:.3f} test {b:.3f}" for k, (a, b) in curve.items()), flush=True)


if __name__ == "__main__":
    main()
