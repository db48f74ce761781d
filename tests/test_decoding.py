"""Stage 04-05 helpers: stage switches, table formatting, params checks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neuropictor.config import ParamsError, load_params
from neuropictor.decoding import reference_captions, switches
from neuropictor.report import format_metric, write_table


def test_pretraining_runs_without_the_auxiliary_encoder_and_l_sem_as_configured():
    """Multi-subject pretraining has no auxiliary encoder; refining has it. L_sem: on in both
    stages in this world (the paper's text); weight 0 in pretraining in the paper world (the
    released code)."""
    cfg = load_params()
    assert not switches(cfg, "pretrain").use_aux and switches(cfg, "refine").use_aux
    assert switches(cfg, "pretrain").lambda_sem == switches(cfg, "refine").lambda_sem == 0.1
    assert switches(cfg, "refine").sem_loss == "sum"
    from neuropictor.config import PROJ_ROOT

    paper = load_params(PROJ_ROOT / "params.paper.yaml")
    assert switches(paper, "pretrain").lambda_sem == 0.0 and switches(paper, "refine").lambda_sem == 0.1
    assert switches(paper, "refine").sem_loss == "mean"
    off = load_params(overrides={"neuropictor.use_aux": False, "neuropictor.lambda_sem": 0.0})
    assert not switches(off, "refine").use_aux and switches(off, "refine").lambda_sem == 0.0


@pytest.mark.parametrize("in_pretraining, reduction", [(True, "sum"), (False, "mean"), (True, "mean")])
def test_l_sem_follows_the_papers_text_or_the_released_code(in_pretraining, reduction):
    """sem_in_pretraining puts L_sem in multi-subject pretraining too (the paper's text);
    sem_loss says how Eq. 3 is reduced over the width, in every stage L_sem is on."""
    cfg = load_params(overrides={"neuropictor.sem_in_pretraining": in_pretraining, "neuropictor.sem_loss": reduction,
                                 "neuropictor.lambda_sem": 0.25})
    pre, ref = switches(cfg, "pretrain"), switches(cfg, "refine")
    assert pre.lambda_sem == (0.25 if in_pretraining else 0.0) and ref.lambda_sem == 0.25
    assert pre.sem_loss == ref.sem_loss == reduction
    assert not pre.use_aux and ref.use_aux  # the auxiliary encoder stays a refining part either way


@pytest.mark.parametrize("key, value, hint", [
    ("neuropictor.encoder_init", "xavier", "pretrained or random"),
    ("neuropictor.encoder_output", "guide", "full or cls"),
    ("neuropictor.refine_subjects", [1, 9], "not in prep.subjects"),
    ("neuropictor.use_llnm", False, "use_llmn"),
    ("neuropictor.sem_loss", "l2", "sum .*or mean"),
])
def test_bad_neuropictor_params_are_named(key, value, hint):
    with pytest.raises(ParamsError, match=hint):
        load_params(overrides={key: value})


def test_table_formats_like_the_paper(tmp_path):
    assert format_metric("AlexNet(2)†", 0.9654) == "96.5%"
    assert format_metric("SSIM", 0.375) == ".375"
    assert format_metric("EffNet-B†", 0.639) == ".639"
    assert format_metric("PixCorr", -0.02) == "-.020"
    df = pd.DataFrame({"PixCorr": [0.229, 0.141], "CLIP†": [0.933, 0.889]}, index=["NeuroPictor", "w/o ft"])
    paths = write_table(df, tmp_path / "t1", "Table 1")
    assert pd.read_csv(paths["csv"], index_col=0).loc["w/o ft", "CLIP†"] == pytest.approx(0.889)
    md = paths["md"].read_text()
    assert "93.3%" in md and ".229" in md and md.startswith("Table 1")
    assert r"93.3\%" in paths["tex"].read_text()


def test_reference_captions_are_the_full_captions(prepared):
    cfg, prep = prepared
    ids = prep.rows(1, "test").nsd_id.to_numpy()[:5]
    caps = reference_captions(cfg, prep, ids)
    all_caps = prep.captions()
    for i, c in zip(ids, caps):
        assert c in all_caps[int(i)] and c.endswith("background")


def test_training_ends_with_the_mask_phase(monkeypatch):
    """Two phases through fit: every caption kept, then `mask_steps` at lr / 10 with
    empty captions at `empty_rate`; the model leaves with its own empty_rate."""
    import neuropictor.decoding as dec
    from neuropictor.config import Loop
    from neuropictor.models.neuropictor import ModelSwitches

    calls = []

    def fake_fit(model, loss_fn, data, cfg, out_dir, desc):
        calls.append((cfg.steps, cfg.lr, model.switches.empty_rate, out_dir.name if out_dir else None))
        return [{"step": cfg.steps, "loss": 1.0}]

    class Model:
        switches = ModelSwitches(empty_rate=0.05)

    class Data:
        def batches(self):
            return None

    monkeypatch.setattr(dec, "fit", fake_fit)
    model = Model()
    hist = dec.train_neuropictor(model, Data(), Loop(steps=40, batch_size=4, lr=1e-3, mask_steps=8), 0, None, "x")
    assert calls == [(40, 1e-3, 0.0, None), (8, 1e-4, 0.05, None)]
    assert [h["step"] for h in hist] == [40, 48] and [h["phase"] for h in hist] == ["main", "mask"]
    assert model.switches.empty_rate == 0.05
