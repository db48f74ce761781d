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
# # 00 · The synthetic world
#
# **What this step does.** Nothing here can download the Natural Scenes Dataset (NSD), so the
# default world is a small, honest simulation of it, written to disk **in NSD's own file
# layout** so that the data-prep code of the next notebook is exactly the code that reads the
# real NSD. Its ground truth is known, which lets later notebooks *test* the paper's claims.
#
# - **Stimuli**: scenes of 1-3 objects (shape, colour, size, position, background) with five
#   COCO-style captions each.
# - **Brain**: on nilearn's fsaverage5 cortex, retinotopic areas V1, V2, V3, hV4 and V3ab with
#   population receptive fields (pRFs) that grow with eccentricity, responding to local
#   contrast, luminance and colour; a higher ventral patch (HVC) tuned to object shape and colour.
# - **Eight subjects**, each with its own anatomy (a smooth warp of the maps), voxel grid, SNR
#   and session drift; subjects 1, 2, 5, 7 complete every session, the others stop early.
# - **A resting-state corpus** of many more simulated subjects (the UK Biobank stand-in that
#   NeuroPictor's encoder is pretrained on, Sec. 3.1).
#
# Paper: NeuroPictor Sec. 4.1 (NSD) and Sec. 3.1 (UKB). Reads: `params.yaml` (`synthetic`).
# Writes: `data/synthetic/` (`nsd/` in NSD layout, `corpus/`, `truth/`, `attributes.csv`),
# `figures/synthetic_world/`.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"  # tests pass a temporary params file
SMOKE = None  # None: as params.yaml says; True/False overrides it
OVERRIDES = {}  # dotted params keys -> values, e.g. {"seed": 1}

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from neuropictor.config import as_dict, notebook_setup
from neuropictor.report import save_figure, stimulus_grid, surface_maps

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "synthetic_world", show=("seed", "world", "smoke", "paths"))
print("world sizes in force:", json.dumps(as_dict(cfg)["synthetic"]["smoke" if cfg.smoke else "default"]))

# %% [markdown]
# ## Simulate and write
# The whole tree is written into a temporary folder and renamed into place at the end, so an
# interrupted run never leaves a half-written world behind. In the paper world (`world: nsd`)
# this stage only leaves a note: the real NSD lives at `paths.nsd_root`.

# %%
from neuropictor.data.synthetic import write_world

root = cfg.path("synthetic_root")
if cfg.world != "synthetic":
    root.mkdir(parents=True, exist_ok=True)
    (root / "NOT_USED.txt").write_text(f"world is '{cfg.world}': the synthetic world is not simulated.\n")
    summary = None
    print(f"world '{cfg.world}': nothing to simulate")
else:
    summary = write_world(cfg)
    display(pd.DataFrame(summary["subjects"]).set_index("subject"))

# %% [markdown]
# ## The stimuli
# Every caption names the *primary* object (the largest, drawn on top): its shape and colour
# are what the synthetic-world metrics check in reconstructions later on.

# %%
if summary is not None:
    from neuropictor.data.nsd import NSDLayout, read_captions, read_stim_info, read_stimuli

    layout = NSDLayout(cfg.path("nsd_root"))
    ids = np.arange(12)
    images = read_stimuli(layout, ids)
    caps = read_captions(layout, read_stim_info(layout), ids)
    fig = stimulus_grid(images, [caps[i][0] for i in ids])
    save_figure(fig, FIG / "stimuli.png")
    plt.show()
    display(pd.read_csv(root / "attributes.csv").head())

# %% [markdown]
# ## Retinotopic maps and individual anatomy
# Polar angle reverses at each area border (V1 | V2 | V3), eccentricity runs from the occipital
# pole (fovea) forward, and pRF size grows with eccentricity and up the hierarchy. Two subjects
# differ by a warp of the same maps: this is the individual difference that NeuroPictor's
# shared fMRI space has to absorb.

# %%
if summary is not None:
    t1 = np.load(root / "truth" / "subj01.npz")
    t2 = np.load(root / "truth" / "subj02.npz")
    visual = t1["area"] > 0
    fig = surface_maps(
        {"area": t1["area"], "polar angle": t1["angle"], "eccentricity": t1["ecc"], "pRF size": t1["sigma"]},
        mask=visual, cmaps={"area": "tab10", "polar angle": "hsv"},
        vranges={"area": (0, 9), "polar angle": (0, 360), "eccentricity": (0, 4)}, title_prefix="subj01 ")
    save_figure(fig, FIG / "retinotopy.png")
    plt.show()

    from neuropictor.data.flatmap import build_flatmap
    from neuropictor.data.nsd import read_fsaverage_label

    flat = build_flatmap(read_fsaverage_label(layout, "nsdgeneral") > 0, 128)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (name, t) in zip(axes[:2], (("subj01", t1), ("subj02", t2))):
        img = flat.project(t["area"][None].astype(float))[0]
        ax.imshow(np.where(flat.mask, img, np.nan), cmap="tab10", vmin=0, vmax=9)
        ax.set_title(f"{name}: visual areas on the flatmap")
        ax.axis("off")
    from matplotlib.patches import Patch

    from neuropictor.data.cortex import AREAS

    cmap = plt.get_cmap("tab10")
    axes[1].legend(handles=[Patch(color=cmap(code / 9), label=name) for code, name in enumerate(AREAS)],
                   loc="lower center", ncol=4, fontsize=7, bbox_to_anchor=(0.5, -0.25))
    both = flat.project(np.stack([t1["area"] == 1, t2["area"] == 1]).astype(float))
    axes[2].imshow(np.where(flat.mask, both[0] - both[1], np.nan), cmap="PiYG", vmin=-1, vmax=1)
    axes[2].set_title("V1: subj01 only (green) vs subj02 only (pink)")
    axes[2].axis("off")
    save_figure(fig, FIG / "anatomy.png")
    plt.show()

# %% [markdown]
# ## What was written
# The same paths the real NSD uses (see `../shared/REFERENCE.md`), so notebook 01 cannot tell
# the worlds apart.

# %%
if summary is not None:
    files = [p for p in root.rglob("*") if p.is_file()]
    kinds = pd.DataFrame({"kind": [p.suffix if p.suffix != ".gz" else ".nii.gz" for p in files],
                          "MB": [p.stat().st_size / 1e6 for p in files]})
    display(kinds.groupby("kind").agg(files=("MB", "size"), MB=("MB", "sum")).round(1))
    print(f"{len(files)} files, {kinds.MB.sum():.0f} MB under {root}")
