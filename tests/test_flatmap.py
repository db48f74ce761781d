"""Flatmap projection of known patterns."""
from __future__ import annotations

import numpy as np
import pytest

from neuropictor.data import cortex
from neuropictor.data.flatmap import build_flatmap
from neuropictor.data.nsd import to_fsaverage5
from neuropictor.io import DataError


@pytest.fixture(scope="module")
def visual_roi():
    template = cortex.both_hemispheres(cortex.Anatomy(), 5, 6)
    return template["area"] > 0


def test_linear_pattern_is_reproduced_exactly(visual_roi):
    fs = cortex.fsaverage5()
    flat = build_flatmap(visual_roi, 32, roi_only=False)  # every cortex pixel: plain barycentric interpolation
    values = np.concatenate([3 * fs[h]["flat"][:, 0] - 2 * fs[h]["flat"][:, 1] + 50 * i
                             for i, h in enumerate(cortex.HEMIS)])
    img = flat.project(values[None])[0]
    expected = 3 * flat.pixel_xy[..., 0] - 2 * flat.pixel_xy[..., 1] + 50 * flat.hemi
    assert flat.mask.mean() > 0.3
    np.testing.assert_allclose(img[flat.mask], expected[flat.mask], rtol=1e-4, atol=1e-2)
    assert (img[~flat.mask] == 0).all()


def test_roi_only_draws_the_roi_and_zeroes_the_rest(visual_roi):
    """NeuroPictor's flatmaps are zero outside the visual-cortex mask: activity outside the ROI
    reaches no pixel, and the mask is the ROI's part of the crop."""
    roi = visual_roi & (cortex.both_hemispheres(cortex.Anatomy(), 5, 6)["area"] <= 3)  # V1-V3: a box with cortex around them
    inside, everything = build_flatmap(roi, 32), build_flatmap(roi, 32, roi_only=False)
    assert np.array_equal(inside.pixel_xy, everything.pixel_xy)  # the same crop
    assert inside.mask.sum() < 0.8 * everything.mask.sum() and (inside.mask <= everything.mask).all()
    outside = (~roi).astype(np.float32)[None]
    assert (inside.project(outside) == 0).all() and everything.project(outside).max() > 0.5
    ones = inside.project(roi.astype(np.float32)[None])[0]
    np.testing.assert_allclose(ones[inside.mask], 1, rtol=1e-5)  # border pixels renormalised over their ROI vertices
    assert (ones[~inside.mask] == 0).all()


def test_hemispheres_go_to_their_half(visual_roi):
    flat = build_flatmap(visual_roi, 32)
    left_only = np.r_[np.ones(cortex.N_VERTS), np.zeros(cortex.N_VERTS)]
    img = flat.project(left_only[None])[0]
    assert np.allclose(img[:, :16][flat.mask[:, :16]], 1)
    assert (img[:, 16:] == 0).all()


def test_crop_follows_the_roi(visual_roi):
    """A bump at one vertex lands at that vertex's position inside the crop."""
    fs = cortex.fsaverage5()
    flat = build_flatmap(visual_roi, 64)
    v = int(np.flatnonzero(visual_roi[: cortex.N_VERTS] & (cortex.retinotopy("left", cortex.Anatomy(), 5, 6)["area"] == 1))[0])
    d = np.linalg.norm(fs["left"]["flat"] - fs["left"]["flat"][v], axis=1)
    values = np.r_[np.exp(-d**2 / 50), np.zeros(cortex.N_VERTS)]
    img = flat.project(values[None])[0]
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert np.linalg.norm(flat.pixel_xy[r, c] - fs["left"]["flat"][v]) < 4 * np.linalg.norm(
        flat.pixel_xy[0, 1] - flat.pixel_xy[0, 0])
    # the crop is the ROI's box, not the whole hemisphere
    whole = build_flatmap(np.ones(2 * cortex.N_VERTS, bool), 64)
    assert np.ptp(flat.pixel_xy[..., 0][:, :32]) < np.ptp(whole.pixel_xy[..., 0][:, :32])


def test_full_fsaverage_is_reduced_to_fsaverage5(tmp_path):
    full = np.arange(163842 * 2).reshape(163842, 2)
    assert np.array_equal(to_fsaverage5(full, tmp_path), full[:10242])
    with pytest.raises(DataError, match="fsaverage5"):
        to_fsaverage5(np.zeros((40962, 3)), tmp_path / "lh.betas_session01.mgh")
