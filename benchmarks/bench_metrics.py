"""Metric-suite throughput: neuropictor.metrics.evaluate against a plain per-image loop.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py [--n 100] [--size 64] [--pixel-size 425]
                                                               [--threads 1]

Both sides score the same n random 64 x 64 ground-truth / reconstruction pairs, side by side in
one process, with the same small randomly initialised CNNs standing in for the six feature
networks (at the suite's real input sizes, 224-342 px), and PixCorr / SSIM at 425 px:
  loop:     per image: bilinear resize, np.corrcoef PixCorr, skimage structural_similarity on
            rgb2gray; each feature network called one image at a time; two-way identification
            as a per-pair loop of np.corrcoef; correlation distance per image;
  evaluate: neuropictor.metrics.evaluate (batched, vectorised).
Prints each metric from both sides, the largest absolute difference, both throughputs (images
per second, one image = one gt/rec pair), the speed ratio, and where each side spends its time
(PixCorr, SSIM, feature extraction, scoring the features). The default run takes well under a
minute. Torch runs single-threaded by default (--threads): on a machine shared with other CPU
jobs, multi-threaded torch made the loop's many tiny per-image network calls tens of times
slower (threads waiting on a busy core), which would flatter evaluate.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from neuropictor import metrics  # noqa: E402
from neuropictor.metrics import DISTANCE, IDENTIFICATION, INPUT_SIZE, MetricNetworks  # noqa: E402


def random_cnn(seed: int) -> nn.Module:
    """A small fixed random conv net: (n, 3, s, s) -> (n, 16 * 4 * 4)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                            nn.AdaptiveAvgPool2d(4), nn.Flatten())
    return net.eval()


def images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * low + 0.2 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """One (3, H, W) image, bilinearly resized as the suite does."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    return F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]


def loop_metrics(gt: torch.Tensor, rec: torch.Tensor, features: dict, pixel_size: int,
                 times: dict[str, float]) -> dict[str, float]:
    """The same metrics, the straightforward way: one image (or one pair) at a time."""
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    n = len(gt)
    out = {}
    pix, ssims = [], []
    for a, b in zip(gt, rec):
        t = time.perf_counter()
        a, b = resize(a, pixel_size).double(), resize(b, pixel_size).double()
        pix.append(np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1])
        times["PixCorr"] += time.perf_counter() - t
        t = time.perf_counter()
        ssims.append(structural_similarity(rgb2gray(a.permute(1, 2, 0).numpy()), rgb2gray(b.permute(1, 2, 0).numpy()),
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=1.0))
        times["SSIM"] += time.perf_counter() - t
    out["PixCorr"], out["SSIM"] = float(np.mean(pix)), float(np.mean(ssims))
    for metric in IDENTIFICATION + DISTANCE:
        net, size = features[metric], INPUT_SIZE[metric]
        t = time.perf_counter()
        with torch.no_grad():
            fg = [net(resize(x, size)[None])[0].double().numpy() for x in gt]
            fr = [net(resize(x, size)[None])[0].double().numpy() for x in rec]
        times["features"] += time.perf_counter() - t
        t = time.perf_counter()
        if metric in IDENTIFICATION:
            scores = []
            for j in range(n):
                congruent = np.corrcoef(fg[j], fr[j])[0, 1]
                wins = sum(np.corrcoef(fg[i], fr[j])[0, 1] < congruent for i in range(n) if i != j)
                scores.append(wins / (n - 1))
            out[metric] = float(np.mean(scores))
        else:
            out[metric] = float(np.mean([1 - np.corrcoef(a, b)[0, 1] for a, b in zip(fg, fr)]))
        times["scoring"] += time.perf_counter() - t
    return out


def timed(fn, times: dict[str, float], part: str):
    """`fn`, adding its run time to times[part] (to see where evaluate spends its time)."""
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[part] += time.perf_counter() - t
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="image pairs")
    ap.add_argument("--size", type=int, default=64, help="side of the random images")
    ap.add_argument("--pixel-size", type=int, default=metrics.PIXEL_SIZE, help="PixCorr / SSIM size (suite: 425)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    metrics.PIXEL_SIZE = args.pixel_size
    gt = images(args.n, args.size, seed=0)
    rec = (0.25 * gt + 0.75 * images(args.n, args.size, seed=1)).clamp(0, 1)  # identification well below 100%
    features = {m: random_cnn(seed) for seed, m in enumerate(IDENTIFICATION + DISTANCE)}
    networks = MetricNetworks(features=features, stand_in=False)  # no dagger: same keys as the loop

    print(f"{args.n} pairs of {args.size}x{args.size} images; PixCorr/SSIM at {args.pixel_size} px; "
          f"feature inputs {', '.join(f'{m} {INPUT_SIZE[m]}' for m in features)}; torch threads {torch.get_num_threads()}")
    parts = ("PixCorr", "SSIM", "features", "scoring")
    metrics.evaluate(gt[:4], rec[:4], networks)  # warm-up (allocator, kernels, imports)
    loop_metrics(gt[:4], rec[:4], features, args.pixel_size, dict.fromkeys(parts, 0.0))

    fast_times, slow_times = dict.fromkeys(parts, 0.0), dict.fromkeys(parts, 0.0)
    # evaluate looks these up in its module at call time, so timed wrappers see every call
    for name, part in (("_pixcorr_rows", "PixCorr"), ("_ssim_rows", "SSIM"), ("_features", "features"),
                       ("two_way_identification", "scoring"), ("correlation_distance", "scoring")):
        setattr(metrics, name, timed(getattr(metrics, name), fast_times, part))
    t = time.perf_counter()
    fast = metrics.evaluate(gt, rec, networks)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = loop_metrics(gt, rec, features, args.pixel_size, slow_times)
    t_slow = time.perf_counter() - t

    print(f"{'metric':<12}{'evaluate':>14}{'loop':>14}{'abs diff':>12}")
    diffs = []
    for k in slow:
        diffs.append(abs(fast[k] - slow[k]))
        print(f"{k:<12}{fast[k]:>14.8f}{slow[k]:>14.8f}{diffs[-1]:>12.2e}")
    print(f"max abs difference: {max(diffs):.2e}")
    print(f"loop:     {t_slow:7.2f} s  {args.n / t_slow:8.1f} images/s")
    print(f"evaluate: {t_fast:7.2f} s  {args.n / t_fast:8.1f} images/s")
    print(f"speed ratio (loop time / evaluate time): {t_slow / t_fast:.1f}x")
    print(f"{'seconds in':<16}{'evaluate':>10}{'loop':>10}")
    for part in parts:
        print(f"{part:<16}{fast_times[part]:>10.2f}{slow_times[part]:>10.2f}")


if __name__ == "__main__":
    main()
