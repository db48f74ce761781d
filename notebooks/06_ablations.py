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
# # 06 · Table 2: ablations on one subject
#
# The paper's Table 2, row by row, on subject `ablations.subject` (1, as in the paper). Each
# row is a set of overrides of the `neuropictor:` switches in params.yaml, trained the way
# the pipeline trains (multi-subject pretraining on all 8 subjects, then refining on the
# subject) and scored like Table 1 on the shared test images:
#
# | row | fMRI encoder | multi-subject pretraining | override |
# |---|---|---|---|
# | NeuroPictor | random init | no | `encoder_init: random` |
# | NeuroPictor | [CLS] | no | `encoder_output: cls` |
# | NeuroPictor | frozen | no | `encoder_trainable: false` |
# | NeuroPictor | full | no | (none) |
# | W/o Finetune | full | yes | `refining: false` |
# | W/o LLMN | full | yes | `use_llmn: false` |
# | W/o Au. Enc. | full | yes | `use_aux: false` |
# | W/o L_sem | full | yes | `lambda_sem: 0` |
# | NeuroPictor | full | yes | (none) |
#
# The first four rows skip multi-subject pretraining (`multi_subject_pretraining: false`).
# Models the main pipeline trained (`models/pretrain`, `models/refine_subj1`) are loaded,
# not retrained. Not part of `make repro` (it trains 7 more models): run `make ablations`.
#
# Writes: `ablations/tables/table2.{csv,md,tex}` (`ablations.tables`), `metrics/ablations.json`,
# `figures/ablations/`, the rows' models under `data/ablations/` (`ablations.models`).

# %% tags=["parameters"]
PARAMS_FILE = "params.yaml"
SMOKE = None
OVERRIDES = {}

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from neuropictor.config import notebook_setup
from neuropictor.io import save_json
from neuropictor.report import save_figure, write_table

cfg, FIG = notebook_setup(PARAMS_FILE, SMOKE, OVERRIDES, "ablations", show=("seed", "smoke", "ablations"))
A = cfg.ablations
T0 = time.time()

# %%
from neuropictor.ablations import TABLE2, row_settings, select_rows, train_row
from neuropictor.data.prep import Prepared
from neuropictor.evaluation import held_out, reconstruct_images, score_reconstructions, split_metrics
from neuropictor.models.foundation import load_world_foundation

prepared = Prepared(cfg.path("prepared"))
found = load_world_foundation(cfg)
networks = found.metric_networks()
mask = np.load(cfg.path("prepared") / "flatmap_mask.npy")
rows = select_rows(A.rows)
subject = A.subject
ids, maps, gt = held_out(prepared, subject)
out_root = A.path("models")
print(f"subject {subject}: {len(ids)} test images; rows: {[r.key for r in rows]}")

# %% [markdown]
# ## Train (or load) and score every row

# %%
results, recs, shared = [], {}, {}
for i, row in enumerate(rows):
    t = time.time()
    row_cfg = row_settings(PARAMS_FILE, OVERRIDES, SMOKE, row)
    model = train_row(row, row_cfg, cfg, found, prepared, mask, subject, out_root, shared,
                      progress=f"[{i + 1}/{len(rows)}] ")
    recs[row.key] = reconstruct_images(model, found, maps, row_cfg)
    scores = score_reconstructions(gt, recs[row.key], ids, found, prepared, cfg.world == "synthetic", networks)
    results.append({"row": row.key, "Model": row.model, "fMRI Enc.": row.encoder,
                    "Multi Pret.": "✓" if row.multi else "", **scores})
    print(f"{row.key}: {time.time() - t:.0f} s, CLIP† {scores.get('CLIP†', float('nan')):.3f}, "
          f"SSIM {scores['SSIM']:.3f}")
results = pd.DataFrame(results)

# %% [markdown]
# ## Table 2 (synthetic world)

# %%
metric_cols = [c for c in results.columns if c not in ("row", "Model", "fMRI Enc.", "Multi Pret.")]
suite, attr_cols = split_metrics(metric_cols)
table = results.set_index("Model")[["fMRI Enc.", "Multi Pret."] + suite]
table_dir = A.path("tables")
write_table(table, table_dir / "table2",
            f"Table 2 (synthetic world): ablations on subject {subject}, shared test images. "
            "† = in-world stand-in network.")
if attr_cols:
    write_table(results.set_index("Model")[["fMRI Enc.", "Multi Pret."] + attr_cols], table_dir / "table2_attributes",
                f"Synthetic-world attribute metrics of the Table 2 rows (subject {subject}).")
print((table_dir / "table2.md").read_text())

# %% [markdown]
# ## Reconstructions of every row

# %%
n = min(cfg.reconstruction.n_figure, len(ids))
labels = ["stimulus"] + [f"{r.model}\n{r.encoder}{' + multi' if r.multi else ''}" for r in rows]
fig, axes = plt.subplots(len(labels), n, figsize=(1.2 * n, 1.2 * len(labels) + 0.3), squeeze=False,
                         gridspec_kw={"hspace": 0.08, "wspace": 0.05})
for r, imgs in enumerate([gt] + [recs[row.key] for row in rows]):
    for i in range(n):
        axes[r, i].imshow(imgs[i].permute(1, 2, 0).numpy())
        axes[r, i].set_xticks([]), axes[r, i].set_yticks([])
    axes[r, 0].set_ylabel(labels[r], fontsize=6)
fig.suptitle(f"Table 2 rows, subject {subject}: shared test images", y=0.9)
save_figure(fig, FIG / "table2_reconstructions.png")

# %% [markdown]
# ## Saved metrics

# %%
record = {"subject": int(subject), "minutes": round((time.time() - T0) / 60, 2),
          "rows": {r["row"]: {k: v for k, v in r.items() if k != "row"} for r in results.to_dict(orient="records")}}
save_json(cfg.path("metrics") / "ablations.json", record)
print(f"{record['minutes']} min")
