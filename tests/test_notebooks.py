"""Papermill smoke runs of the real notebooks on a tiny world (the DVC stages' code path)."""
from __future__ import annotations

import json

import pytest

from neuropictor.nb import run_notebook

from .conftest import write_params

pytestmark = pytest.mark.slow


def test_data_notebooks_smoke(tmp_path):
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


def test_failed_notebook_is_kept_aside(tmp_path):
    params = write_params(tmp_path, **{"paths.nsd_root": str(tmp_path / "nowhere")})
    out = tmp_path / "reports" / "01.ipynb"
    with pytest.raises(Exception, match="nsd_expdesign"):
        run_notebook("notebooks/01_data_prep.py", out, {"PARAMS_FILE": str(params)}, log_output=False)
    assert not out.exists() and out.with_suffix(".failed.ipynb").exists()
