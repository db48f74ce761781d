"""NeuralDiffuser's feature-guided sampling against unguided sampling, side by side.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_guidance.py [--n 100] [--rounds 3]
        [--steps 25] [--strength 0.75] [--eta 0.2] [--kappa 300] [--threads 2]

Both sides run in one process on the shipped synthetic foundation (foundation/weights: its
UNet, VAE and CLIP image tower, at the sizes the pipeline uses): `sample.img2img` from the
VAE latents of --n fresh stimuli of the world's generator, conditioned on their caption
states with CFG 5, the same seed; the guided side adds `Guide` with NeuralDiffuser's loss
over the tower's six blocks (targets: another set of stimuli's features; the cost does not
depend on their values) on the first --eta of the steps run. Rounds alternate unguided /
guided; the median time per image of each side is reported with their ratio.
Target: guided / unguided <= 2 at the paper's eta = 0.2.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--eta", type=float, default=0.2)
    ap.add_argument("--kappa", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guidance.json")
    args = ap.parse_args()

    import numpy as np
    import torch

    from neuropictor.data.stimuli import make_stimuli
    from neuropictor.decoding import caption_states
    from neuropictor.methods import neuraldiffuser as nd
    from neuropictor.models.foundation import image_latents, load_foundation
    from neuropictor.sample import Guide, img2img

    torch.set_num_threads(args.threads)
    found = load_foundation(ROOT / "foundation" / "weights")
    pipe, tower = found.pipe, found.clip.vision_model
    rng = np.random.default_rng(0)
    images, captions, _ = make_stimuli(2 * args.n, pipe.vae.config.sample_size, rng)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        z = image_latents(pipe.vae, x[:args.n])
        c = caption_states(pipe, [caps[0] for caps in captions[:args.n]])
    layers, weights = (1, 2, 3, 4, 5, 6), (1.5, 1.2, 1.0, 1.0, 1.0, 1.0)
    g = nd.image_features(tower, x[args.n:], layers)
    guide = Guide(nd.feature_loss(pipe.vae, tower, g, layers, weights), scale=args.kappa, share=args.eta)
    kw = dict(strength=args.strength, steps=args.steps, guidance=5.0, seed=0)

    img2img(pipe, z[:4], c[:4], **kw), img2img(pipe, z[:4], c[:4], guide=guide, **kw)  # warm-up
    times = {"unguided": [], "guided": []}
    for r in range(args.rounds):
        for name, gd in (("unguided", None), ("guided", guide)):
            t = time.perf_counter()
            img2img(pipe, z, c, guide=gd, **kw)
            times[name].append((time.perf_counter() - t) / args.n)
        print(f"round {r + 1}: unguided {times['unguided'][-1] * 1e3:.1f} ms / image, "
              f"guided {times['guided'][-1] * 1e3:.1f} ms / image", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["guided"] / med["unguided"]
    run = int(args.steps * args.strength)
    result = {"n": args.n, "steps_run": run, "guided_steps": guide.steps(run), "eta": args.eta,
              "threads": args.threads, "seconds_per_image": med, "ratio": ratio, "target": 2.0,
              "meets_target": ratio <= 2.0, "rounds": times}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{run} steps run, {guide.steps(run)} guided: unguided {med['unguided'] * 1e3:.1f} ms / image, "
          f"guided {med['guided'] * 1e3:.1f} ms / image, ratio {ratio:.2f} (target <= 2) -> {args.out}")


if __name__ == "__main__":
    main()
