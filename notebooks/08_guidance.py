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
# # 08 · NeuralDiffuser's guidance: kappa x eta, its ceiling, and "+ guidance" on every method
#
# `make guidance` (`guidance/dvc.yaml`; not part of `make repro`). Stage `neuraldiffuser`
# (notebook 05_neuraldiffuser) chose kappa on held-out training scans and measured the
# guidance against kappa = 0 for NeuralDiffuser itself. Here:
#
# 1. kappa x eta on the same held-out training scans (first subject, ridge refitted on the
#    rest): how much and how long to guide (SSIM, AlexNet(2)†, CLIP† and FID†, the image-quality
#    proxy: FID's Fréchet distance on the Inception† stand-in's features).
# 2. The ceiling: the same scans guided towards the *true* block features of their stimuli.
# 3. The paper proposes the guidance as universal: NeuroPictor and every voxel method are
#    drawn again with it (NeuralDiffuser's decoded g of the same scans, the chosen kappa and
#    eta, each method's own seed, strength, start latent and text states, as its stage saved
#    them), and scored beside themselves with Table 1's suite. (Takagi & Nishimoto + guidance
#    is the NeuralDiffuser row itself: the same ridge z and c.)
#
# Writes `data/reconstructions/<method>_guided/`, `tables/guidance/`, `figures/guidance/`,
# `metrics/guidance.json`.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import json
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from neuropictor.config import notebook_setup
from neuropictor.data.prep import Prepared
from neuropictor.decoding import build_neuropictor, load_model
from neuropictor.evaluation import held_out, metrics_ahead, reconstruct_images, score_reconstructions, split_metrics
from neuropictor.io import DataError, save_json
from neuropictor.methods import (ROW_NAMES, Decoded, comparison_figure, draw, load_reconstructions, method_subjects,
                                 neuraldiffuser, save_reconstructions, subject_data)
from neuropictor.methods.base import validation_rows
from neuropictor.models.foundation import images_of, load_world_foundation
from neuropictor.report import save_figure, write_table

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "guidance", show=("seed", "world", "smoke"))
P = cfg.methods.neuraldiffuser
T0 = time.time()
prepared = Prepared(cfg.path("prepared"))
found = load_world_foundation(cfg)
subjects = method_subjects(cfg)
chosen = cfg.path("metrics") / "methods" / "neuraldiffuser.json"
if not chosen.exists():
    raise DataError(f"{chosen} not found: the kappa NeuralDiffuser's stage chose. Run `dvc repro` first.")
KAPPA = float(json.loads(chosen.read_text())["kappa"])
print(f"kappa = {KAPPA:g} (chosen by stage neuraldiffuser), eta = {P.eta}, eta grid {list(P.eta_grid)}")
study = neuraldiffuser.study_networks(found)
KEY = list(neuraldiffuser.STUDY_METRICS)
TABLES = cfg.path("tables") / "guidance"


def score(stimuli, images):
    return neuraldiffuser.study_scores(found, study, stimuli, images)


def guided(decoded, g, kappa, eta=None, seed=None):
    """Draw `decoded` with the feature guidance towards g (kappa = 0: no guidance)."""
    return neuraldiffuser.draw_guided(found, decoded, g, kappa, cfg, eta=eta, seed=seed)


# %% [markdown]
# ## kappa x eta on held-out training scans

# %%
data_of = {s: subject_data(cfg, prepared, s) for s in subjects}
s0 = subjects[0]
data = data_of[s0]
fit_rows, held = validation_rows(len(data.x_train), P.select_share, cfg.seed)
held_decoded, held_g = neuraldiffuser.held_out_decoders(cfg, data, found, fit_rows, held)
held_stimuli = images_of(prepared, data.ids_train[held])
base = score(held_stimuli, guided(held_decoded, held_g, 0.0))
grid = pd.DataFrame([{"kappa": k, "eta": eta, **score(held_stimuli, guided(held_decoded, held_g, k, eta))}
                     for k in P.kappa_candidates if k > 0 for eta in P.eta_grid])
for k in KEY:
    grid[f"d {k}"] = grid[k] - base[k]
write_table(grid.round(4), TABLES / "kappa_eta_grid",
            f"NeuralDiffuser's guidance, kappa x eta (subject {s0}, {len(held)} held-out training scans; d = change "
            "from kappa = 0: " + ", ".join(f"{k} {v:.3f}" for k, v in base.items()) + ").")
print(grid.round(3).to_string(index=False))

# %%
panels = ["d SSIM", "d AlexNet(2)†", "d CLIP†", "d FID†"]
fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
for ax, col in zip(axes, panels):
    sns.heatmap(grid.pivot(index="kappa", columns="eta", values=col), annot=True, fmt=".3f", center=0,
                cmap="RdBu_r" if "FID" in col else "RdBu", ax=ax, cbar=False)
    ax.set_title(col.replace("d ", "change in ") + (" (lower better)" if "FID" in col else ""), fontsize=9)
fig.suptitle(f"Feature guidance vs kappa = 0, held-out training scans of subject {s0} (chosen kappa {KAPPA:g})")
fig.tight_layout()
save_figure(fig, FIG / "kappa_eta_grid.png")

# %% [markdown]
# ## The ceiling: guidance towards the true features
# The same held-out scans guided towards the block features of their own stimuli (what a
# perfect g decoder would give), at the chosen kappa and at 10x it.

# %%
true_g = neuraldiffuser.image_features(neuraldiffuser.vision_tower(found), held_stimuli, P.layers)
at = grid[np.isclose(grid.eta, P.eta) & np.isclose(grid.kappa, KAPPA)][KEY]
ceiling = pd.concat([pd.DataFrame([base], index=["kappa = 0"]), at.set_axis([f"decoded g, kappa {KAPPA:g}"]),
                     pd.DataFrame([score(held_stimuli, guided(held_decoded, true_g, k)) for k in (KAPPA, 10 * KAPPA)],
                                  index=[f"true g, kappa {k:g}" for k in (KAPPA, 10 * KAPPA)])[KEY]])
write_table(ceiling.round(4), TABLES / "oracle_features",
            f"Guidance towards decoded vs true block features (subject {s0}, held-out training scans, eta {P.eta}).")
print(ceiling.round(3).to_string())

# %% [markdown]
# ## "+ guidance" on every method (test scans, every subject)

# %%
STRENGTH = {"takagi": cfg.methods.takagi.strength, "brain_diffuser": cfg.methods.brain_diffuser.strength,
            "cs292f": cfg.methods.cs292f.strength, "gru": cfg.methods.gru.strength}
mask = np.load(cfg.path("prepared") / "flatmap_mask.npy")
synthetic = cfg.world == "synthetic"
networks = found.metric_networks()
rows, shown = [], {}
for s in subjects:
    data = data_of[s]
    g = neuraldiffuser.decode_features(cfg, data, found)
    guide = neuraldiffuser.feature_guide(found, g, KAPPA, P.eta, cfg)
    for m in P.guided_rows:
        before = load_reconstructions(cfg, m, s)
        if not np.array_equal(before["nsd_id"], data.ids_test):
            raise DataError(f"{m}, subject {s}: its reconstructions are of other images than the test split; "
                            "re-run its stage (`dvc repro`).")
        if m == "neuropictor":
            model = load_model(cfg.path("models") / f"refine_subj{s}", build_neuropictor(cfg, found, mask, "refine"))
            images = reconstruct_images(model, found, held_out(prepared, s).maps, cfg, guide=guide)
        else:
            if before["z"] is None or before["c"] is None:
                raise DataError(f"{m}, subject {s}: its file holds no start latent z or text states c (written by "
                                "an older version of its stage); re-run it (`dvc repro`).")
            images = draw(found, Decoded(z=before["z"], c=before["c"]), cfg, STRENGTH[m], guide=guide)
        path = save_reconstructions(cfg, f"{m}_guided", s, data.ids_test, images, before["c"], before["z"])
        after = load_reconstructions(cfg, f"{m}_guided", s)["images"]  # scored as stored (8-bit), as Table 1
        for name, imgs in ((ROW_NAMES[m], before["images"]), (f"{ROW_NAMES[m]} + guidance", after)):
            rows.append({"subject": s, "method": name, "guided": name.endswith("+ guidance"),
                         **score_reconstructions(data.images_test, imgs, data.ids_test, found, prepared, synthetic,
                                                 networks)})
        if s == s0:
            short = ROW_NAMES[m].split(" (")[0]  # the figure's row labels: the name without its gloss
            shown[short], shown[f"{short}\n+ guidance"] = before["images"], after
    print(f"subject {s}: {len(P.guided_rows)} methods redrawn with guidance ({time.time() - T0:.0f} s)")
results = pd.DataFrame(rows)

# %%
suite, _ = split_metrics([c for c in results.columns if c not in ("subject", "method", "guided")])
average = results.groupby("method", sort=False)[suite].mean()
write_table(average, TABLES / "table1_guidance",
            f"Table 1's suite with and without NeuralDiffuser's feature guidance (kappa {KAPPA:g}, eta {P.eta}): "
            f"shared test images, average of subjects {subjects}. † = in-world stand-in network.")
ahead = {}
for m in P.guided_rows:
    ahead[ROW_NAMES[m]] = metrics_ahead(average.loc[f"{ROW_NAMES[m]} + guidance"], average.loc[ROW_NAMES[m]], suite)
    print(f"{ROW_NAMES[m]} + guidance ahead of itself on {len(ahead[ROW_NAMES[m]])} of {len(suite)}: "
          f"{', '.join(ahead[ROW_NAMES[m]]) or 'none'}")
print((TABLES / "table1_guidance.md").read_text())

# %%
fig = comparison_figure(data_of[s0].images_test, shown, cfg.reconstruction.n_figure,
                        f"Subject {s0}: each method without and with NeuralDiffuser's feature guidance (kappa {KAPPA:g})")
save_figure(fig, FIG / "plus_guidance.png")
save_json(cfg.path("metrics") / "guidance.json", {
    "kappa": KAPPA, "eta": P.eta, "kappa_eta_grid": grid.to_dict("records"),
    "oracle_features": ceiling.to_dict("index"), "table1_guidance": average.to_dict("index"),
    "guidance_ahead": ahead, "minutes": round((time.time() - T0) / 60, 2)})
print(f"{(time.time() - T0) / 60:.1f} min")
