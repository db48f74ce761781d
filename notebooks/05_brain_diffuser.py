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
# # 05 · Brain-Diffuser-style: ridge to the hierarchical VAE, then img2img
#
# Brain-Diffuser (Ozcelik & VanRullen 2023) first predicts the latents of a very deep VAE
# (VDVAE's first 31 groups) from the voxels by ridge and decodes a coarse "initial guess";
# a second stage refines it with a diffusion model conditioned on decoded CLIP features.
# Here: the shipped hierarchical VAE's first `methods.brain_diffuser.groups` groups by ridge,
# the rest from its prior's mean -> coarse image -> img2img (strength
# `methods.brain_diffuser.strength`) conditioned on ridge-decoded text states. This world's
# UNet takes text states only, so Brain-Diffuser's decoded CLIP-vision condition has no
# counterpart. It is the system the two-stage GRU paper (notebook 05_gru) improves on.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import time

import pandas as pd

from neuropictor.config import notebook_setup
from neuropictor.data.prep import Prepared
from neuropictor.io import save_json
from neuropictor.methods import (brain_diffuser, comparison_figure, draw, load_hvae_of, method_subjects,
                                 save_reconstructions, start_latents, subject_data)
from neuropictor.metrics import evaluate
from neuropictor.models.foundation import load_world_foundation
from neuropictor.report import save_figure, write_table

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "methods/brain_diffuser", show=("seed", "world", "smoke"))
print(cfg.methods.brain_diffuser)
T0 = time.time()
prepared = Prepared(cfg.path("prepared"))
found = load_world_foundation(cfg)
hvae = load_hvae_of(cfg)
networks = found.metric_networks()

# %% [markdown]
# ## Fit, decode, draw
# Stage 1's coarse images are scored too: what the second stage adds and what it loses.

# %%
record, shown = {}, {}
for s in method_subjects(cfg):
    t = time.time()
    data = subject_data(cfg, prepared, s, hvae=hvae)
    decoded = brain_diffuser.fit_decode(cfg, data, cfg.seed)
    images = draw(found, decoded, cfg, cfg.methods.brain_diffuser.strength)
    save_reconstructions(cfg, "brain_diffuser", s, data.ids_test, images, decoded.c,
                        start_latents(found, decoded))
    coarse, final = evaluate(data.images_test, decoded.coarse, networks), evaluate(data.images_test, images, networks)
    record[str(s)] = {"stage 1": coarse, "stage 2": final}
    shown[s] = (data.images_test, decoded.coarse, images)
    print(f"subject {s}: stage 1 PixCorr {coarse['PixCorr']:.3f} SSIM {coarse['SSIM']:.3f} -> stage 2 "
          f"PixCorr {final['PixCorr']:.3f} SSIM {final['SSIM']:.3f} ({time.time() - t:.0f} s)")

# %%
stages = pd.DataFrame([{"subject": s, "stage": k, **v} for s, r in record.items() for k, v in r.items()])
stages = stages.groupby("stage")[[c for c in stages.columns if c not in ("subject", "stage")]].mean()
write_table(stages.round(4), cfg.path("tables") / "brain_diffuser" / "stages",
            "Brain-Diffuser-style: stage 1 (hierarchical VAE) vs stage 2 (img2img), subject average.")
print(stages.round(3))

# %%
s0 = method_subjects(cfg)[0]
fig = comparison_figure(shown[s0][0], {"stage 1 (hVAE)": shown[s0][1], "Brain-Diffuser-style": shown[s0][2]},
                        cfg.reconstruction.n_figure, f"Brain-Diffuser-style, subject {s0}")
save_figure(fig, FIG / "reconstructions.png")
save_json(cfg.path("metrics") / "methods" / "brain_diffuser.json",
          {"subjects": record, "minutes": round((time.time() - T0) / 60, 2)})
