# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · NeuroPictor training: multi-subject pretraining, single-subject refining (Sec. 3.2-3.4)
#
# One notebook, two DVC stages:
# - `STAGE = "pretrain"`: all 8 subjects' training flatmaps, auxiliary encoder off;
# - `STAGE = "refine"`, `SUBJECT = n`: one subject (1, 2, 5, 7: a DVC `foreach`), starting
#   from the pretrained weights, auxiliary encoder on.
#
# Model (frozen: UNet, VAE, text encoder; trained: fMRI encoder, HLGN, LLMN):
# flatmap S -> encoder E -> S^r; **HLGN** S^r -> F~txt (matched to the caption's text states by
# L_sem, Eq. 3) + F^au (zero-initialised) = F^sem -> the UNet's cross-attention; **LLMN**
# S^r -> F_0^l (latent-shaped) -> a trainable copy of the UNet encoder (diffusers ControlNet)
# whose zero-conv outputs, x alpha, are added to the frozen UNet's middle and decoder blocks.
# Loss L_dif + lambda L_sem (lambda 0.1); 5 % of F^sem replaced by the empty caption.
# The Table 2 switches are keys under `neuropictor:` in params.yaml.
#
# Training runs on `neuropictor.train.fit` (accelerate): checkpoints every 100 steps under
# `paths.checkpoints` (outside the stage's DVC outputs, which DVC deletes before a rerun); a
# killed `dvc repro` started again resumes there, to the same weights.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}
STAGE = "pretrain"  # pretrain | refine
SUBJECT = None  # refine: the subject (1-8)

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from neuropictor.config import notebook_setup
from neuropictor.io import save_json
from neuropictor.report import save_figure

name = "pretrain" if STAGE == "pretrain" else f"refine_subj{SUBJECT}"
cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, f"training/{name}", show=("seed", "smoke", "neuropictor"))
if STAGE not in ("pretrain", "refine") or (STAGE == "refine" and SUBJECT is None):
    raise ValueError(f"STAGE must be 'pretrain' or 'refine' (with SUBJECT), got {STAGE!r}, {SUBJECT!r}")
NP = cfg.neuropictor
T0 = time.time()

# %%
from neuropictor.data.prep import Prepared
from neuropictor.decoding import (build_neuropictor, decoding_data, load_model, save_model, stage_checkpoint,
                                  train_neuropictor, training_inputs)
from neuropictor.models.foundation import load_world_foundation

prepared = Prepared(cfg.path("prepared"))
found = load_world_foundation(cfg)
mask = np.load(cfg.path("prepared") / "flatmap_mask.npy")
model = build_neuropictor(cfg, found, mask, STAGE)
out = cfg.path("models") / name
subjects = list(cfg.prep.subjects) if STAGE == "pretrain" else [int(SUBJECT)]
trained = (NP.multi_subject_pretraining if STAGE == "pretrain" else NP.refining)
print(f"{name}: subjects {subjects}; trains: {trained}; switches {model.switches}")
n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"trainable parameters {n_train / 1e6:.2f} M (UNet frozen: "
      f"{sum(p.numel() for p in model.unet.parameters()) / 1e6:.2f} M)")

# %% [markdown]
# ## Start point
# Refining starts from the pretrained weights (the auxiliary encoder, absent there, starts
# at zero). Without multi-subject pretraining the pretrain stage saves the untrained model,
# so refining trains from the same initialisation on one subject only.

# %%
if STAGE == "refine":
    model = load_model(cfg.path("models") / "pretrain", model, strict=False).train()
    print("loaded the pretrained model")

# %%
history = []
if trained:
    data = decoding_data(cfg, prepared, found, subjects, "train")
    print(f"{len(data.maps)} flatmap-image pairs")
    loop = NP.pretrain if STAGE == "pretrain" else NP.refine
    inputs = training_inputs(cfg, *([cfg.path("models") / "pretrain"] if STAGE == "refine" else []))
    history = train_neuropictor(model, data, loop, cfg.seed, stage_checkpoint(cfg, name, *inputs), desc=name,
                                smoke_steps=cfg.foundation.smoke_steps if cfg.smoke else None)
save_model(out, model, {"stage": STAGE, "subjects": subjects, "trained": trained, "history": history})
result = {"trained": trained, "subjects": subjects, "minutes": round((time.time() - T0) / 60, 2),
          "final_loss": history[-1]["loss"] if history else None}
save_json(cfg.path("metrics") / "training" / f"{name}.json", result)
print(result)

# %%
if history:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set(xlabel="step", ylabel="L_dif + lambda L_sem", title=name)
    save_figure(fig, FIG / f"loss_{name}.png")
