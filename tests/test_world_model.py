"""The simulation itself: stimuli, retinotopy, pRFs and subject differences."""
from __future__ import annotations

import numpy as np
import pandas as pd

from neuropictor.data import cortex
from neuropictor.data.brain import SubjectBrain
from neuropictor.data.stimuli import (COLOURS, Scene, attribute_row, captions, full_caption, make_stimuli,
                                      render, sample_scene, scene_of_row)


def test_render_puts_the_object_where_it_says():
    scene = Scene("dark", [{"shape": "square", "colour": "red", "size": "large", "x": 0.3, "y": 0.7}])
    img = render(scene, 64).astype(float) / 255
    r, c = int(0.7 * 64), int(0.3 * 64)
    np.testing.assert_allclose(img[r, c], COLOURS["red"], atol=0.01)
    np.testing.assert_allclose(img[5, 60], (0.12, 0.12, 0.14), atol=0.01)  # background far away
    caps = captions(scene, np.random.default_rng(0))
    assert len(caps) == 5 and all("red" in c and "square" in c for c in caps)
    assert any("bottom left" in c for c in caps)
    assert "a large red square in the bottom left on a dark background" in caps


def test_full_caption_comes_back_from_the_attribute_table():
    rng = np.random.default_rng(5)
    for _ in range(20):
        scene = sample_scene(rng)
        row = attribute_row(scene)
        assert full_caption(scene_of_row(row)) == full_caption(scene)
        assert full_caption(scene) in captions(scene, rng)


def test_stimuli_are_deterministic_per_seed():
    a = make_stimuli(5, 32, np.random.default_rng(3))
    b = make_stimuli(5, 32, np.random.default_rng(3))
    c = make_stimuli(5, 32, np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def test_retinotopy_is_plausible():
    m = cortex.both_hemispheres(cortex.Anatomy(), 5, 6)
    n = cortex.N_VERTS
    counts = np.bincount(m["area"], minlength=7)
    assert (counts[1:] > 100).all() and counts[0] > 0.7 * m["area"].size
    v1 = m["area"] == 1
    # pRF size grows with eccentricity, and from V1 to hV4 at matched eccentricity
    assert np.corrcoef(m["ecc"][v1], m["sigma"][v1])[0, 1] > 0.95
    band = (m["ecc"] > 2) & (m["ecc"] < 3)
    assert m["sigma"][band & (m["area"] == 4)].mean() > m["sigma"][band & v1].mean()
    # each hemisphere maps the opposite visual field
    retino = (m["area"] >= 1) & (m["area"] <= 5) & (m["ecc"] > 0.5)
    assert (m["x"][:n][retino[:n]] > 0).all() and (m["x"][n:][retino[n:]] < 0).all()


def test_prf_responses_follow_the_stimulus_position():
    rng = np.random.default_rng(0)
    brain = SubjectBrain(cortex.Anatomy(), 8.4, rng)
    scenes = [Scene("grey", [{"shape": "circle", "colour": "yellow", "size": "small", "x": x, "y": 0.5}])
              for x in (0.2, 0.8)]
    imgs = np.stack([render(s, 64) for s in scenes])
    attrs = pd.DataFrame([{"n_objects": 1, "background": "grey", "shape_0": "circle", "colour_0": "yellow",
                           "size_0": "small", "x_0": x, "y_0": 0.5} for x in (0.2, 0.8)])
    drive = brain.drive(imgs, attrs)
    n = cortex.N_VERTS
    v1_left = np.flatnonzero(brain.maps["area"][:n] == 1)  # left hemisphere: right visual field
    # an object on the right (x = 0.8) drives left V1 more than one on the left
    assert drive[1, v1_left].sum() > 1.5 * drive[0, v1_left].sum()
    v1_right = n + np.flatnonzero(brain.maps["area"][n:] == 1)
    assert drive[0, v1_right].sum() > 1.5 * drive[1, v1_right].sum()


def test_subjects_differ_by_a_warp():
    a = cortex.both_hemispheres(cortex.Anatomy.sample(np.random.default_rng(1)), 5, 6)
    b = cortex.both_hemispheres(cortex.Anatomy.sample(np.random.default_rng(2)), 5, 6)
    t = cortex.both_hemispheres(cortex.Anatomy(), 5, 6)
    overlap = ((a["area"] == 1) & (b["area"] == 1)).sum() / (a["area"] == 1).sum()
    assert 0.3 < overlap < 0.98  # the same map, moved: mostly but not entirely overlapping
    same = cortex.both_hemispheres(cortex.Anatomy.sample(np.random.default_rng(1), jitter=0), 5, 6)
    assert np.array_equal(same["area"], t["area"])


def test_noise_ceiling_in_nsd_range(world):
    from neuropictor.data.nsd import NSDLayout
    from neuropictor.data.sanity import noise_ceilings

    cfg, _ = world
    nc = noise_ceilings(NSDLayout(cfg.path("nsd_root")), 1)
    assert 10 < np.median(nc) < 60 and nc.max() > 50


def test_same_params_same_world(world, tmp_path):
    """Determinism: a second simulation with the same params is byte-identical (so DVC's
    hashes, and everything downstream, do not change when nothing changed)."""
    import hashlib

    from neuropictor.config import load_params
    from neuropictor.data.synthetic import write_world

    from .conftest import smoke_overrides

    cfg, root = world
    again = load_params(overrides=smoke_overrides(tmp_path))
    write_world(again, n_workers=2)

    def digest(base):
        return {p.relative_to(base): hashlib.md5(p.read_bytes()).hexdigest()
                for p in sorted(base.rglob("*")) if p.is_file()}

    first, second = digest(root / "synthetic"), digest(tmp_path / "synthetic")
    assert first.keys() == second.keys() and len(first) > 100
    assert [k for k in first if first[k] != second[k]] == []


def test_primary_object_is_strictly_the_largest():
    """Otherwise "the primary object" of a scene with two equally large objects could not be
    read from the image, and the attribute metrics would judge a coin toss."""
    from neuropictor.data.stimuli import SIZES

    rng = np.random.default_rng(11)
    counts = {1: 0, 2: 0, 3: 0}
    for _ in range(2000):
        sizes = [SIZES[o["size"]] for o in sample_scene(rng).objects]
        assert all(sizes[0] > s for s in sizes[1:]), sizes
        counts[len(sizes)] += 1
    assert all(n > 50 for n in counts.values())  # scenes of one, two and three objects all occur
