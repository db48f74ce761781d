"""Papermill smoke runs of the real notebooks on a tiny world (the DVC stages' code path)."""
from __future__ import annotations

import json

import numpy as np

import pytest

from neuropictor.nb import run_notebook

from .conftest import write_params

pytestmark = pytest.mark.slow


def test_pipeline_notebooks_smoke(tmp_path):
    """Every stage's notebook in order, on the smoke world (each reads what the last wrote)."""
    params = write_params(tmp_path)
    out0 = run_notebook("notebooks/00_synthetic_world.py", tmp_path / "reports" / "00.ipynb",
                        {"PARAMS_FILE": str(params)}, log_output=False)
    assert out0.exists()
    assert (tmp_path / "synthetic" / "nsd" / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat").exists()
    for name in ("stimuli.png", "retinotopy.png", "anatomy.png"):
        assert (tmp_path / "figures" / "synthetic_world" / name).stat().st_size > 10_000

    run_notebook("notebooks/01_data_prep.py", tmp_path / "reports" / "01.ipynb",
                 {"PARAMS_FILE": str(params)}, log_output=False)
    metrics = json.loads((tmp_path / "metrics" / "data_prep.json").read_text())
    assert metrics["n_subjects"] == 8
    assert 5 < metrics["noise_ceiling_median_pct"] < 80
    for key in ("ridge_shape_accuracy", "ridge_colour_accuracy", "ridge_position_r2", "ridge_thumbnail_r2"):
        assert key in metrics
    for name in ("flatmaps.png", "noise_ceiling.png", "ridge_sanity.png", "flatmaps_across_subjects.png"):
        assert (tmp_path / "figures" / "data_prep" / name).exists()

    run_notebook("notebooks/02_foundation.py", tmp_path / "reports" / "02.ipynb",
                 {"PARAMS_FILE": str(params)}, log_output=False)
    found = json.loads((tmp_path / "metrics" / "foundation.json").read_text())
    assert found["shipped"]["files"] >= 10 and found["shipped"]["corpus_scenes"] >= 10_000
    # the metric sanity holds whatever the models: it tests the suite
    assert found["bars"]["identical images: PixCorr 1, SSIM 1, identification 100 %"]
    # the shipped models do their jobs on the smoke world's stimuli, which they never saw
    assert found["attribute_classifier"]["shape accuracy"] > 0.8 and found["vae"]["psnr_db"] > 25
    assert found["text_to_image"]["colour"] > 0.5  # chance is 1/6
    for name in ("vae_reconstructions.png", "text_to_image.png"):
        assert (tmp_path / "figures" / "foundation" / name).stat().st_size > 10_000

    run_notebook("notebooks/02b_features.py", tmp_path / "reports" / "02b.ipynb",
                 {"PARAMS_FILE": str(params)}, log_output=False)
    feats = json.loads((tmp_path / "metrics" / "features.json").read_text())
    n_stimuli = len(np.load(tmp_path / "prepared" / "stimuli_ids.npy"))
    assert feats["n_images"] == n_stimuli and feats["latents"][0] == n_stimuli
    assert feats["caption_states"][0] == n_stimuli and feats["max_relative_difference"] < 1e-3
    assert feats["decoded_psnr_db"] > 25  # the stored latents decode to the stimuli

    run_notebook("notebooks/03_encoder.py", tmp_path / "reports" / "03.ipynb",
                 {"PARAMS_FILE": str(params)}, log_output=False)
    enc = json.loads((tmp_path / "metrics" / "encoder.json").read_text())
    assert set(enc["reconstruction"]) == {"corpus, held-out subjects", "task flatmaps (8 subjects, test images)"}
    assert (tmp_path / "encoder" / "model.safetensors").exists()
    # judged against the task maps' reliability: every subject's split halves were read
    assert enc["task reliability"]["n"] > 0 and -1 <= enc["task reliability"]["median split-half r(A, B)"] <= 1

    run_notebook("notebooks/04_train.py", tmp_path / "reports" / "04p.ipynb",
                 {"PARAMS_FILE": str(params), "STAGE": "pretrain"}, log_output=False)
    for s in (1, 2, 5, 7):
        run_notebook("notebooks/04_train.py", tmp_path / "reports" / f"04r{s}.ipynb",
                     {"PARAMS_FILE": str(params), "STAGE": "refine", "SUBJECT": s}, log_output=False)
        assert (tmp_path / "models" / f"refine_subj{s}" / "model.safetensors").exists()
    # something was learnt in the few smoke steps: the loss on a fixed probe batch (fixed noise,
    # timesteps and dropped captions) fell, and L_dif and L_sem were logged apart
    for name in ("pretrain", "refine_subj1"):
        log = json.loads((tmp_path / "metrics" / "training" / f"{name}.json").read_text())
        assert log["probe_loss_after"] < log["probe_loss_before"], (name, log)
        assert log["final_L_dif"] is not None
    assert json.loads((tmp_path / "metrics" / "training" / "refine_subj1.json").read_text())["final_L_sem"] is not None
    run_notebook("notebooks/05_reconstruct.py", tmp_path / "reports" / "05.ipynb",
                 {"PARAMS_FILE": str(params)}, log_output=False)
    rec = json.loads((tmp_path / "metrics" / "reconstruction.json").read_text())
    assert set(rec["average"]) == {"neuropictor", "neuropictor_wo_ft"}
    alone = rec["semantic_condition_alone"]
    assert set(alone) == {"true caption states", "NeuroPictor F^sem"}
    # F^sem drawn by diffusers' pipeline is our sampler at alpha 0 (same noise, same DDIM)
    alpha0 = next(r for r in rec["alpha_sweep"] if r["alpha"] == 0)
    for metric in ("PixCorr", "SSIM", "CLIP†"):
        assert alone["NeuroPictor F^sem"][metric] == pytest.approx(alpha0[metric], abs=1e-6)
    for name in ("fig1_alpha_sweep.png", "fig2_swap.png"):
        assert (tmp_path / "figures" / "reconstruction" / name).exists()

    # the voxel-based methods, one notebook each (two seeds keep the smoke run short)
    fast = {"PARAMS_FILE": str(params), "OVERRIDES": {"methods.seeds": [0, 1], "methods.cs292f.table4_samples": 2,
                                                      "methods.gru.noise_levels": [0.0, 2.0]}}
    for method in ("takagi", "brain_diffuser", "cs292f", "gru"):
        run_notebook(f"notebooks/05_{method}.py", tmp_path / "reports" / f"05_{method}.ipynb", fast, log_output=False)
        assert sorted(p.name for p in (tmp_path / "reconstructions" / method).iterdir()) == \
            ["subj01.npz", "subj02.npz", "subj05.npz", "subj07.npz"]
        assert (tmp_path / "figures" / "methods" / method / "reconstructions.png").stat().st_size > 10_000
    cs = json.loads((tmp_path / "metrics" / "methods" / "cs292f.json").read_text())
    decoders = {(r["target"], r["decoder"]) for r in cs["table3"]}
    assert decoders == {("image latent z", d) for d in ("Linear (ridge)", "CNN", "VAE", "GCN")} | \
        {("text states", d) for d in ("Linear (ridge)", "CNN")}
    assert len(cs["table4"]) == 2 and cs["best_latent_decoder"]["1"] in ("cnn", "vae", "gcn")
    # the ROI graph is bottom-up: edges only from a lower to a higher node, none onto itself
    graph = cs["gcn_graph"]["1"]
    assert len(graph["connectivity"]) == 3 and all(i < j for i, j in graph["edges"])
    gru = json.loads((tmp_path / "metrics" / "methods" / "gru.json").read_text())
    assert {r["noise on"] for r in gru["noise"]} == {"stage 1 (latents)", "stage 2 (text states)"}
    assert (tmp_path / "figures" / "methods" / "gru" / "noise_sensitivity.png").exists()

    # NeuralDiffuser: kappa chosen on held-out training scans, its row, kappa = 0 over seeds
    nd_over = {"methods.seeds": [0, 1], "methods.neuraldiffuser.kappa_candidates": [0.0, 300.0],
               "methods.neuraldiffuser.eta_grid": [0.2, 1.0]}
    run_notebook("notebooks/05_neuraldiffuser.py", tmp_path / "reports" / "05_neuraldiffuser.ipynb",
                 {"PARAMS_FILE": str(params), "OVERRIDES": nd_over}, log_output=False)
    nd = json.loads((tmp_path / "metrics" / "methods" / "neuraldiffuser.json").read_text())
    assert nd["kappa"] == 300.0 and set(nd["kappa_selection"]) == {"0.0", "300.0"}
    assert set(nd["claims"]) == {"SSIM", "AlexNet(2)†"} and len(nd["claims"]["SSIM"]["per_seed"]) == 2
    # the guidance moved the drawings (same decoded features, same seeds): kappa = 0 is not kappa > 0
    assert any(abs(d) > 0 for d in nd["claims"]["SSIM"]["per_seed"] + nd["claims"]["AlexNet(2)†"]["per_seed"])

    run_notebook("notebooks/07_evaluate.py", tmp_path / "reports" / "07.ipynb", {"PARAMS_FILE": str(params)},
                 log_output=False)
    t1 = json.loads((tmp_path / "metrics" / "table1.json").read_text())
    rows = {"Takagi & Nishimoto (ridge)", "Brain-Diffuser-style (ridge -> hVAE)", "CS292F (nonlinear decoders)",
            "Two-stage GRU", "NeuralDiffuser (ridge z, c, g + guidance)", "NeuroPictor (w/o ft)", "NeuroPictor"}
    assert set(t1["average"]) == rows and t1["bars"]["Table 1 has every row (7)"]
    assert "CLIP†" in t1["average"]["NeuroPictor"] and "shape accuracy" in t1["average"]["NeuroPictor"]
    readout = t1["semantic_readout_r2"]
    assert set(readout) == rows and all(r["average"] <= 1 for r in readout.values())  # R^2 never exceeds 1

    # `make guidance`: kappa x eta, the true-feature ceiling, every method "+ guidance"
    run_notebook("notebooks/08_guidance.py", tmp_path / "reports" / "08.ipynb",
                 {"PARAMS_FILE": str(params), "OVERRIDES": nd_over}, log_output=False)
    gd = json.loads((tmp_path / "metrics" / "guidance.json").read_text())
    assert gd["kappa"] == 300.0 and len(gd["kappa_eta_grid"]) == 2 and len(gd["oracle_features"]) == 4
    plus = {f"{r} + guidance" for r in ("NeuroPictor", "Brain-Diffuser-style (ridge -> hVAE)",
                                        "CS292F (nonlinear decoders)", "Two-stage GRU")}
    assert plus <= set(gd["table1_guidance"]) and len(gd["guidance_ahead"]) == 4
    guided = {p.name for p in (tmp_path / "reconstructions").iterdir() if p.name.endswith("_guided")}
    assert guided == {f"{m}_guided" for m in ("neuropictor", "brain_diffuser", "cs292f", "gru")}
    assert (tmp_path / "figures" / "guidance" / "kappa_eta_grid.png").exists()
    assert (tmp_path / "tables" / "guidance" / "table1_guidance.md").exists()
    table = (tmp_path / "tables" / "table1.md").read_text()
    assert "AlexNet(2)†" in table and "Two-stage GRU" in table
    assert (tmp_path / "figures" / "table1" / "fig5_reconstructions.png").exists()

    # Table 2 on four rows that take every path: a start point without multi-subject
    # pretraining ("full"), the pipeline's pretraining reused without refining ("wo_finetune")
    # and as it is ("neuropictor"), a pretraining of its own ("wo_llmn")
    rows = ["full", "wo_finetune", "wo_llmn", "neuropictor"]
    run_notebook("notebooks/06_ablations.py", tmp_path / "reports" / "06.ipynb",
                 {"PARAMS_FILE": str(params), "OVERRIDES": {"ablations.rows": rows}}, log_output=False)
    abl = json.loads((tmp_path / "metrics" / "ablations.json").read_text())
    assert sorted(abl["rows"]) == sorted(rows)
    models = tmp_path / "ablations" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["full", "full_init", "wo_llmn", "wo_llmn_pretrain"]
    # the row equal to the pipeline is the pipeline's refined model: the same reconstructions,
    # up to their 8-bit storage (Table 1 scores the uint8 images each method wrote; Table 2
    # scores the sampler's floats: rounding moves PixCorr ~2e-4 and flips a pair or two of
    # the 12 x 11 identification pairs at most)
    import pandas as pd

    per_subject = pd.read_csv(tmp_path / "tables" / "table1_per_subject.csv").set_index(["method", "subject"])
    for metric, tol in (("PixCorr", 2e-3), ("SSIM", 2e-3), ("CLIP†", 2 / (12 * 11) + 1e-9)):
        expected = per_subject.loc[("NeuroPictor", 1), metric]
        assert abl["rows"]["neuropictor"][metric] == pytest.approx(expected, abs=tol)
    table2 = (tmp_path / "ablations" / "tables" / "table2.md").read_text()
    assert "W/o LLMN" in table2 and "fMRI Enc." in table2 and "✓" in table2


def test_failed_notebook_is_kept_aside(tmp_path):
    params = write_params(tmp_path, **{"paths.nsd_root": str(tmp_path / "nowhere")})
    out = tmp_path / "reports" / "01.ipynb"
    with pytest.raises(Exception, match="nsd_expdesign"):
        run_notebook("notebooks/01_data_prep.py", out, {"PARAMS_FILE": str(params)}, log_output=False)
    assert not out.exists() and out.with_suffix(".failed.ipynb").exists()


def test_world_tagged_cells_run_only_in_their_world(tmp_path):
    """Stage 02 loads the shipped foundation in the synthetic world and SD-2.1 in the paper world."""
    import jupytext

    from neuropictor.nb import _cells_for_world

    nb = jupytext.read("notebooks/02_foundation.py", fmt="py:percent")
    synthetic = _cells_for_world(nb.cells, {"PARAMS_FILE": str(write_params(tmp_path))})
    paper = _cells_for_world(nb.cells, {"PARAMS_FILE": str(write_params(tmp_path)), "OVERRIDES": {"world": "nsd"}})
    src = lambda cells: "\n".join(c.source for c in cells)  # noqa: E731
    assert "check_manifest(" in src(synthetic) and "load_world_foundation(cfg)" not in src(synthetic)
    assert "check_manifest(" not in src(paper) and "load_world_foundation(cfg)" in src(paper)
    assert "notebook_setup(" in src(paper) and "notebook_setup(" in src(synthetic)  # untagged cells stay
