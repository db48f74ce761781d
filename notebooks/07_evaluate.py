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
# # 07 · Table 1: every method, scored the same way
#
# Each method's stage wrote its reconstructions of the shared test images to
# `data/reconstructions/<method>/subjXX.npz` (NeuroPictor: notebook 05; the voxel-based
# methods: notebooks 05_takagi, 05_brain_diffuser, 05_cs292f, 05_gru, 05_neuraldiffuser). Here
# they are read back and scored with the MindEye metric suite (stand-in networks carry a
# dagger) plus the synthetic world's attribute metrics: Table 1 averaged over subjects 1, 2, 5, 7, per
# subject, the attribute table, how much of the caption states each method's text
# condition explains, and Figure 5.
#
# Writes: `tables/table1*.{csv,md,tex}`, `metrics/table1.json`, `figures/table1/`.

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import time

import numpy as np
import pandas as pd

from neuropictor.config import notebook_setup
from neuropictor.data.prep import Prepared
from neuropictor.features import FeatureStore
from neuropictor.evaluation import metrics_ahead, score_reconstructions, split_metrics
from neuropictor.io import DataError, save_json
from neuropictor.methods import ROW_NAMES, comparison_figure, load_reconstructions, r2_score
from neuropictor.models.foundation import images_of, load_world_foundation
from neuropictor.report import save_figure, write_table

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "table1", show=("seed", "world", "smoke"))
T0 = time.time()
prepared = Prepared(cfg.path("prepared"))
found = load_world_foundation(cfg)
networks = found.metric_networks()
subjects = list(cfg.neuropictor.refine_subjects)
methods = [*cfg.methods.rows, "neuropictor_wo_ft", "neuropictor"]
synthetic = cfg.world == "synthetic"

# %% [markdown]
# ## Score every method on every subject
# Every method's file must hold the subject's shared test images in the same order.

# %%
rows, recs, conditions, stimuli = [], {}, {}, {}
for s in subjects:
    ids = prepared.rows(s, "test").nsd_id.to_numpy()
    stimuli[s] = images_of(prepared, ids)
    for m in methods:
        rec = load_reconstructions(cfg, m, s)
        if not np.array_equal(rec["nsd_id"], ids):
            raise DataError(f"{m}, subject {s}: its reconstructions are of other images than the prepared test split; "
                            "re-run its stage (`dvc repro`).")
        recs[(m, s)] = rec["images"]
        conditions[(m, s)] = rec["c"]
        rows.append({"subject": s, "method": ROW_NAMES[m],
                     **score_reconstructions(stimuli[s], rec["images"], ids, found, prepared, synthetic, networks)})
    print(f"subject {s} scored")
results = pd.DataFrame(rows)

# %% [markdown]
# ## Table 1 (synthetic world)

# %%
metric_cols = [c for c in results.columns if c not in ("subject", "method")]
suite, attr_cols = split_metrics(metric_cols)
average = results.groupby("method", sort=False)[metric_cols].mean()
per_subject = results.set_index(["method", "subject"])[metric_cols]
table_dir = cfg.path("tables")
write_table(average[suite], table_dir / "table1",
            f"Table 1 (synthetic world): shared test images, average of subjects {subjects}. "
            "† = in-world stand-in network.")
write_table(per_subject[suite].reset_index("subject").astype({"subject": str}), table_dir / "table1_per_subject",
            "Table 1 per subject (synthetic world).")
if attr_cols:
    write_table(average[attr_cols], table_dir / "table1_attributes",
                "Synthetic-world attribute metrics of the reconstructions (primary object).")
print((table_dir / "table1.md").read_text())
if attr_cols:
    print((table_dir / "table1_attributes.md").read_text())

# %% [markdown]
# ## The semantic readouts
# How much of the caption states' variance over the test images (R^2, all L_T x d_T numbers,
# against their test mean) each method's text condition explains: NeuroPictor's F~txt (the
# HLGN's output that L_sem fits), the ridge-decoded c (Takagi & Nishimoto, Brain-Diffuser-style,
# two-stage GRU) and CS292F's text CNN.

# %%
semantic, store = [], FeatureStore(cfg.path("features"))
for s in subjects:
    truth = store.states(prepared.rows(s, "test").nsd_id.to_numpy())  # the features stage's caption states
    for m in methods:
        if conditions[(m, s)] is not None:
            semantic.append({"method": ROW_NAMES[m], "subject": s, "R2": r2_score(conditions[(m, s)], truth)})
semantic = pd.DataFrame(semantic).pivot(index="method", columns="subject", values="R2")
semantic = semantic.loc[[ROW_NAMES[m] for m in methods if ROW_NAMES[m] in semantic.index]]
semantic["average"] = semantic.mean(1)
print(semantic.round(3))

# %% [markdown]
# ## Figure 5: stimuli and every method's reconstructions (first subject)

# %%
s0 = subjects[0]
fig = comparison_figure(stimuli[s0], {ROW_NAMES[m]: recs[(m, s0)] for m in methods}, cfg.reconstruction.n_figure,
                        f"Subject {s0}: shared test images and every method's reconstructions")
save_figure(fig, FIG / "fig5_reconstructions.png")

# %% [markdown]
# ## Bars

# %%
avg = average.to_dict(orient="index")
npx, wo, ridge = avg["NeuroPictor"], avg["NeuroPictor (w/o ft)"], avg[ROW_NAMES["takagi"]]
over = {ROW_NAMES[m]: metrics_ahead(npx, avg[ROW_NAMES[m]], suite) for m in cfg.methods.rows}
over_ridge, over_wo = over[ROW_NAMES["takagi"]], metrics_ahead(npx, wo, suite)
bars = {
    f"Table 1 has every row ({len(methods)})": len(average) == len(methods),
    f"NeuroPictor ahead of the ridge baseline on >= 6 of {len(suite)} metrics ({len(over_ridge)})": len(over_ridge) >= 6,
    f"refined ahead of w/o ft on >= 6 of {len(suite)} metrics ({len(over_wo)})": len(over_wo) >= 6,
    "CLIP† two-way identification >= 90 %": npx.get("CLIP†", 0) >= 0.90,
}
if synthetic:
    bars["primary shape >= 60 %"] = npx["shape accuracy"] >= 0.6
    bars["primary colour >= 70 %"] = npx["colour accuracy"] >= 0.7
for k, ok in bars.items():
    print(f"{'PASS' if ok else 'FAIL'}  {k}")
for name, metrics_ahead in over.items():
    print(f"NeuroPictor ahead of {name} on {len(metrics_ahead)} of {len(suite)}: {', '.join(metrics_ahead) or 'none'}")

# %%
save_json(cfg.path("metrics") / "table1.json", {
    "average": avg, "neuropictor_ahead_of": over, "refined_ahead_of_wo_ft": over_wo,
    "semantic_readout_r2": {m: {str(k): v for k, v in row.items()} for m, row in semantic.iterrows()}, "bars": bars,
    "minutes": round((time.time() - T0) / 60, 2)})
