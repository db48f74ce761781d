"""Bad input, table-driven (issue 17): params, own-data files, checkpoints and output paths.

Every row ends in a clear error (the key or file named, the fix stated) before anything is
written, or in a documented, correct handling that the row checks. None is silently wrong,
and none leaves an output that looks complete.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neuropictor.config import PROJ_ROOT, ParamsError, load_params
from neuropictor.data.prep import Prepared, prepare
from neuropictor.io import OUTPUT_MARKER, DataError, atomic_dir

from .test_generic import write_generic

# --------------------------------------------------------------------------- params
# (overrides, what the message must say). Each message names the key; the fix is the range
# or the choice it states.
PARAMS = [
    ({"neuropictor.pretrain.batch_size": 0}, r"neuropictor\.pretrain\.batch_size is 0; it must be at least 1"),
    ({"neuropictor.pretrain.batch_size": -4}, r"neuropictor\.pretrain\.batch_size is -4; it must be at least 1"),
    ({"neuropictor.refine.steps": 0}, r"neuropictor\.refine\.steps is 0; it must be at least 1"),
    ({"encoder.steps": 0}, r"encoder\.steps is 0"),
    ({"foundation.unet.steps": -1}, r"foundation\.unet\.steps is -1"),
    ({"encoder.lr": 0}, r"encoder\.lr is 0.0; it must be greater than 0"),
    ({"foundation.unet.lr": "1e-3"}, r"foundation\.unet\.lr is the text '1e-3'.*Write 0\.001 instead"),
    ({"neuropictor.refine.lr": "3e-4"}, r"neuropictor\.refine\.lr is the text '3e-4'.*Write 0\.0003"),
    ({"prep.min_repeats": 0}, r"prep\.min_repeats is 0; it must be at least 1"),
    ({"prep.min_repeats": 99}, r"prep\.min_repeats is 99 but .* only 3 times.*Lower min_repeats"),
    ({"prep.flatmap_size": 60}, r"prep\.flatmap_size \(60\) is not a multiple of encoder\.patch \(8\)"),
    ({"prep.flatmap_size": 7, "encoder.patch": 7}, r"prep\.flatmap_size must be an even number"),
    ({"foundation.unet.prediction": "sample"}, r"foundation\.unet\.prediction is 'sample'; use epsilon or v_pred"),
    ({"foundation.unet.prediction": "epsilon"}, r"zero_terminal_snr needs prediction: v_prediction"),
    ({"neuropictor.empty_rate": 1.5}, r"neuropictor\.empty_rate is 1\.5; it must be between 0 and 1"),
    ({"foundation.unet.empty_caption_rate": -0.1}, r"empty_caption_rate is -0\.1; it must be between 0 and 1"),
    ({"foundation.clip.full_caption_share": 2}, r"full_caption_share is 2\.0"),
    ({"neuropictor.lambda_sem": -0.1}, r"neuropictor\.lambda_sem is -0\.1; it must be 0 or more"),
    ({"reconstruction.alpha_sweep": [0, -1]}, r"reconstruction\.alpha_sweep is \[0\.0, -1\.0\].*every entry"),
    ({"reconstruction.alpha_sweep": []}, r"alpha_sweep is empty"),
    ({"reconstruction.ridge_strength": 0}, r"ridge_strength is 0\.0; it must be above 0 and at most 1"),
    ({"reconstruction.steps": 0}, r"reconstruction\.steps is 0"),
    ({"reconstruction.guidance": -1}, r"reconstruction\.guidance is -1\.0; it must be 0 or more"),
    ({"prep.ridge.alphas": [0.0, 1.0]}, r"prep\.ridge\.alphas is \[0\.0, 1\.0\]; it must be greater than 0"),
    ({"prep.ridge.folds": 1}, r"prep\.ridge\.folds is 1; it must be at least 2"),
    ({"prep.n_workers": 0}, r"prep\.n_workers is 0"),
    ({"seed": -1}, r"params\.seed is -1; it must be 0 or more"),
    ({"seed": "0"}, r"params\.seed must be an integer, got '0'"),
    ({"smoke": "yes"}, r"params\.smoke must be true or false"),
    ({"world": "nds"}, r"use one of synthetic, nsd, generic"),
    ({"prep.zscore": "per-run"}, r"zscore is 'per-run'"),
    ({"prep.subjects": [1, 9]}, r"unknown subject\(s\) \[9\]"),
    ({"prep.subjects": [1, 2]}, r"refine_subjects \[5, 7\] are not in prep\.subjects"),
    ({"prep.zscroe": "none"}, r"Unknown key 'params\.prep\.zscroe'.*Did you mean 'zscore'"),
    ({"encoder.heads": 3}, r"encoder\.width \(128\) and decoder_width \(96\) must be multiples of encoder\.heads"),
    ({"foundation.clip.patch": 7}, r"foundation\.clip\.patch \(7\) must divide prep\.image_size"),
    ({"foundation.vae.channels": [16, 30, 64]}, r"vae\.channels \[16, 30, 64\] must be multiples of vae\.norm_groups"),
    ({"foundation.hvae.groups": [2, 4]}, r"hvae\.groups \[2, 4\] must give a count for each of the 4 resolutions"),
    ({"foundation.unet.ema": 1.0}, r"foundation\.unet\.ema is 1\.0; it must be 0 or more and below 1"),
    ({"neuropictor.encoder_init": "pretraind"}, r"encoder_init is 'pretraind'; use pretrained or random"),
    ({"neuropictor.llmn_map": "pixels"}, r"llmn_map is 'pixels'; use latent or features"),
    ({"neuropictor.llmn_input": "zscore"}, r"llmn_input is 'zscore'; use raw"),
    ({"neuropictor.hlgn_hidden_tokens": 0}, r"hlgn_hidden_tokens is 0; use a positive count or null"),
    ({"neuropictor.hlgn_dropout": 1.0}, r"hlgn_dropout is 1.0; use a share in \[0, 1\)"),
    ({"synthetic.default.n_repeats": 0}, r"synthetic\.default\.n_repeats is 0"),
    ({"synthetic.snr_range": [0, 1]}, r"synthetic\.snr_range is \[0\.0, 1\.0\]; it must be greater than 0"),
    ({"prep.flatmap_margin": 0.7}, r"prep\.flatmap_margin is 0\.7"),
    ({"world": "generic"}, r"paths\.generic_input is not set"),
    ({"ablations.subject": 9}, r"ablations\.subject 9 is not in prep\.subjects"),
    ({"prep.image_size": 32}, r"synthetic\.default\.image_size \(64\) differs from prep\.image_size \(32\)"),
    ({"paths.reports": 5}, r"paths\.reports must be a string"),
    ({"neuropictor.pretrain": 5}, r"params\.neuropictor\.pretrain must be a mapping"),
]


@pytest.mark.parametrize("overrides, message", PARAMS, ids=[next(iter(o)) + "=" + repr(next(iter(o.values())))
                                                            for o, _ in PARAMS])
def test_bad_params_stop_at_load_time(overrides, message):
    with pytest.raises(ParamsError, match=message) as err:
        load_params(overrides=overrides)
    assert "params.yaml" in str(err.value)  # the file is named with the key


# --------------------------------------------------------------------------- own data (world: generic)
def _dataset(n_img=30, n_vox=20, reps=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_img, 32, 32, 3), dtype=np.uint8)
    trial_image = np.tile(np.arange(n_img), reps)
    fmri = rng.normal(size=(n_img, n_vox))[trial_image] + 0.1 * rng.normal(size=(trial_image.size, n_vox))
    return dict(images=images, fmri=fmri.astype(np.float32), trial_image=trial_image,
                session=np.repeat(np.arange(reps), n_img), split=np.where(np.arange(n_img) < 6, "test", "train"))


def _cfg(tmp_path, path, **prep):
    cfg = load_params(overrides={"world": "generic", "paths.generic_input": str(path),
                                 "paths.prepared": str(tmp_path / "prepared")})
    return dataclasses.replace(cfg, prep=dataclasses.replace(cfg.prep, image_size=32, **prep))


def _npz(tmp_path, **change):
    data = {k: v for k, v in {**_dataset(), **change}.items() if v is not None}
    path = tmp_path / "mine.npz"
    np.savez(path, **data)
    return path


def _truncated(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    write_generic(good, _dataset())
    path = tmp_path / f"mine{suffix}"
    path.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    return path


def _h5_group(tmp_path):
    path = tmp_path / "mine.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("data")
        for k, v in _dataset().items():
            g[k] = v.astype("S") if v.dtype.kind == "U" else v
    return path


def _text_as(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    path.write_text("trial,voxel\n1,2\n")
    return path


def _empty(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    path.write_bytes(b"")
    return path


def _one_trial_sessions(tmp_path):
    d = _dataset()
    return _npz(tmp_path, session=np.arange(d["fmri"].shape[0]))


def _test_seen_once(tmp_path):
    d = _dataset()
    keep = ~((d["trial_image"] < 6) & (np.arange(d["trial_image"].size) >= 30))  # test images shown once
    return _npz(tmp_path, fmri=d["fmri"][keep], trial_image=d["trial_image"][keep], session=d["session"][keep])


# (name, make the file, prep settings, message)
OWN_DATA = [
    ("empty .npz", lambda t: _empty(t, ".npz"), {}, r"mine\.npz is empty \(0 bytes\); export your data again"),
    ("empty .mat", lambda t: _empty(t, ".mat"), {}, r"mine\.mat is empty"),
    ("truncated .npz", lambda t: _truncated(t, ".npz"), {}, r"mine\.npz cannot be read as a NumPy \.npz.*export it again"),
    ("truncated .h5", lambda t: _truncated(t, ".h5"), {}, r"mine\.h5 cannot be read as an HDF5 file.*export it again"),
    ("truncated .mat", lambda t: _truncated(t, ".mat"), {}, r"mine\.mat cannot be read as a MATLAB \.mat file"),
    ("text renamed .npz", lambda t: _text_as(t, ".npz"), {}, r"mine\.npz cannot be read"),
    ("text renamed .h5", lambda t: _text_as(t, ".h5"), {}, r"mine\.h5 cannot be read"),
    ("HDF5 group", _h5_group, {}, r"\['data'\] are HDF5 groups, not arrays"),
    ("no fmri", lambda t: _npz(t, fmri=None), {}, r"has no 'fmri' array"),
    ("unknown key", lambda t: _npz(t, betas=np.zeros(3)), {}, r"unknown key\(s\) \['betas'\]"),
    ("non-square images", lambda t: _npz(t, images=np.zeros((30, 32, 40, 3), np.uint8)), {},
     r"are 32 x 40 pixels, not square.*Crop or pad"),
    ("channels first", lambda t: _npz(t, images=np.zeros((30, 3, 32, 32), np.uint8)), {},
     r"channels first.*transpose\(0, 2, 3, 1\)"),
    ("two channels", lambda t: _npz(t, images=np.zeros((30, 32, 32, 2), np.uint8)), {},
     r"'images' must be \(n_images, H, W, 3\)"),
    ("float images 0-255", lambda t: _npz(t, images=np.full((30, 32, 32, 3), 7.0)), {}, r"uint8 0-255 or float in"),
    ("NaN images", lambda t: _npz(t, images=np.full((30, 32, 32, 3), np.nan)), {}, r"uint8 0-255 or float in"),
    ("fmri 1-D", lambda t: _npz(t, fmri=np.zeros(60, np.float32)), {}, r"'fmri' must be \(n_trials, n_voxels\)"),
    ("fmri without voxels", lambda t: _npz(t, fmri=np.zeros((60, 0), np.float32)), {}, r"at least one of each"),
    ("fmri text", lambda t: _npz(t, fmri=np.array([["a"] * 3] * 60)), {}, r"'fmri' must be numeric"),
    ("NaN fmri", lambda t: _npz(t, fmri=np.full((60, 4), np.nan, np.float32)), {}, r"NaN/inf values; drop those"),
    ("trials without trial_image", lambda t: _npz(t, trial_image=None), {}, r"60 fMRI trials but 30 images"),
    ("1-based trial_image", lambda t: _npz(t, trial_image=np.tile(np.arange(1, 31), 2)), {},
     r"must index images 0\.\.29.*looks 1-based \(MATLAB\): subtract 1"),
    ("1-based, last image unshown", lambda t: _npz(t, trial_image=np.concatenate([np.arange(1, 30)] * 2 + [[1, 2]])),
     {}, r"no trial shows image 0.*1-based \(MATLAB\), subtract 1"),
    ("fractional trial_image", lambda t: _npz(t, trial_image=np.tile(np.arange(30), 2) + 0.5), {},
     r"'trial_image' must be 60 whole numbers"),
    ("negative trial_image", lambda t: _npz(t, trial_image=np.tile(np.arange(-1, 29), 2)), {},
     r"must index images 0\.\.29"),
    ("session of another length", lambda t: _npz(t, session=np.zeros(7)), {}, r"'session' must be 60 whole numbers"),
    ("one-trial sessions", _one_trial_sessions, {"zscore": "session"},
     r"hold a single trial.*set prep\.zscore: train"),
    ("split with 'val'", lambda t: _npz(t, split=np.array(["train"] * 29 + ["val"])), {}, r"'split' must be 30 strings"),
    ("all-train split", lambda t: _npz(t, split=np.array(["train"] * 30)), {}, r"no test image is shown.*Mark some"),
    ("all-test split", lambda t: _npz(t, split=np.array(["test"] * 30)), {}, r"no train image is shown"),
    ("min_repeats drops every test image", _test_seen_once, {"min_repeats": 2},
     r"with prep\.min_repeats 2, no test image is left.*Lower prep\.min_repeats"),
    ("captions of another length", lambda t: _npz(t, captions=np.array(["a"] * 3)), {},
     r"'captions' must be one string per image \(30\)"),
    ("missing file", lambda t: t / "nope.npz", {}, r"generic input file: expected .*nope\.npz"),
    ("unsupported extension", lambda t: _text_as(t, ".csv"), {}, r"unsupported extension '\.csv'"),
]


@pytest.mark.parametrize("name, make, prep_settings, message", OWN_DATA, ids=[r[0] for r in OWN_DATA])
def test_bad_own_data_stops_naming_the_file(tmp_path, name, make, prep_settings, message):
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        prepare(_cfg(tmp_path, path, **prep_settings))
    assert path.name in str(err.value)
    assert not (tmp_path / "prepared" / "index.csv").exists()  # nothing that looks complete


def _prepared_voxels(tmp_path, path, **prep):
    cfg = _cfg(tmp_path, path, **prep)
    prepare(cfg)
    prep_tree = Prepared(cfg.path("prepared"))
    return prep_tree, np.load(cfg.path("prepared") / "own" / "voxels.npy")


def test_documented_handling_greyscale_rgba_and_matlab_doubles(tmp_path):
    """Greyscale becomes RGB, RGBA loses its alpha, whole-valued float indices (MATLAB
    doubles) are read as integers: each gives exactly what the plain file gives."""
    base = _dataset()
    ref, ref_vox = _prepared_voxels(tmp_path / "a", _npz(_mk(tmp_path / "a"), **{}), zscore="none")
    grey = base["images"][..., 0]
    prep_grey, _ = _prepared_voxels(tmp_path / "b", _npz(_mk(tmp_path / "b"), images=grey), zscore="none")
    assert np.array_equal(prep_grey.images(np.arange(6)), np.repeat(grey[:6, ..., None], 3, -1))
    rgba = np.concatenate([base["images"], np.full(base["images"].shape[:3] + (1,), 255, np.uint8)], -1)
    prep_rgba, _ = _prepared_voxels(tmp_path / "c", _npz(_mk(tmp_path / "c"), images=rgba), zscore="none")
    assert np.array_equal(prep_rgba.images(np.arange(6)), ref.images(np.arange(6)))
    _, vox = _prepared_voxels(tmp_path / "d", _npz(_mk(tmp_path / "d"), trial_image=base["trial_image"].astype(float),
                                                   session=base["session"].astype(float)), zscore="none")
    np.testing.assert_array_equal(vox, ref_vox)


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_documented_handling_matlab_v73(tmp_path):
    """A MATLAB v7.3 file is HDF5 with column-major arrays: read with h5py and transposed
    back, it prepares exactly as the same data saved as .npz."""
    data = _dataset()
    ref, ref_vox = _prepared_voxels(tmp_path / "npz", _npz(_mk(tmp_path / "npz")), zscore="none")
    path = _mk(tmp_path / "mat") / "mine.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in data.items():
            if v.dtype.kind == "U":  # MATLAB char matrix: uint16 code points, one row per string
                width = max(map(len, v))
                codes = np.array([[ord(c) for c in s.ljust(width)] for s in v], np.uint16)
                ds = f.create_dataset(k, data=codes.T)
                ds.attrs["MATLAB_class"] = np.bytes_("char")
            else:
                f.create_dataset(k, data=np.ascontiguousarray(v.T))  # what MATLAB's column-major store looks like
    with open(path, "r+b") as fh:  # the MATLAB 7.3 header scipy looks for
        fh.write(b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")
    prep, vox = _prepared_voxels(tmp_path / "mat", path, zscore="none")
    np.testing.assert_array_equal(vox, ref_vox)
    assert np.array_equal(prep.images(np.arange(6)), ref.images(np.arange(6)))


# --------------------------------------------------------------------------- checkpoints and model files
def _probe():
    sys.path.insert(0, str(Path(__file__).parent / "scripts"))
    from train_probe import loss_fn, make

    return make, loss_fn


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    from neuropictor.train import TrainConfig, fit

    make, loss_fn = _probe()
    model, data = make()
    fit(model, loss_fn, data, TrainConfig(steps=20, batch_size=8, lr=1e-2, ckpt_every=10), tmp_path, stop_after=10)
    model, data = make()
    with pytest.raises(ValueError, match=r"other settings \(lr: 0\.01 there, 0\.02 now\).*delete .*checkpoint"):
        fit(model, loss_fn, data, TrainConfig(steps=20, batch_size=8, lr=2e-2, ckpt_every=10), tmp_path)


@pytest.mark.parametrize("damage", ["state.json", "model.safetensors", "optimizer.safetensors", "wider model"])
def test_damaged_checkpoint_names_itself_and_the_fix(tmp_path, damage):
    from neuropictor.train import TrainConfig, fit

    make, loss_fn = _probe()
    cfg = TrainConfig(steps=20, batch_size=8, lr=1e-2, ckpt_every=10)
    model, data = make()
    fit(model, loss_fn, data, cfg, tmp_path, stop_after=10)
    ckpt = tmp_path / "checkpoint"
    if damage == "wider model":  # a checkpoint of another width
        model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
    else:
        target = ckpt / damage
        target.write_bytes(target.read_bytes()[:max(1, target.stat().st_size // 3)])
        model, data = make()
    with pytest.raises(ValueError, match=r"(?s)checkpoint .* cannot be resumed.*delete .*checkpoint"):
        fit(model, loss_fn, data, cfg, tmp_path)


def test_truncated_model_files_name_the_file(tmp_path):
    from neuropictor.models.fmri_encoder import EncoderSpec, FlatmapMAE, load_encoder, save_encoder
    from neuropictor.models.hvae import HierarchicalVAE, HVAESpec, load_hvae, save_hvae

    save_encoder(tmp_path / "enc", FlatmapMAE(EncoderSpec(image_size=16, patch=8, width=16, depth=1, heads=2,
                                                           decoder_width=16, decoder_depth=1)))
    f = tmp_path / "enc" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match=r"enc/model\.safetensors is not a readable safetensors.*dvc repro encoder"):
        load_encoder(tmp_path / "enc")
    (tmp_path / "enc" / "config.json").write_text("{not json")
    with pytest.raises(DataError, match=r"config\.json is not a readable encoder config"):
        load_encoder(tmp_path / "enc")
    save_hvae(tmp_path / "hvae", HierarchicalVAE(HVAESpec(image_size=16, resolutions=(1, 4), groups=(1, 1),
                                                          width=8, pixel_width=8, z_dim=2)))
    f = tmp_path / "hvae" / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(DataError, match=r"hvae: not a readable hierarchical VAE.*make foundation"):
        load_hvae(tmp_path / "hvae")


def test_damaged_foundation_file_names_it(tmp_path):
    import shutil

    from neuropictor.models.foundation import load_foundation

    shipped = PROJ_ROOT / "foundation" / "weights"
    copy = tmp_path / "weights"
    shutil.copytree(shipped, copy)
    target = copy / "standins" / "attribute_net.safetensors"
    target.write_bytes(target.read_bytes()[:50])
    with pytest.raises(DataError, match=r"attribute_net\.safetensors is not a readable.*git checkout"):
        load_foundation(copy)


# --------------------------------------------------------------------------- output paths
def test_output_onto_a_folder_of_user_files_is_refused(tmp_path):
    mine = tmp_path / "weights"
    mine.mkdir()
    (mine / "my_model.ckpt").write_text("precious")
    with pytest.raises(DataError, match=r"weights holds files this project did not write.*Point the params key"):
        with atomic_dir(mine) as tmp:
            (tmp / "x").write_text("new")
    assert (mine / "my_model.ckpt").read_text() == "precious" and sorted(os.listdir(tmp_path)) == ["weights"]


def test_output_onto_a_file_is_refused(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(DataError, match=r"notes\.txt is a file, not an output folder"):
        with atomic_dir(target):
            pass
    assert target.read_text() == "mine"


def test_own_output_is_replaced_whole(tmp_path):
    out = tmp_path / "encoder"
    with atomic_dir(out) as tmp:
        (tmp / "old").write_text("1")
    assert (out / OUTPUT_MARKER).exists()
    with atomic_dir(out) as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == sorted(["new", OUTPUT_MARKER])


def test_stage_pointed_at_user_folder_writes_nothing(tmp_path):
    """paths.encoder pointed at a folder of the user's weights: save_encoder refuses."""
    from neuropictor.models.fmri_encoder import EncoderSpec, FlatmapMAE, save_encoder

    mine = tmp_path / "weights"
    mine.mkdir()
    (mine / "sd21.safetensors").write_bytes(b"x" * 10)
    with pytest.raises(DataError, match="did not write"):
        save_encoder(mine, FlatmapMAE(EncoderSpec(image_size=16, patch=8, width=16, depth=1, heads=2,
                                                  decoder_width=16, decoder_depth=1)))
    assert os.listdir(mine) == ["sd21.safetensors"]


# --------------------------------------------------------------------------- no shell from params
def test_params_values_never_reach_a_shell(tmp_path):
    """Every stage command in dvc.yaml, rendered by DVC with params holding shell
    metacharacters, is identical to the one rendered with clean params (no value enters a
    command), and a crafted DVC_STAGE item is refused before anything runs."""
    import shutil

    import yaml
    from dvc.repo import Repo

    def commands(params: dict, where: Path) -> dict:
        where.mkdir()
        shutil.copy(PROJ_ROOT / "dvc.yaml", where / "dvc.yaml")
        (where / "params.yaml").write_text(yaml.safe_dump(params))
        subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=where, check=True)
        repo = Repo(str(where))
        return {s.name: s.cmd for s in repo.index.stages}

    clean = yaml.safe_load((PROJ_ROOT / "params.yaml").read_text())
    evil = json.loads(json.dumps(clean))
    canary = tmp_path / "PWNED"
    evil["paths"]["reports"] = f"reports; touch {canary}"
    evil["paths"]["models"] = f"data/models$(touch {canary})"
    good, bad = commands(clean, tmp_path / "clean"), commands(evil, tmp_path / "evil")
    assert good == bad and len(good) >= 7
    assert all("${" not in cmd and "touch" not in cmd for cmd in bad.values())
    env = {**os.environ, "DVC_STAGE": f"refine@1; touch {canary}"}
    run = subprocess.run([sys.executable, "-m", "neuropictor.nb", "notebooks/04_train.py", "--dvc-stage"],
                         cwd=PROJ_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "is not one of neuropictor.refine_subjects" in run.stderr
    assert not canary.exists()


# --------------------------------------------------------------------------- NSD-layout files
def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])


NSD_FILES = [
    ("truncated volume betas", lambda lay: _truncate(lay.volume_betas(1, 1)),
     r"betas_session01\.nii\.gz cannot be read as a NIfTI/MGH image.*Download it again"),
    ("empty surface betas", lambda lay: lay.surface_betas(1, 2, "left").write_bytes(b""),
     r"lh\.betas_session02\.mgh cannot be read as a NIfTI/MGH image"),
    ("truncated ROI", lambda lay: _truncate(lay.roi(1, "nsdgeneral"), 0.3), r"nsdgeneral\.nii\.gz cannot be read"),
    ("truncated experiment design", lambda lay: _truncate(lay.expdesign), r"nsd_expdesign\.mat is not a readable"),
    ("empty stimulus table", lambda lay: lay.stim_info.write_text(""), r"nsd_stim_info_merged\.csv is not a readable"),
    ("truncated stimuli", lambda lay: _truncate(lay.stimuli, 0.3), r"nsd_stimuli\.hdf5 is not a readable HDF5"),
]


@pytest.mark.parametrize("name, damage, message", NSD_FILES, ids=[r[0] for r in NSD_FILES])
def test_damaged_nsd_file_names_itself(world, tmp_path, name, damage, message):
    import shutil

    from neuropictor.data.nsd import NSDLayout

    cfg, _ = world
    nsd = tmp_path / "nsd"
    shutil.copytree(cfg.path("nsd_root"), nsd)
    damage(NSDLayout(nsd))
    paths = dataclasses.replace(cfg.paths, nsd_root=str(nsd), prepared=str(tmp_path / "prepared"))
    bad_cfg = dataclasses.replace(cfg, paths=paths, prep=dataclasses.replace(cfg.prep, subjects=(1,), n_workers=1))
    with pytest.raises(DataError, match=message):
        prepare(bad_cfg)
    assert not (tmp_path / "prepared" / "index.csv").exists()
