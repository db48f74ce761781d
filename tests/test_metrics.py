"""The MindEye metric suite (neuropictor.metrics) against hand-computed cases and plain
per-image / per-pair reference implementations (np.corrcoef, skimage)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuropictor import metrics
from neuropictor.metrics import (DISTANCE, IDENTIFICATION, MetricNetworks, correlation_distance, evaluate,
                                 pixcorr, ssim, to_tensor, two_way_identification)

SMALL = 32  # input size of the test feature networks (the real ones use 224-342 px)


def smooth_images(n: int, size: int = SMALL, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]: random blobs (upsampled 6x6 noise) plus a little pixel noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * x + 0.2 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def random_cnn(seed: int) -> nn.Module:
    """A fixed, randomly initialised conv net: (n, 3, s, s) -> (n, 8 * 4 * 4) features."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                            nn.AdaptiveAvgPool2d(4), nn.Flatten())
    return net.eval()


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def all_networks(stand_in: bool = True) -> MetricNetworks:
    feats = {m: random_cnn(seed) for seed, m in enumerate(IDENTIFICATION + DISTANCE)}
    feats["CLIP"] = flat  # flattened pixels as a second kind of feature function
    return MetricNetworks(features=feats, stand_in=stand_in, input_size={m: SMALL for m in feats})


@pytest.fixture
def small_pixels(monkeypatch):
    """PixCorr / SSIM at 48 px instead of 425 to keep the tests fast."""
    monkeypatch.setattr(metrics, "PIXEL_SIZE", 48)
    return 48


# ---------------------------------------------------------------- reference implementations

def ref_two_way(gt_feats: np.ndarray, rec_feats: np.ndarray) -> float:
    """Per-pair loop: for reconstruction j, fraction of i != j with r(gt_i, rec_j) < r(gt_j, rec_j)."""
    n = len(gt_feats)
    scores = []
    for j in range(n):
        congruent = np.corrcoef(gt_feats[j], rec_feats[j])[0, 1]
        wins = sum(np.corrcoef(gt_feats[i], rec_feats[j])[0, 1] < congruent for i in range(n) if i != j)
        scores.append(wins / (n - 1))
    return float(np.mean(scores))


def ref_corr_distance(gt_feats: np.ndarray, rec_feats: np.ndarray) -> float:
    return float(np.mean([1 - np.corrcoef(a, b)[0, 1] for a, b in zip(gt_feats, rec_feats)]))


# ---------------------------------------------------------------- identical / random pairings

def test_identical_images_score_perfectly(small_pixels):
    gt = smooth_images(12, seed=1)
    out = evaluate(gt, gt.clone(), all_networks())
    assert out["PixCorr"] == pytest.approx(1.0, abs=1e-9)
    assert out["SSIM"] == pytest.approx(1.0, abs=1e-9)
    for m in IDENTIFICATION:
        assert out[f"{m}†"] == 1.0, m
    for m in DISTANCE:
        assert out[f"{m}†"] == pytest.approx(0.0, abs=1e-6), m


def test_slightly_noisy_reconstructions_are_identified():
    gt = smooth_images(40, seed=2)
    rec = (gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    net = random_cnn(0)
    with torch.no_grad():
        score = two_way_identification(net(gt), net(rec))
    assert score > 0.95


@pytest.mark.parametrize("pairing", ["shuffled", "independent"])
def test_random_pairing_is_at_chance(pairing):
    n = 200
    gt = smooth_images(n, seed=4)
    if pairing == "shuffled":
        rec = gt[torch.randperm(n, generator=torch.Generator().manual_seed(5))]
    else:
        rec = smooth_images(n, seed=6)
    net = random_cnn(1)
    with torch.no_grad():
        fg, fr = net(gt), net(rec)
    for score in (two_way_identification(fg, fr), two_way_identification(flat(gt), flat(rec))):
        assert 0.4 < score < 0.6


# ---------------------------------------------------------------- two-way identification / distance

def test_two_way_identification_hand_computed():
    # Zero-mean +-1 patterns, mutually orthogonal, so Pearson r(u, v) = u.v / (|u| |v|):
    a = np.array([1.0, 1, -1, -1])
    b = np.array([1.0, -1, 1, -1])
    c = np.array([1.0, -1, -1, 1])
    gt = np.stack([a, b, c])
    # rec0 = 5a + 3 (r is invariant to scale and offset), rec1 = b + 2c, rec2 = c + 2a.
    rec = np.stack([5 * a + 3, b + 2 * c, c + 2 * a])
    # R[i, j] = r(gt_i, rec_j); with 1/sqrt(5) = 0.447 and 2/sqrt(5) = 0.894:
    #            rec0   rec1   rec2
    #   gt0=a    1      0      0.894
    #   gt1=b    0      0.447  0
    #   gt2=c    0      0.894  0.447
    # Column j (reconstruction j) counts the other ground truths i with R[i, j] < R[j, j]:
    #   col 0: 0 < 1, 0 < 1           -> 2/2
    #   col 1: 0 < .447, .894 !< .447 -> 1/2
    #   col 2: .894 !< .447, 0 < .447 -> 1/2
    # mean = (1 + 0.5 + 0.5) / 3 = 2/3.  (Counting along rows instead would give 5/6.)
    R = np.corrcoef(gt, rec)[:3, 3:]
    s5 = 1 / np.sqrt(5)
    np.testing.assert_allclose(R, [[1, 0, 2 * s5], [0, s5, 0], [0, 2 * s5, s5]], atol=1e-12)
    score = two_way_identification(torch.tensor(gt), torch.tensor(rec))
    assert score == pytest.approx(2 / 3, abs=1e-12)
    # Correlation distance uses the diagonal: 1 - (1, 1/sqrt5, 1/sqrt5), mean = 2 (1 - 1/sqrt5) / 3.
    dist = correlation_distance(torch.tensor(gt), torch.tensor(rec))
    assert dist == pytest.approx(2 * (1 - s5) / 3, abs=1e-12)
    # anti-correlated reconstructions are at distance 2 (r = -1), not 0
    assert correlation_distance(torch.tensor(gt), -torch.tensor(gt)) == pytest.approx(2.0, abs=1e-12)


def test_two_way_identification_needs_two_images():
    with pytest.raises(ValueError):
        two_way_identification(torch.ones(1, 5), torch.ones(1, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identification_and_distance_match_loop_reference(seed):
    rng = np.random.default_rng(seed)
    n, d = 30, 50
    gt = rng.normal(size=(n, d))
    # partly related reconstructions, so that scores are neither 0.5 nor 1
    rec = 0.4 * gt + rng.normal(size=(n, d)) + rng.normal(size=(n, 1)) * 3
    expected_id = ref_two_way(gt, rec)
    assert 0.6 < expected_id < 0.99  # the case is informative
    # features may come as (n, c, h, w): the functions flatten them
    got_id = two_way_identification(torch.tensor(gt).view(n, 2, 5, 5), torch.tensor(rec).view(n, 2, 5, 5))
    assert got_id == pytest.approx(expected_id, abs=1e-12)
    # also MindEye's own vectorised form
    r = np.corrcoef(gt, rec)[:n, n:]
    mindeye = np.mean(np.sum(r < np.diag(r), 0)) / (n - 1)
    assert got_id == pytest.approx(mindeye, abs=1e-12)
    got_dist = correlation_distance(torch.tensor(gt, dtype=torch.float32), torch.tensor(rec, dtype=torch.float32))
    assert got_dist == pytest.approx(ref_corr_distance(gt, rec), abs=1e-6)


# ---------------------------------------------------------------- pixel metrics

def test_ssim_matches_skimage(small_pixels):
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    gt = smooth_images(7, size=small_pixels, seed=7)
    rec = (0.7 * gt + 0.3 * smooth_images(7, size=small_pixels, seed=8)).clamp(0, 1)
    expected = np.mean([
        structural_similarity(rgb2gray(a.permute(1, 2, 0).numpy().astype(np.float64)),
                              rgb2gray(b.permute(1, 2, 0).numpy().astype(np.float64)),
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
        for a, b in zip(gt, rec)])
    assert 0.2 < expected < 0.95  # an informative case
    assert ssim(gt, rec) == pytest.approx(expected, abs=1e-6)
    assert ssim(gt, rec, batch=3) == pytest.approx(expected, abs=1e-6)  # batches of 3, 3, 1


def test_pixcorr_matches_corrcoef(monkeypatch):
    monkeypatch.setattr(metrics, "PIXEL_SIZE", 24)
    gt = smooth_images(6, size=24, seed=9)
    rec = (0.5 * gt + 0.5 * smooth_images(6, size=24, seed=10)).clamp(0, 1)
    expected = np.mean([np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1] for a, b in zip(gt, rec)])
    assert 0.3 < expected < 0.95
    assert pixcorr(gt, rec) == pytest.approx(expected, abs=1e-6)


def test_pixel_metrics_resize_to_pixel_size(monkeypatch):
    # 24 px images are upsampled bilinearly to PIXEL_SIZE (40) before scoring
    monkeypatch.setattr(metrics, "PIXEL_SIZE", 40)
    gt = smooth_images(3, size=24, seed=11)
    rec = (0.5 * gt + 0.5 * smooth_images(3, size=24, seed=12)).clamp(0, 1)
    up = lambda x: F.interpolate(x, size=(40, 40), mode="bilinear", align_corners=False)  # noqa: E731
    expected = np.mean([np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1] for a, b in zip(up(gt), up(rec))])
    assert pixcorr(gt, rec) == pytest.approx(expected, abs=1e-6)
    assert pixcorr(gt, rec) != pytest.approx(
        np.mean([np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1] for a, b in zip(gt, rec)]), abs=1e-6)


# ---------------------------------------------------------------- evaluate()

def test_evaluate_labels_and_skips(small_pixels):
    gt, rec = smooth_images(5, seed=13), smooth_images(5, seed=14)
    feats = {"AlexNet(2)": random_cnn(0), "EffNet-B": random_cnn(1)}
    sizes = {m: SMALL for m in feats}
    stand_in = evaluate(gt, rec, MetricNetworks(features=feats, stand_in=True, input_size=sizes))
    real = evaluate(gt, rec, MetricNetworks(features=feats, stand_in=False, input_size=sizes))
    assert list(stand_in) == ["PixCorr", "SSIM", "AlexNet(2)†", "EffNet-B†"]
    assert list(real) == ["PixCorr", "SSIM", "AlexNet(2)", "EffNet-B"]
    assert [stand_in[k] for k in stand_in] == [real[k] for k in real]
    # no networks at all: only the pixel metrics, never a dagger
    assert list(evaluate(gt, rec)) == ["PixCorr", "SSIM"]
    assert list(evaluate(gt, rec, MetricNetworks(stand_in=True))) == ["PixCorr", "SSIM"]
    assert MetricNetworks(features=feats, stand_in=True).label("Inception") == "Inception"


def test_evaluate_uses_each_metrics_input_size(small_pixels):
    seen = {}

    def recorder(name):
        def fn(x):
            seen.setdefault(name, set()).add(tuple(x.shape[1:]))
            return x.mean((2, 3))
        return fn

    gt = smooth_images(3, seed=15)
    evaluate(gt, gt, MetricNetworks(features={"Inception": recorder("Inception"), "CLIP": recorder("CLIP"),
                                              "SwAV": recorder("SwAV")}, input_size={"SwAV": 40}))
    # Inception and CLIP at the suite's defaults (342, 224); SwAV at the override (40)
    assert seen == {"Inception": {(3, 342, 342)}, "CLIP": {(3, 224, 224)}, "SwAV": {(3, 40, 40)}}


def test_evaluate_rejects_mismatched_counts(small_pixels):
    with pytest.raises(ValueError, match="3 ground-truth images but 2 reconstructions"):
        evaluate(smooth_images(3), smooth_images(2), all_networks())


def test_to_tensor_rejects_bad_layout():
    with pytest.raises(ValueError):
        to_tensor(np.zeros((2, 8, 8, 3), dtype=np.float32))  # float must be channels-first
    with pytest.raises(ValueError):
        to_tensor(np.zeros((8, 8, 3), dtype=np.uint8))  # no batch axis


def test_evaluate_uint8_hwc_equals_float_chw(small_pixels):
    g = torch.Generator().manual_seed(16)
    gt8 = (smooth_images(8, seed=17) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rec8 = torch.randint(0, 256, gt8.shape, dtype=torch.uint8, generator=g).numpy()
    rec8 = ((gt8.astype(np.int32) + rec8) // 2).astype(np.uint8)  # related, so scores are not trivial
    gtf = torch.from_numpy(gt8).permute(0, 3, 1, 2).float() / 255
    recf = torch.from_numpy(rec8).permute(0, 3, 1, 2).float() / 255
    nets = all_networks()
    a = evaluate(gt8, rec8, nets)
    b = evaluate(gtf, recf, nets)
    c = evaluate(gtf.numpy(), recf.numpy(), nets)  # float numpy too
    assert list(a) == list(b) == list(c)
    assert len(a) == 8
    # the same float32 values in another memory layout take other kernels: 1.3e-9 apart on an
    # AMD EPYC (0 on the Intel machines before); a wrong scale or channel order moves scores by > 1e-2
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6), k
        assert a[k] == pytest.approx(c[k], abs=1e-6), k
    assert a["PixCorr"] < 0.999 and a["SSIM"] < 0.999


def test_metrics_ahead_reads_distances_as_lower_is_better():
    from neuropictor.evaluation import metrics_ahead

    suite = ["PixCorr", "CLIP†", "EffNet-B†", "SwAV"]
    a = {"PixCorr": 0.3, "CLIP†": 0.6, "EffNet-B†": 0.8, "SwAV": 0.5}
    b = {"PixCorr": 0.2, "CLIP†": 0.7, "EffNet-B†": 0.9, "SwAV": 0.4}
    assert metrics_ahead(a, b, suite) == ["PixCorr", "EffNet-B†"]
    assert metrics_ahead(b, a, suite) == ["CLIP†", "SwAV"]
    assert metrics_ahead(a, a, suite) == []  # a tie is not ahead


def test_r2_score_is_one_for_the_truth_and_zero_for_the_mean():
    from neuropictor.methods import r2_score

    target = torch.randn(20, 3, 4, generator=torch.Generator().manual_seed(0))
    assert r2_score(target, target) == pytest.approx(1.0)
    assert r2_score(target.mean(0, keepdim=True).expand_as(target), target) == pytest.approx(0.0, abs=1e-12)
    assert r2_score(target + 10, target) < 0  # worse than the mean
