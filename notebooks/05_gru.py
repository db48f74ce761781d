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
# # 05 · Two-stage GRU decoder (seed 004)
#
# Stage 1: a bidirectional GRU reads the beta vector as a sequence of `chunk`-voxel steps and
# predicts the hierarchical VAE's first `groups` latent groups (the paper: 15 of VDVAE's);
# the VAE decodes a coarse image (the remaining groups from its prior). Stage 2 refines it by
# img2img through the foundation pipeline, conditioned on ridge-decoded text states (the
# same second stage as the Brain-Diffuser-style row).
#
# Its checks, each on the same split:
# - **ridge instead of the GRU** (the paper's first experiment): the claim is that the GRU
#   wins on SSIM and CLIP†; judged per seed of `methods.seeds` (decoder training and
#   sampling seed), subject-averaged;
# - **latent size**: `study_groups` (31) instead of 15 groups;
# - **noise sensitivity**: Gaussian noise, `noise_levels` x the decoded features' s.d.,
#   added to stage 1's latents or to stage 2's text states; SSIM and CLIP† vs noise.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from neuropictor.config import notebook_setup
from neuropictor.data.prep import Prepared
from neuropictor.evaluation import score_reconstructions
from neuropictor.io import save_json
from neuropictor.methods import (Decoded, comparison_figure, draw, gru, load_hvae_of, method_subjects,
                                 save_reconstructions, start_latents, subject_data)
from neuropictor.models.foundation import load_world_foundation
from neuropictor.report import save_figure, write_table

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "methods/gru", show=("seed", "world", "smoke"))
G = cfg.methods.gru
print(G)
T0 = time.time()
prepared = Prepared(cfg.path("prepared"))
found = load_world_foundation(cfg)
networks = found.metric_networks()
hvae = load_hvae_of(cfg)
subjects = method_subjects(cfg)
seeds = list(dict.fromkeys([cfg.seed, *cfg.methods.seeds]))  # the pipeline's seed first: Table 1's row
synthetic = cfg.world == "synthetic"


def score(data, images):
    return score_reconstructions(data.images_test, images, data.ids_test, found, prepared, synthetic, networks)

# %% [markdown]
# ## GRU vs ridge, every seed, every subject
# Latent MSE of the decoded groups, then reconstructions drawn and scored.

# %%
rows, data_of, shown, fits, row_decoded = [], {}, {}, [], {}
for s in subjects:
    t = time.time()
    data = data_of[s] = subject_data(cfg, prepared, s, hvae=hvae)
    target = data.hvae_latents("test", G.groups)
    ridge = gru.fit_decode(cfg, data, ridge=True)
    for seed in seeds:
        decoded = gru.fit_decode(cfg, data, seed)
        fits.append({"subject": s, "seed": seed, **{k: decoded.extra["fit"][k] for k in ("epochs", "best_val_mse")}})
        for name, d in [("GRU", decoded), ("ridge", ridge)]:
            images = draw(found, d, cfg, G.strength, seed=seed)
            latent_mse = float((d.extra["latents"] - target).pow(2).mean())
            rows.append({"subject": s, "seed": seed, "stage 1": name, "latent MSE": latent_mse, **score(data, images)})
            if seed == cfg.seed and name == "GRU":
                save_reconstructions(cfg, "gru", s, data.ids_test, images, d.c, start_latents(found, d))
                shown[s] = {"stage 1 (GRU -> hVAE)": d.coarse, "two-stage GRU": images}
                row_decoded[s] = d
            if seed == cfg.seed and name == "ridge":
                shown[s]["ridge instead of GRU"] = images
    print(f"subject {s}: {time.time() - t:.0f} s")
runs = pd.DataFrame(rows)

# %% [markdown]
# ## The claim: GRU ahead of ridge on SSIM and CLIP†, per seed
# Subject-averaged scores per seed; the difference GRU - ridge with its mean and s.d. over seeds.

# %%
clip = next(c for c in runs.columns if c.startswith("CLIP"))
judged = ["latent MSE", "PixCorr", "SSIM", clip]
per_seed = runs.groupby(["seed", "stage 1"])[judged].mean().unstack("stage 1")
diff = pd.DataFrame({m: per_seed[(m, "GRU")] - per_seed[(m, "ridge")] for m in judged})
summary = pd.DataFrame({"GRU": per_seed.xs("GRU", axis=1, level=1).mean(),
                        "ridge": per_seed.xs("ridge", axis=1, level=1).mean(),
                        "GRU - ridge (mean)": diff.mean(), "GRU - ridge (s.d. over seeds)": diff.std().fillna(0.0),
                        "seeds GRU ahead": [f"{(diff[m] < 0).sum() if m == 'latent MSE' else (diff[m] > 0).sum()} "
                                            f"of {len(diff)}" for m in judged]})
table_dir = cfg.path("tables") / "gru"
write_table(summary.round(4), table_dir / "gru_vs_ridge",
            f"Two-stage GRU vs ridge in stage 1 (same stage 2), subjects {subjects}, {len(seeds)} seeds.")
print((table_dir / "gru_vs_ridge.md").read_text())
claims = {"GRU ahead of ridge on SSIM on every seed": bool((diff["SSIM"] > 0).all()),
          f"GRU ahead of ridge on {clip} on every seed": bool((diff[clip] > 0).all())}
for k, ok in claims.items():
    print(f"{'PASS' if ok else 'FAIL'}  {k}")
print(pd.DataFrame(fits).groupby("subject")[["epochs", "best_val_mse"]].mean().round(3))

# %% [markdown]
# ## Latent size: 15 vs 31 groups (seed `seed`)

# %%
size_rows = []
for s in subjects:
    data = data_of[s]
    for groups in dict.fromkeys([G.groups, G.study_groups]):
        decoded = row_decoded[s] if groups == G.groups else gru.fit_decode(cfg, data, cfg.seed, groups=groups)
        size_rows.append({"groups": groups, "subject": s, "stage": "stage 1", **score(data, decoded.coarse)})
        size_rows.append({"groups": groups, "subject": s, "stage": "final",
                          **score(data, draw(found, decoded, cfg, G.strength))})
sizes = pd.DataFrame(size_rows).groupby(["groups", "stage"])[["PixCorr", "SSIM", clip]].mean()
write_table(sizes.round(4), table_dir / "latent_size", f"Two-stage GRU: latent groups decoded, subjects {subjects}.")
print((table_dir / "latent_size.md").read_text())

# %% [markdown]
# ## Noise sensitivity (first subject)
# Noise of `level` x the s.d. of the decoded features (over test images and dimensions) is
# added to stage 1's decoded latents (then decoded to the coarse image) or to stage 2's
# decoded text states; the other stage is left clean.

# %%
s0 = subjects[0]
data, base = data_of[s0], row_decoded[s0]
gen = torch.Generator().manual_seed(cfg.seed)
noise_rows = []
for level in G.noise_levels:
    lat = base.extra["latents"]
    noisy_lat = lat + level * lat.std() * torch.randn(lat.shape, generator=gen)
    variants = {"stage 1 (latents)": Decoded(coarse=data.hvae_decode(noisy_lat, G.groups), c=base.c)}
    if base.c is not None:
        variants["stage 2 (text states)"] = Decoded(
            coarse=base.coarse, c=base.c + level * base.c.std() * torch.randn(base.c.shape, generator=gen))
    for where, d in variants.items():
        noise_rows.append({"noise on": where, "level": level, **score(data, draw(found, d, cfg, G.strength))})
noise = pd.DataFrame(noise_rows)
write_table(noise.set_index(["noise on", "level"])[["SSIM", clip, "PixCorr"]].round(4), table_dir / "noise",
            f"Two-stage GRU, subject {s0}: noise added to one stage's decoded features.")
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for ax, metric in zip(axes, ["SSIM", clip]):
    sns.lineplot(noise, x="level", y=metric, hue="noise on", marker="o", ax=ax)
    ax.set_xlabel("noise (x decoded features' s.d.)")
fig.suptitle(f"Noise sensitivity of the two-stage GRU decoder (subject {s0})")
fig.tight_layout()
save_figure(fig, FIG / "noise_sensitivity.png")
print(noise.round(3))

# %%
fig = comparison_figure(data.images_test, shown[s0], cfg.reconstruction.n_figure, f"Two-stage GRU, subject {s0}")
save_figure(fig, FIG / "reconstructions.png")
save_json(cfg.path("metrics") / "methods" / "gru.json", {
    "vs_ridge": summary.reset_index().to_dict(orient="records"), "claims": claims,
    "per_seed_difference": diff.reset_index().to_dict(orient="records"),
    "latent_size": sizes.reset_index().to_dict(orient="records"),
    "noise": noise.to_dict(orient="records"), "fits": fits, "minutes": round((time.time() - T0) / 60, 2)})
