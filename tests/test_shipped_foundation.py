"""The shipped synthetic foundation (foundation/weights/): every file matches its manifest,
every model loads offline and does its job; the foundation pipeline's notebook runs end to end
on a smoke corpus and resumes from its checkpoints."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from neuropictor.config import PROJ_ROOT, load_params
from neuropictor.io import DataError
from neuropictor.models.foundation import check_manifest, load_foundation
from neuropictor.models.hvae import load_hvae

SHIPPED = PROJ_ROOT / "foundation" / "weights"


def test_manifest_hashes_match_and_every_model_loads():
    manifest = check_manifest(SHIPPED)
    assert not manifest["smoke"] and manifest["corpus_scenes"] >= 10_000
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size <= 80 * 2**20, f"the shipped foundation is {size / 2**20:.1f} MB (limit 80)"
    found = load_foundation(SHIPPED)
    hvae = load_hvae(SHIPPED / "hvae")
    # the formats the paper world's weights use
    assert type(found.pipe).__name__ == "StableDiffusionPipeline"
    assert type(found.clip).__name__ == "CLIPModel" and found.clip.config.vision_config.num_hidden_layers >= 6
    assert hvae.spec.n_groups >= 15
    # each model does what it is for, on scenes of the world's generator it never saw
    from neuropictor.data.corpus import SceneCorpus
    from neuropictor.models.standins import predict_attributes

    x, caps, attrs = SceneCorpus(seed=987_654).batch(range(48))
    pred = predict_attributes(found.standins["attribute_net"], x)
    assert (pred["shape"].to_numpy() == attrs["shape_0"].to_numpy()).mean() > 0.85
    with torch.no_grad():
        rec = (found.pipe.vae.decode(found.pipe.vae.encode(2 * x - 1).latent_dist.mean).sample + 1) / 2
        rec_h = (hvae.decode(hvae.encode(2 * x - 1)) + 1) / 2
    for r in (rec, rec_h):
        assert float((10 * torch.log10(1 / ((r.clamp(0, 1) - x) ** 2).flatten(1).mean(1))).mean()) > 22


def test_manifest_names_a_changed_or_missing_file(tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(SHIPPED, copy)
    check_manifest(copy)
    target = copy / "standins" / "standins.json"
    target.write_text(target.read_text() + " ")
    with pytest.raises(DataError, match=r"changed: standins/standins.json.*make foundation"):
        check_manifest(copy)
    (copy / "hvae" / "config.json").unlink()
    with pytest.raises(DataError, match=r"missing: hvae/config.json"):
        check_manifest(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(DataError, match="no manifest.json"):
        check_manifest(copy)


@pytest.mark.slow
def test_foundation_notebook_smoke_learns_and_resumes(tmp_path):
    """The foundation pipeline's notebook on a 96-scene corpus with 60 steps per model: it
    writes a complete folder whose manifest checks, its models learnt something (losses fell),
    and a second run resumes every model from its finished checkpoint to the same weights."""
    from neuropictor.nb import run_notebook

    overrides = {"paths.foundation": str(tmp_path / "f" / "weights"), "foundation.checkpoints": str(tmp_path / "ckpt"),
                 "foundation.smoke_steps": 60}  # losses logged at steps 50 and 60
    params = {"SMOKE": True, "OVERRIDES": overrides}
    run_notebook("foundation/foundation.py", tmp_path / "run1.ipynb", params, log_output=False)
    weights = tmp_path / "f" / "weights"
    manifest = check_manifest(weights)
    assert manifest["smoke"] and manifest["steps"]["unet"] == 60
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert set(metrics["bars"]) >= {"text-to-image shape >= 85 %", "CLIP shape pick >= 90 %",
                                    "hierarchical VAE PSNR >= 26 dB (all groups)"}
    # the time bar is measured: every model's logged training time, plus the rest of the run
    assert set(metrics["training_minutes"]) == {"attribute_net", "second_net", "vae", "clip", "unet", "hvae"}
    assert all(v > 0 for v in metrics["training_minutes"].values())
    assert metrics["from_scratch_minutes"] >= sum(metrics["training_minutes"].values())
    assert metrics["bars"]["make foundation <= 150 min (training minutes + the rest)"] is True
    for name in ("vae", "clip", "unet", "hvae", "attribute_net"):
        curve = np.genfromtxt(tmp_path / "f" / "plots" / f"{name}.csv", delimiter=",", names=True)
        assert curve["loss"].size == 2 and curve["loss"][-1] < curve["loss"][0], name
    for name in ("vae_reconstructions.png", "text_to_image.png", "hvae_groups.png"):
        assert (tmp_path / "f" / "figures" / name).stat().st_size > 10_000
    first = manifest["files"]
    run_notebook("foundation/foundation.py", tmp_path / "run2.ipynb", params, log_output=False)
    second = check_manifest(weights)["files"]
    model_files = [k for k in first if k.endswith(".safetensors")]
    assert model_files and all(first[k] == second[k] for k in model_files)
    log = (tmp_path / "run2.ipynb").read_text()
    assert "resuming from step 60" in log


def test_the_foundation_pipeline_is_up_to_date_so_make_repro_never_retrains_it():
    """`make repro` runs `dvc repro`, which would retrain the foundation (~2 h) if any source
    file the foundation pipeline depends on differs from what foundation/dvc.lock recorded
    (foundation/weights is a dependency of the main pipeline). Every such file must hash as
    recorded: after a change that does not alter training, `dvc commit foundation/dvc.yaml`
    (say why in the commit); after one that does, `make foundation`."""
    import hashlib

    import yaml

    lock = yaml.safe_load((PROJ_ROOT / "foundation" / "dvc.lock").read_text())
    stale = []
    for dep in lock["stages"]["foundation"]["deps"]:
        path = PROJ_ROOT / dep["path"]
        if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
            stale.append(dep["path"])
    assert not stale, (f"{stale} changed since foundation/dvc.lock was written: `make repro` would retrain the "
                       "shipped foundation. If training is unaffected, run `dvc commit foundation/dvc.yaml`; "
                       "otherwise `make foundation`.")
