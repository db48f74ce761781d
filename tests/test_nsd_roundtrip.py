"""Data prep read back against an independent recomputation from the raw NSD-layout files."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from neuropictor.data.nsd import NSDLayout, read_expdesign


def _raw_trials(layout: NSDLayout, subj: int):
    """All sessions' masked volume betas of a subject, straight from nibabel."""
    roi = np.asanyarray(nib.load(str(layout.roi(subj, "nsdgeneral"))).dataobj) > 0
    sessions = []
    s = 1
    while layout.volume_betas(subj, s).exists():
        raw = np.asanyarray(nib.load(str(layout.volume_betas(subj, s))).dataobj)
        assert raw.dtype == np.int16  # NSD stores betas as int16 x 300
        sessions.append(raw[roi].T.astype(np.float64) / 300.0)
        s += 1
    return sessions


def test_design_file_is_nsd_shaped(world):
    cfg, root = world
    mat = scipy.io.loadmat(NSDLayout(cfg.path("nsd_root")).expdesign)
    sizes = cfg.sizes
    n_per = sizes.n_shared + sizes.n_unique_per_subject
    assert mat["subjectim"].shape == (8, n_per)
    assert mat["masterordering"].shape == (1, n_per * sizes.n_repeats)
    assert mat["masterordering"].min() == 1  # 1-based, as in MATLAB
    # the shared images open every subject's row of subjectim
    assert (mat["subjectim"][:, : sizes.n_shared] == mat["sharedix"].ravel()).all()


def test_trial_counts_and_sessions(world):
    cfg, root = world
    layout = NSDLayout(cfg.path("nsd_root"))
    sizes = cfg.sizes
    for subj in range(1, 9):
        expected = sizes.n_sessions_complete if subj in (1, 2, 5, 7) else sizes.n_sessions_partial
        assert layout.sessions(subj) == list(range(1, expected + 1))
        assert layout.sessions(subj, "fsaverage") == list(range(1, expected + 1))
        img = nib.load(str(layout.volume_betas(subj, 1)))
        assert img.shape[3] == sizes.trials_per_session
        lh = nib.load(str(layout.surface_betas(subj, 1, "left")))
        assert lh.shape == (10242, 1, 1, sizes.trials_per_session)


def test_repeats_averaged_and_zscored_per_session(world, prepared):
    cfg, prep = prepared
    layout = NSDLayout(cfg.path("nsd_root"))
    design = read_expdesign(layout)
    for subj in (1, 3):  # a complete and a partial subject
        sessions = _raw_trials(layout, subj)
        z = [(b - b.mean(0)) / np.where(b.std(0) > 0, b.std(0), 1) for b in sessions]
        trials = np.concatenate(z)
        ids = design.trial_images(subj, trials.shape[0])
        index = prep.index[prep.index.subject == subj]
        vox = np.load(prep.root / f"subj{subj:02d}" / "voxels.npy")
        assert vox.shape == (len(index), trials.shape[1])
        for _, row in index.sample(8, random_state=0).iterrows():
            sel = ids == row.nsd_id
            assert sel.sum() == row.n_repeats
            np.testing.assert_allclose(vox[row.row], trials[sel].mean(0), atol=2e-4)
        # per-session z-scoring: every session's mean is 0 per voxel, so the session drift is gone
        assert abs(np.mean(z[0], 0)).max() < 1e-6


def test_repeat_counts_follow_the_design(prepared):
    cfg, prep = prepared
    idx = prep.index
    full = idx[idx.subject.isin([1, 2, 5, 7])]
    assert (full.n_repeats == cfg.sizes.n_repeats).all()
    partial = idx[idx.subject.isin([3, 4, 6, 8])]
    assert partial.n_repeats.min() >= 1 and partial.n_repeats.max() <= cfg.sizes.n_repeats
    assert (partial.n_repeats < cfg.sizes.n_repeats).any()  # partial subjects miss repeats, as in NSD


def test_shared_test_set(world, prepared):
    cfg, prep = prepared
    design = read_expdesign(NSDLayout(cfg.path("nsd_root")))
    tests = {s: set(prep.rows(s, "test").nsd_id) for s in (1, 2, 5, 7)}
    assert all(t == set(design.sharedix) for t in tests.values())
    for s in range(1, 9):
        train = set(prep.rows(s, "train").nsd_id)
        assert not train & set(design.sharedix)
        assert train <= set(design.subjectim[s - 1])
    # training images are each subject's own
    assert not set(prep.rows(1, "train").nsd_id) & set(prep.rows(2, "train").nsd_id)


def test_flatmaps_and_stimuli_are_aligned(prepared):
    cfg, prep = prepared
    fm = prep.flatmaps(1, "train")
    assert fm.shape[1:] == (cfg.prep.flatmap_size, cfg.prep.flatmap_size)
    mask = np.load(prep.root / "flatmap_mask.npy")
    assert np.isfinite(fm).all() and (fm[:, ~mask] == 0).all() and fm[:, mask].std() > 0.1
    ids = prep.rows(1, "train").nsd_id.to_numpy()
    imgs = prep.images(ids)
    assert imgs.shape == (len(ids), cfg.prep.image_size, cfg.prep.image_size, 3) and imgs.dtype == np.uint8
    caps = prep.captions()
    attrs = prep.attributes(ids[:5])
    for i, (_, a) in zip(ids[:5], attrs.iterrows()):
        assert any(a.shape_0 in c and a.colour_0 in c for c in caps[int(i)])
    corpus = np.load(prep.root / "corpus_flatmaps.npy")
    n_corpus = cfg.sizes.n_corpus_subjects * cfg.sizes.corpus_maps_per_subject
    assert corpus.shape == (n_corpus, cfg.prep.flatmap_size, cfg.prep.flatmap_size)
    assert len(pd.read_csv(prep.root / "corpus_index.csv")) == n_corpus


def test_zscore_none_keeps_session_drift(world, tmp_path):
    from neuropictor.data.prep import Prepared, prepare
    import dataclasses

    cfg, root = world
    cfg = dataclasses.replace(cfg, prep=dataclasses.replace(cfg.prep, zscore="none", subjects=(1,), surface=False))
    prepare(cfg, tmp_path)
    raw = Prepared(tmp_path)
    vox = np.load(tmp_path / "subj01" / "voxels.npy")
    # unscaled betas keep percent-signal-change units and their offsets: not z-scored
    assert abs(vox.mean()) > 0.05 or abs(vox.std() - 1) > 0.2
    assert raw.index.subject.unique().tolist() == [1]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["flatmap_size"] is None


def test_repeat_numbers_count_on_across_and_within_sessions():
    from neuropictor.data.prep import repeat_numbers

    counts = np.array([0, 2, 1])  # trials of each image in earlier sessions
    rows = np.array([1, 0, 1, 2, 0, 1])  # this session's trials, in order
    assert repeat_numbers(rows, counts).tolist() == [2, 0, 3, 1, 1, 4]


def test_split_halves_recombine_to_the_averaged_flatmaps(prepared):
    """Half A (even-numbered repeats) and half B (odd) of each shared image weighted by their
    repeats give back the prepared average; the halves are the image's maps, not noise."""
    cfg, prep = prepared
    mask = np.load(prep.root / "flatmap_mask.npy")
    for subj in (1, 3):  # complete (3 repeats each) and partial (some images seen once: left out)
        ids, halves = prep.flatmap_halves(subj)
        test = prep.rows(subj, "test").set_index("nsd_id")
        assert set(ids) == set(test.index[test.n_repeats >= 2]) and halves.shape[1:] == (2, *mask.shape)
        n = test.loc[ids, "n_repeats"].to_numpy()
        n_b = n // 2
        average = np.load(prep.flatmap_file(subj))[test.loc[ids, "row"].to_numpy()]
        rebuilt = ((n - n_b)[:, None, None] * halves[:, 0] + n_b[:, None, None] * halves[:, 1]) / n[:, None, None]
        np.testing.assert_allclose(rebuilt, average, atol=1e-5)
        assert not np.allclose(halves[:, 0], halves[:, 1])  # two different sets of trials


def test_corpus_normalised_like_the_task_maps(prepared):
    """Per vertex across each participant's maps (`prep.corpus_zscore: vertex`): every cortex
    pixel of a participant's corpus flatmaps averages ~0, as a task session's maps do."""
    from neuropictor.data.prep import normalise_corpus

    cfg, prep = prepared
    assert cfg.prep.corpus_zscore == "vertex"
    corpus = np.load(prep.root / "corpus_flatmaps.npy")
    index = pd.read_csv(prep.root / "corpus_index.csv")
    first = corpus[(index.participant_id == index.participant_id.iloc[0]).to_numpy()]
    mask = np.load(prep.root / "flatmap_mask.npy")
    assert np.abs(first.mean(0)[mask]).max() < 0.2 and first[:, mask].std() > 0.3
    values = np.random.default_rng(0).normal(3.0, 2.0, (5, 40))
    assert np.allclose(normalise_corpus(values.copy(), "vertex").mean(0), 0, atol=1e-5)
    assert np.allclose(normalise_corpus(values.copy(), "map").mean(1), 0, atol=1e-5)
    with pytest.raises(ValueError, match="corpus_zscore"):
        normalise_corpus(values, "voxel")
