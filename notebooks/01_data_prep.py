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
# # 01 · Data prep: NSD layout -> voxel vectors and flatmaps
#
# **What this step does.** Reads an NSD tree (the synthetic one by default, the real NSD when
# `paths.nsd_root` points at it) with the *same* code, and for every subject 1-8:
#
# 1. volume betas (`func1pt8mm`, int16) within `nsdgeneral`, divided by 300 (percent signal change);
# 2. z-scored per voxel within each session (`prep.zscore`: `session` as in MindEye2, `train`
#    as in Brain-Diffuser, or `none`);
# 3. repeats of an image averaged; images split into **train** (the subject's own) and
#    **test** (the shared images every subject saw);
# 4. fsaverage surface betas (`.mgh`, reduced to fsaverage5) treated alike and projected onto a
#    2D **flatmap** cropped to visual cortex: NeuroPictor's 1 x H x W fMRI "image" (Sec. 3.1);
# 5. the resting-state corpus projected the same way, for encoder pretraining.
#
# It then checks the result: example flatmaps, the noise-ceiling histogram and a
# cross-validated ridge decoder (voxels -> stimulus properties), saved as DVC metrics.
#
# Reads: `paths.nsd_root`, `paths.corpus_root` (or `paths.generic_input` in world `generic`).
# Writes: `data/prepared/`, `metrics/data_prep.json`, `figures/data_prep/`.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from neuropictor.config import notebook_setup
from neuropictor.io import save_json
from neuropictor.report import flatmap_grid, save_figure

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "data_prep", show=("seed", "world", "smoke", "prep"))

# %% [markdown]
# ## Prepare every subject
# Subjects run in parallel (`prep.n_workers`); within a subject, one session at a time, with
# the per-image sums kept on disk, so memory stays at about one session whatever the size.

# %%
from neuropictor.data.prep import Prepared, prepare

summary = prepare(cfg)
prepared = Prepared(cfg.path("prepared"))
counts = prepared.index.groupby(["subject", "split"]).size().unstack()
counts["voxels"] = pd.Series(summary["n_voxels"]).rename(index=str).reindex(counts.index.astype(str)).to_numpy()
display(counts)

# %% [markdown]
# ## Stimuli and their flatmaps
# Each flatmap is the subject's z-scored response to one image, averaged over repeats; left
# hemisphere on the left, right on the right (each sees the opposite visual field).

# %%
is_nsd_layout = cfg.world != "generic"
if is_nsd_layout and cfg.prep.surface:
    mask = np.load(cfg.path("prepared") / "flatmap_mask.npy")
    subj = cfg.prep.subjects[0]
    rows = prepared.rows(subj, "test").iloc[:6]
    imgs = prepared.images(rows.nsd_id.to_numpy())
    maps = prepared.flatmaps(subj, "test")[:6]
    fig, axes = plt.subplots(2, 6, figsize=(13, 4.6))
    vlim = float(np.percentile(np.abs(maps[:, mask]), 99))
    for i in range(6):
        axes[0, i].imshow(imgs[i]); axes[0, i].axis("off")
        axes[0, i].set_title(f"nsd id {rows.nsd_id.iloc[i]}", fontsize=8)
        axes[1, i].imshow(np.where(mask, maps[i], np.nan), cmap="RdBu_r", vmin=-vlim, vmax=vlim)
        axes[1, i].axis("off")
    fig.suptitle(f"subject {subj}: test stimuli (top) and their flatmaps (bottom)")
    save_figure(fig, FIG / "flatmaps.png")
    plt.show()

    shared = prepared.index[prepared.index.split == "test"].groupby("nsd_id").subject.nunique()
    common = int(shared.idxmax())
    subs = [s for s in cfg.prep.subjects]
    per_subject = np.stack([prepared.flatmaps(s, "test")[prepared.rows(s, "test").nsd_id.to_numpy() == common][0]
                            if (prepared.rows(s, "test").nsd_id == common).any() else np.zeros(mask.shape)
                            for s in subs])
    fig = flatmap_grid(per_subject, mask, [f"subj{s:02d}" for s in subs], cols=len(subs))
    fig.suptitle(f"the same shared image (nsd id {common}) in every subject")
    save_figure(fig, FIG / "flatmaps_across_subjects.png")
    plt.show()

# %% [markdown]
# ## Noise ceilings
# From each subject's `ncsnr` volume (NSD's definition: signal s.d. / noise s.d. estimated from
# repeats), the noise ceiling for 3-trial averages is 100 ncsnr^2 / (ncsnr^2 + 1/3) percent.

# %%
nc_summary = {}
if is_nsd_layout:
    from neuropictor.data.nsd import NSDLayout
    from neuropictor.data.sanity import noise_ceilings

    layout = NSDLayout(cfg.path("nsd_root"))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in cfg.prep.subjects:
        nc = noise_ceilings(layout, s)
        nc_summary[s] = float(np.median(nc))
        ax.hist(nc, bins=40, range=(0, 100), histtype="step", label=f"subj{s:02d}")
    ax.set_xlabel("noise ceiling (% variance, 3-trial average), nsdgeneral voxels")
    ax.set_ylabel("voxels")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, FIG / "noise_ceiling.png")
    plt.show()
    print({f"subj{s:02d}": round(v, 1) for s, v in nc_summary.items()}, "median noise ceiling (%)")

# %% [markdown]
# ## Sanity decoder
# Cross-validated ridge regression from each subject's training voxels to (a) 8x8 grey
# thumbnails of the stimuli and, in the synthetic world, (b) the primary object's position,
# colour and shape. Chance is 0 R^2 and the commonest-class rate for the accuracies.

# %%
from neuropictor.data.sanity import ridge_sanity

results = [ridge_sanity(prepared, s, cfg.prep.ridge.alphas, cfg.prep.ridge.folds, cfg.seed)
           for s in prepared.index.subject.unique()]
scores = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in results]).set_index("subject")
display(scores.round(3))
r = results[0]
if "_pred_position" in r:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, k, name in zip(axes[:2], (0, 1), ("x", "y")):
        ax.scatter(r["_true_position"][:, k], r["_pred_position"][:, k], s=6)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel(f"true {name}"); ax.set_ylabel(f"decoded {name}")
        ax.set_title(f"subject {r['subject']}: primary object {name}")
    cols = [c for c in scores.columns if c.endswith("_accuracy")]
    scores[cols].plot.bar(ax=axes[2], ylim=(0, 1), title="cross-validated accuracy")
    for c in cols:
        axes[2].axhline(scores[c.replace("accuracy", "chance")].mean(), ls=":", color="grey")
    save_figure(fig, FIG / "ridge_sanity.png")
    plt.show()

# %%
metrics = {"ridge_" + k: float(scores[k].mean()) for k in scores.columns if k != "n_trials"}
if nc_summary:
    metrics["noise_ceiling_median_pct"] = float(np.mean(list(nc_summary.values())))
metrics["n_subjects"] = len(results)
save_json(cfg.path("metrics") / "data_prep.json", metrics)
print(json.dumps(metrics, indent=1))
