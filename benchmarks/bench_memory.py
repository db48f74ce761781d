"""Peak memory of the features stage and of NeuroPictor training at 1x and 4x the images.

    python benchmarks/bench_memory.py [--images 2000] [--steps 20]

Issue 13's bar: with features on disk and training batches streamed from it, peak memory
at 4x the images stays within 10 % of 1x. Side by side in one run, each case in a process
of its own (peak resident memory, VmHWM, read at its end), on a prepared tree of N and 4N
stimuli and flatmaps written in the prepared format (one subject; 64 px; random content:
memory does not depend on what the pixels show):

  features        neuropictor.features.compute_features (the stage's code), the shipped VAE
                  and text tower, compute.feature_batch images at a time;
  train           NeuroPictor (shipped UNet, ControlNet copy, fresh encoder) for `--steps`
                  steps on `decoding_data`'s streamed pairs (the training stages' path);
  *_in_memory     the same work done the way the code did it before the features stage:
                  every stimulus decoded to float and encoded at once; every training row's
                  flatmap, latent and caption states gathered into tensors before training.

The in-memory rows show what the bar guards against; the bar is on the streamed ones.
Writes benchmarks/results/memory.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CASE = r"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(2)
from neuropictor.config import load_params
from neuropictor.data.prep import Prepared
from neuropictor.models.foundation import load_foundation
root, case, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cfg = load_params(overrides={"world": "generic", "paths.generic_input": str(root / "none.npz"),
                             "paths.prepared": str(root / "prepared"), "paths.features": str(root / "features"),
                             "paths.checkpoints": str(root / "checkpoints"), "neuropictor.encoder_init": "random"})
prepared = Prepared(cfg.path("prepared"))
found = load_foundation(cfg.path("foundation"))

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024

base = peak_mb()
t = time.perf_counter()
if case == "features":
    from neuropictor.features import compute_features
    compute_features(cfg, prepared, found)
elif case == "features_in_memory":
    from neuropictor.decoding import caption_states, reference_captions
    from neuropictor.models.foundation import image_latents, images_of
    ids = prepared.stimulus_ids()
    with torch.no_grad():
        z = image_latents(found.pipe.vae, images_of(prepared, ids))
        c = caption_states(found.pipe, reference_captions(cfg, prepared, ids))
else:
    from neuropictor.config import Loop
    from neuropictor.decoding import build_neuropictor, decoding_data, train_neuropictor
    from neuropictor.train import TensorBatches
    mask = np.ones((cfg.prep.flatmap_size,) * 2, bool)
    model = build_neuropictor(cfg, found, mask, "refine")
    data = decoding_data(cfg, prepared, ["own"], "train")
    if case == "train_in_memory":
        data = TensorBatches(*data[np.arange(len(data))])
    train_neuropictor(model.train(), data, Loop(steps=steps, batch_size=8, lr=1e-4, mask_steps=0), 0, None,
                      desc=case)
print(json.dumps({"case": case, "seconds": time.perf_counter() - t, "peak_mb": peak_mb(), "base_mb": base}))
"""


def write_tree(root: Path, n: int, side: int = 64, flat: int = 64) -> None:
    """A prepared folder (index.csv, one subject's flatmaps, stimuli, captions) of n images."""
    import numpy as np
    import pandas as pd

    from neuropictor.io import NpyRows

    prepared = root / "prepared"
    (prepared / "own").mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = np.arange(n)
    n_test = max(1, n // 20)
    pd.DataFrame({"subject": "own", "split": ["test"] * n_test + ["train"] * (n - n_test), "row": ids,
                  "nsd_id": ids}).to_csv(prepared / "index.csv", index=False)
    maps = NpyRows(prepared / "own" / "flatmaps.npy", (n, flat, flat), "float32")
    images = NpyRows(prepared / "stimuli.npy", (n, side, side, 3), "uint8")
    for s in range(0, n, 1000):
        k = min(1000, n - s)
        maps.write(s, rng.standard_normal((k, flat, flat), np.float32))
        images.write(s, rng.integers(0, 256, (k, side, side, 3), np.uint8))
    np.save(prepared / "stimuli_ids.npy", ids)
    words = ("red", "green", "blue", "yellow", "purple", "orange")
    shapes = ("circle", "square", "triangle", "star", "cross")
    (prepared / "captions.json").write_text(json.dumps(
        {str(i): [f"a {words[i % 6]} {shapes[i % 5]} on a grey background"] for i in ids}))


def run_case(root: Path, case: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CASE, str(root), case, str(steps)], capture_output=True, text=True,
                         cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin",
                                        "PYTHONPATH": str(ROOT / "src")})
    if out.returncode:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images at 1x (4x = four times as many)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per case")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    args = parser.parse_args(argv)
    t0 = time.time()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 4):
            root = Path(tmp) / f"x{scale}"
            write_tree(root, args.images * scale)
            for case in ("features", "features_in_memory", "train", "train_in_memory"):
                r = run_case(root, case, args.steps)
                rows[f"{case} x{scale}"] = r
                print(f"{case:20s} x{scale} ({args.images * scale} images): peak {r['peak_mb']:7.0f} MB "
                      f"(after loading the models {r['base_mb']:5.0f} MB), {r['seconds']:6.1f} s", flush=True)
    ratios = {case: rows[f"{case} x4"]["peak_mb"] / rows[f"{case} x1"]["peak_mb"]
              for case in ("features", "features_in_memory", "train", "train_in_memory")}
    result = {"images_1x": args.images, "steps": args.steps, "cases": rows,
              "peak_ratio_4x_over_1x": ratios, "target": 1.10,
              "meets_target": ratios["features"] <= 1.10 and ratios["train"] <= 1.10,
              "minutes": round((time.time() - t0) / 60, 1)}
    for case, r in ratios.items():
        print(f"peak 4x / 1x {case:20s} {r:.3f}" + ("" if "memory" in case else "  (bar <= 1.10)"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
