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
# This world follows the paper's text for L_sem (a squared L2 norm per token, summed over the
# width, on in both stages: `sem_loss: sum`, `sem_in_pretraining: true`); the released code
# takes the element-wise mean and has weight 0 in pretraining (`mean`, `false`; params.paper.yaml).
# The HLGN and E_ft start untrained and learn at the stage's lr x `hlgn_lr_scale` /
# `transform_lr_scale` (README: "NeuroPictor"). The Table 2 switches are keys under
# `neuropictor:` in params.yaml.
#
# Training runs on `neuropictor.train.fit` (accelerate) with params' `compute:` (device,
# precision, gradient checkpointing and accumulation; `compute.processes` > 1 launches that many
# DDP processes from this kernel, one per GPU); the flatmaps, latents and caption states of
# each batch are read from disk (`paths.features`). Checkpoints every 100 steps under
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

# %% [markdown]
# ## The model as the paper draws it (Fig. 2)
# One batch of flatmaps through the conditions, and the LLMN's control residuals at one
# timestep: the shapes each arrow of the figure carries in this world.

# %%
with torch.no_grad():
    first_rows = prepared.rows(subjects[0], "train").row.to_numpy()[:2]  # two maps read from disk, not the split
    probe = torch.from_numpy(np.asarray(np.load(prepared.flatmap_file(subjects[0]), mmap_mode="r")[first_rows],
                                        dtype=np.float32))
    S_r, F_txt, F_sem = model.conditions(probe)
    shapes = {"S (flatmap)": probe.shape, "S^r = E(S) (Eq. 1)": S_r.shape, "F~txt (HLGN, Eq. 2)": F_txt.shape,
              "F^au (auxiliary encoder)": (F_sem - F_txt).shape if model.switches.use_aux else "off",
              "F^sem = F~txt + F^au (Eq. 4)": F_sem.shape}
    if model.llmn is not None:
        side, ch = model.unet.config.sample_size, model.unet.config.in_channels
        z_t, t = torch.zeros(len(probe), ch, side, side), torch.tensor([500])
        shapes["F_0^l (LLMN feature transform, Eq. 5)"] = model.llmn.feature_map(S_r).shape
        down, mid = model.llmn(z_t, t, F_sem, S_r)
        for i, r in enumerate(down):
            shapes[f"control residual {i} (down)"] = r.shape
        shapes["control residual (mid)"] = mid.shape
for k, v in shapes.items():
    print(f"{k:42s} {tuple(v) if not isinstance(v, str) else v}")

# %%
def probe_loss(model, data, n=32, seed=12345):
    """L on the first `n` training pairs with fixed noise, timesteps and dropped captions:
    the same number before and after training measures what was learnt, free of the
    batch-to-batch noise of the logged training loss."""
    rows = torch.arange(min(n, len(data)))
    model.eval()
    with torch.no_grad():
        torch.manual_seed(seed)
        value = float(model(*data[rows]))
    model.train()
    return value


history, probe_before, probe_after = [], None, None
if trained:
    data = decoding_data(cfg, prepared, subjects, "train")  # streamed from disk (paths.features)
    print(f"{len(data)} flatmap-image pairs")
    loop = NP.pretrain if STAGE == "pretrain" else NP.refine
    inputs = training_inputs(cfg, *([cfg.path("models") / "pretrain"] if STAGE == "refine" else []))
    probe_before = probe_loss(model, data)
    history = train_neuropictor(model, data, loop, cfg.seed, stage_checkpoint(cfg, name, *inputs), desc=name,
                                smoke_steps=cfg.foundation.smoke_steps if cfg.smoke else None)
    probe_after = probe_loss(model, data)
    print(f"loss on a fixed probe batch (same noise, timesteps, dropped captions): "
          f"{probe_before:.4f} before -> {probe_after:.4f} after training")
save_model(out, model, {"stage": STAGE, "subjects": subjects, "trained": trained, "history": history})
result = {"trained": trained, "subjects": subjects, "minutes": round((time.time() - T0) / 60, 2),
          "final_loss": history[-1]["loss"] if history else None,
          "first_L_dif": history[0].get("L_dif") if history else None,
          "final_L_dif": history[-1].get("L_dif") if history else None,
          "final_L_sem": history[-1].get("L_sem") if history else None,
          "probe_loss_before": probe_before, "probe_loss_after": probe_after}
save_json(cfg.path("metrics") / "training" / f"{name}.json", result)
print(result)

# %% [markdown]
# ## The two terms
# L_dif (Eq. 8) and L_sem (Eq. 3) apart. L_sem is on in refining, and in multi-subject
# pretraining where `sem_in_pretraining` (the paper's text; the released code has it off there);
# in the final empty-caption phase it stays on. With `lambda_low` above 0 a third panel shows
# L_low (E_ft's map against the stimulus latent; this world's addition, off by default).

# %%
if history:
    import pandas as pd
    import seaborn as sns

    log = pd.DataFrame(history)
    terms = [k for k in ("L_dif", "L_sem", "L_low") if k in log]
    long = log.melt(id_vars=["step", "phase"], value_vars=terms, var_name="term", value_name="value")
    grid = sns.relplot(data=long, x="step", y="value", hue="phase", col="term", kind="line",
                       facet_kws={"sharey": False}, height=2.8, aspect=1.3)
    grid.figure.suptitle(name, y=1.03)
    save_figure(grid.figure, FIG / f"loss_{name}.png")
