"""The generic input: your own stimuli + fMRI matrix in one .npz / .h5 / .mat file."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import scipy.io

from neuropictor.config import load_params
from neuropictor.data.prep import Prepared, prepare
from neuropictor.io import DataError


def _dataset(rng, n_img=30, n_vox=40, reps=2):
    images = rng.integers(0, 256, (n_img, 32, 32, 3), dtype=np.uint8)
    trial_image = np.tile(np.arange(n_img), reps)
    signal = rng.normal(size=(n_img, n_vox))
    fmri = signal[trial_image] + 0.1 * rng.normal(size=(trial_image.size, n_vox))
    split = np.where(np.arange(n_img) < 6, "test", "train")
    captions = np.array([f"image number {i}" for i in range(n_img)])
    return dict(images=images, fmri=fmri.astype(np.float32), trial_image=trial_image, split=split,
                captions=captions, labels=np.arange(n_img, dtype=float))


def _cfg(tmp_path, path, **prep):
    cfg = load_params(overrides={"world": "generic", "paths.generic_input": str(path),
                                 "paths.prepared": str(tmp_path / "prepared")})
    return dataclasses.replace(cfg, prep=dataclasses.replace(cfg.prep, image_size=32, **prep))


def write_generic(path, data: dict) -> None:
    """Write a generic-input dict as .npz, .h5 or .mat (strings as bytes / MATLAB cells)."""
    fmt = str(path).rsplit(".", 1)[-1]
    if fmt == "npz":
        np.savez(path, **data)
    elif fmt == "h5":
        with h5py.File(path, "w") as f:
            for k, v in data.items():
                f[k] = v.astype("S") if v.dtype.kind == "U" else v
    else:
        scipy.io.savemat(path, {k: (v.astype(object) if v.dtype.kind == "U" else v) for k, v in data.items()})


@pytest.mark.parametrize("fmt", ["npz", "h5", "mat"])
def test_generic_round_trip(tmp_path, fmt):
    data = _dataset(np.random.default_rng(0))
    path = tmp_path / f"mine.{fmt}"
    write_generic(path, data)
    cfg = _cfg(tmp_path, path, zscore="none")
    summary = prepare(cfg)
    prep = Prepared(cfg.path("prepared"))
    assert summary["n_train"] == {"own": 24} and summary["n_test"] == {"own": 6}
    test = prep.rows("own", "test")
    assert sorted(test.nsd_id) == list(range(6)) and (prep.index.n_repeats == 2).all()
    vox = prep.voxels("own", "test")
    expected = np.stack([data["fmri"][data["trial_image"] == i].mean(0) for i in test.nsd_id])
    np.testing.assert_allclose(vox, expected, atol=1e-5)
    np.testing.assert_array_equal(prep.images(test.nsd_id.to_numpy()), data["images"][test.nsd_id])
    assert prep.captions()[3] == ["image number 3"]


def test_generic_defaults_and_session_zscore(tmp_path):
    rng = np.random.default_rng(1)
    data = _dataset(rng, reps=1)
    fmri = data["fmri"] + 5.0  # an offset that session z-scoring must remove
    path = tmp_path / "mine.npz"
    np.savez(path, images=data["images"], fmri=fmri)  # no trial_image, no split
    cfg = _cfg(tmp_path, path)
    prepare(cfg)
    prep = Prepared(cfg.path("prepared"))
    vox = np.load(cfg.path("prepared") / "own" / "voxels.npy")
    np.testing.assert_allclose(vox.mean(0), 0, atol=1e-5)
    assert set(prep.index.split) <= {"train", "test"} and len(prep.index) == 30


@pytest.mark.parametrize("change, message", [
    ({"images": np.zeros((30, 32, 32, 2), np.uint8)}, r"'images' must be \(n_images, H, W, 3\)"),
    ({"fmri": np.zeros((60,), np.float32)}, r"'fmri' must be \(n_trials, n_voxels\)"),
    ({"fmri": np.full((60, 4), np.nan, np.float32)}, "NaN/inf"),
    ({"trial_image": np.full(60, 99)}, "must index images 0..29"),
    ({"split": np.array(["train"] * 29 + ["val"])}, "'split' must be 30 strings"),
    ({"images": np.full((30, 32, 32, 3), 7.0)}, "uint8 0-255 or float in"),
    ({"extra": np.zeros(3)}, r"unknown key\(s\) \['extra'\]"),
    ({"roi": np.array(["V1"] * 39)}, r"'roi' must be one label per voxel \(40\)"),
])
def test_generic_bad_input(tmp_path, change, message):
    data = {**_dataset(np.random.default_rng(2)), **change}
    path = tmp_path / "bad.npz"
    np.savez(path, **data)
    with pytest.raises(DataError, match=message) as err:
        prepare(_cfg(tmp_path, path))
    assert "bad.npz" in str(err.value)
    assert not (tmp_path / "prepared" / "index.csv").exists()


def test_generic_roi_labels_become_the_voxel_table(tmp_path):
    data = _dataset(np.random.default_rng(3))
    data["roi"] = np.array(["V1", "V2", "V3", "V4", "FFA", ""] * 6 + ["V1"] * 4)
    path = tmp_path / "mine.npz"
    np.savez(path, **data)
    cfg = _cfg(tmp_path, path)
    prepare(cfg)
    info = Prepared(cfg.path("prepared")).voxel_info("own")
    assert info.visual_roi[:6].tolist() == ["V1", "V2", "V3", "hV4", "", ""]
    assert info.stream[:6].tolist() == ["early", "early", "early", "early", "ventral", ""]
    np.savez(path, **{k: v for k, v in data.items() if k != "roi"})  # without labels: no table, and a clear error
    prepare(cfg)
    with pytest.raises(DataError, match="add `roi`"):
        Prepared(cfg.path("prepared")).voxel_info("own")


def test_generic_missing_file_and_extension(tmp_path):
    with pytest.raises(DataError, match=r"generic input file: expected .*nope\.npz"):
        prepare(_cfg(tmp_path, tmp_path / "nope.npz"))
    odd = tmp_path / "x.csv"
    odd.write_text("1,2")
    with pytest.raises(DataError, match="unsupported extension"):
        prepare(_cfg(tmp_path, odd))
