"""Every kind of bad input stops with a message naming the file or key and the fix."""
from __future__ import annotations

import dataclasses
import shutil

import nibabel as nib
import numpy as np
import pytest

from neuropictor.config import ParamsError, load_params
from neuropictor.data.nsd import NSDLayout
from neuropictor.data.prep import Prepared, prepare
from neuropictor.io import DataError, atomic_path


@pytest.fixture()
def world_copy(world, tmp_path):
    """A private copy of the smoke world's NSD tree that a test may damage."""
    cfg, root = world
    nsd = tmp_path / "nsd"
    shutil.copytree(cfg.path("nsd_root"), nsd)
    paths = dataclasses.replace(cfg.paths, nsd_root=str(nsd), prepared=str(tmp_path / "prepared"))
    prep = dataclasses.replace(cfg.prep, subjects=(1,), n_workers=1)
    return dataclasses.replace(cfg, paths=paths, prep=prep), NSDLayout(nsd)


def _replace_volume(path, data):
    old = nib.load(str(path))
    img = nib.Nifti1Image(data, old.affine)
    img.set_data_dtype(data.dtype)
    path.unlink()
    nib.save(img, str(path))


def test_missing_design_file_names_it(world_copy):
    cfg, layout = world_copy
    layout.expdesign.unlink()
    with pytest.raises(DataError, match=r"nsd_expdesign\.mat.*(NSD|synthetic)"):
        prepare(cfg)


def test_missing_session_names_the_folder(world_copy):
    cfg, layout = world_copy
    layout.volume_betas(1, 2).unlink()
    with pytest.raises(DataError, match=r"sessions \[2\] are missing under .*func1pt8mm"):
        prepare(cfg)


def test_wrong_shape_names_the_file(world_copy):
    cfg, layout = world_copy
    path = layout.volume_betas(1, 1)
    data = np.asanyarray(nib.load(str(path)).dataobj)
    _replace_volume(path, np.ascontiguousarray(data[:-1]))
    with pytest.raises(DataError, match=r"betas_session01\.nii\.gz has shape .* nsdgeneral"):
        prepare(cfg)


def test_nan_betas_name_the_file(world_copy):
    cfg, layout = world_copy
    path = layout.surface_betas(1, 2, "right")
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).copy()
    data[5, 0, 0, 3] = np.nan
    nib.save(nib.MGHImage(data, img.affine), str(path))
    with pytest.raises(DataError, match=r"rh\.betas_session02\.mgh contains 1 NaN"):
        prepare(cfg)


def test_wrong_vertex_count(world_copy):
    cfg, layout = world_copy
    path = layout.surface_betas(1, 1, "left")
    data = np.asanyarray(nib.load(str(path)).dataobj)[:2562]
    nib.save(nib.MGHImage(np.ascontiguousarray(data), np.eye(4)), str(path))
    with pytest.raises(DataError, match=r"lh\.betas_session01\.mgh has 2562 vertices"):
        prepare(cfg)


def test_trial_count_disagreeing_with_design(world_copy):
    cfg, layout = world_copy
    n = len(layout.sessions(1))
    # one session too many for the design's masterordering
    shutil.copy(layout.volume_betas(1, 1), layout.volume_betas(1, n + 1))
    for hemi in ("left", "right"):
        shutil.copy(layout.surface_betas(1, 1, hemi), layout.surface_betas(1, n + 1, hemi))
    with pytest.raises(DataError, match="masterordering lists only"):
        prepare(cfg)


def test_unknown_subject_and_mistyped_params(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown subject\(s\) \[9\]"):
        load_params(overrides={"prep.subjects": [1, 9]})
    with pytest.raises(ParamsError, match=r"Unknown key 'params\.prep\.zscroe'.*Did you mean 'zscore'"):
        load_params(overrides={"prep.zscroe": "none"})
    with pytest.raises(ParamsError, match=r"params\.prep\.flatmap_size must be an integer"):
        load_params(overrides={"prep.flatmap_size": "64"})
    with pytest.raises(ParamsError, match="use one of synthetic, nsd, generic"):
        load_params(overrides={"world": "nds"})
    with pytest.raises(ParamsError, match="zscore is 'per-run'"):
        load_params(overrides={"prep.zscore": "per-run"})
    bad = tmp_path / "p.yaml"
    bad.write_text("seed: [1\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_interrupted_prep_leaves_nothing_that_looks_complete(world_copy, monkeypatch):
    cfg, layout = world_copy
    import neuropictor.data.prep as prep_mod

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(prep_mod, "_write_stimuli", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg)
    out = cfg.path("prepared")
    assert not (out / "index.csv").exists()  # the completion marker is written last
    assert not list(out.rglob("*.partial"))
    with pytest.raises(DataError, match="data prep has not finished"):
        Prepared(out)


def test_atomic_path_removes_the_temporary_on_error(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_interrupted_world_leaves_no_tree(tmp_path, monkeypatch):
    import neuropictor.data.synthetic as syn

    cfg = load_params(overrides={"smoke": True, "paths.synthetic_root": str(tmp_path / "synthetic")})
    monkeypatch.setattr(syn, "simulate_corpus", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        syn.write_world(cfg, n_workers=1)
    assert not (tmp_path / "synthetic").exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_ncsnr_names_the_file(world_copy):
    from neuropictor.data.sanity import noise_ceilings

    cfg, layout = world_copy
    layout.volume_ncsnr(1).unlink()
    with pytest.raises(DataError, match=r"ncsnr of subject 1: expected .*ncsnr\.nii\.gz"):
        noise_ceilings(layout, 1)
