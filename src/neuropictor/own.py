"""Your own scans, end to end: prep -> every voxel-based method -> reconstructions -> a
metrics table and a figure.

    python -m neuropictor.own path/to/scans.npz [--out results/own] [--params params.yaml]

The file is the `world: generic` format (see `neuropictor.data.generic` or the README's
"Your own data"): `images` and `fmri` are required; `captions` turn the text branches on
(stage 2: img2img through the shipped foundation pipeline); `roi` (one label per voxel:
V1, V2, V3, hV4, or a higher area's name) enables the CS292F graph decoder. Images are
stored at `prep.image_size` (64 px, the shipped models' size); greyscale is made RGB.

Every method fits on the file's training images and reconstructs its test images; the
table scores them with PixCorr, SSIM and two-way identification on pixels and on the
shipped stand-in networks' features (dagger). Identification is 50 % at chance.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from .config import load_params
from .io import save_json
from .metrics import evaluate, two_way_identification

# (row name, method module, options for its fit_decode)
ROWS = (("Takagi & Nishimoto (ridge)", "takagi", {}),
        ("Brain-Diffuser-style (ridge -> hVAE)", "brain_diffuser", {}),
        ("CS292F CNN", "cs292f", {"kinds": ("cnn",)}),
        ("CS292F VAE", "cs292f", {"kinds": ("vae",)}),
        ("CS292F GCN", "cs292f", {"kinds": ("gcn",)}),
        ("Two-stage GRU", "gru", {}))


def own_settings(input_file: str | Path, out: str | Path, params: str | Path | None = None, overrides=None):
    """Settings for `input_file` with every output under `out`."""
    out = Path(out).absolute()
    return load_params(params, {"world": "generic", "paths.generic_input": str(Path(input_file).absolute()),
                                "paths.prepared": str(out / "prepared"), "paths.features": str(out / "features"),
                                "paths.reconstructions": str(out / "reconstructions"),
                                **(overrides or {})})


def scores(gt: torch.Tensor, rec: torch.Tensor, networks) -> dict[str, float]:
    """PixCorr, SSIM, pixel identification and the stand-in networks' identification scores."""
    out = evaluate(gt, rec, networks)
    keep = {k: v for k, v in out.items() if k in ("PixCorr", "SSIM") or not k.startswith(("EffNet", "SwAV"))}
    keep["Pixels (2-way accuracy)"] = two_way_identification(gt, rec)
    return keep


def run(input_file: str | Path, out: str | Path, params: str | Path | None = None, overrides=None,
        rows=ROWS, figure: bool = True) -> pd.DataFrame:
    """The whole path on one file -> the metrics table (also written to `out`)."""
    import importlib

    from .data.generic import SUBJECT, prepare_generic
    from .data.prep import Prepared
    from .features import compute_features
    from .methods import draw, load_hvae_of, save_reconstructions, subject_data
    from .models.foundation import load_foundation
    from .report import write_table

    t0 = time.time()
    out = Path(out)
    cfg = own_settings(input_file, out, params, overrides)
    summary = prepare_generic(cfg)
    print(f"prepared {input_file}: {summary['n_train'][SUBJECT]} training and {summary['n_test'][SUBJECT]} test "
          f"images, {summary['n_voxels'][SUBJECT]} voxels")
    prepared = Prepared(cfg.path("prepared"))
    found = load_foundation(cfg.path("foundation"))  # the shipped models, at 64 px
    networks = found.metric_networks()
    compute_features(cfg, prepared, found)  # the stimuli's latents (and caption states) on disk
    data = subject_data(cfg, prepared, SUBJECT, hvae=load_hvae_of(cfg))
    if not data.text:
        print("No captions in the file: the text branches are off, and each method's result is its stage 1 "
              "(decoded latent through the shipped VAE, or the hierarchical VAE's coarse image).")
    table, shown = [], {}
    for name, module_name, options in rows:
        if module_name == "cs292f" and "gcn" in options.get("kinds", ()) and data.info is None:
            print(f"{name}: skipped, the file has no `roi` key (one label per voxel) to build the ROI graph from.")
            continue
        module = importlib.import_module(f".methods.{module_name}", __package__)
        t = time.time()
        decoded = module.fit_decode(cfg, data, cfg.seed, **options)
        strength = getattr(cfg.methods, module_name).strength
        images = draw(found, decoded, cfg, strength)
        key = name.lower().replace(" & ", "_").replace(" ", "_").replace("(", "").replace(")", "").replace("->", "to")
        save_reconstructions(cfg, key, SUBJECT, data.ids_test, images, decoded.c)
        table.append({"method": name, **scores(data.images_test, images, networks)})
        shown[name] = images
        print(f"{name}: {time.time() - t:.0f} s")
    table = pd.DataFrame(table).set_index("method")
    write_table(table, out / "table", f"Your scans ({Path(input_file).name}): {len(data.ids_test)} test images. "
                "Identification: 50 % is chance. † = the shipped stand-in networks.")
    print((out / "table.md").read_text())
    if figure:
        from .methods import comparison_figure
        from .report import save_figure

        fig = comparison_figure(data.images_test, shown, 8, "Your scans: test images and reconstructions")
        save_figure(fig, out / "reconstructions.png")
    save_json(out / "metrics.json", {"input": str(input_file), "text": data.text, "rows": table.to_dict(orient="index"),
                                     "minutes": round((time.time() - t0) / 60, 2)})
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="your .npz / .h5 / .mat file")
    parser.add_argument("--out", default="results/own", help="output folder (default results/own)")
    parser.add_argument("--params", default=None, help="params file (default the project's params.yaml)")
    args = parser.parse_args(argv)
    from .config import ParamsError
    from .io import DataError

    try:
        run(args.input, args.out, args.params)
    except (DataError, ParamsError) as err:  # a bad file or param: its message names the key and the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
