"""Data prep against merely reading + decompressing the same files; prep's peak memory.

    python benchmarks/bench_prep.py [--world smoke|default] [--subjects 1 2]

Both sides run in one process each, single-worker, on a warm page cache, side by side:
  read:  nibabel-load every volume session, both .mgh hemispheres, the ROI, the design,
         the stimuli and captions and the corpus maps, touching every value (decompression);
  prep:  neuropictor.data.prep.prepare on the same files (everything it writes included).
Targets: time ratio prep / read <= 1.5; prep's peak memory above the interpreter's baseline
bounded by a small multiple of one session of one subject (not the whole dataset).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

READ = r"""
import json, sys, time, resource
from pathlib import Path
import h5py, nibabel as nib, numpy as np, scipy.io
from neuropictor.data.nsd import NSDLayout
nsd, corpus, subjects = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
layout = NSDLayout(nsd)
t = time.perf_counter()
total = 0.0
scipy.io.loadmat(layout.expdesign)
for s in subjects:
    total += float(np.asanyarray(nib.load(str(layout.roi(s, "nsdgeneral"))).dataobj).sum())
    for k in layout.sessions(s):
        total += float(np.asanyarray(nib.load(str(layout.volume_betas(s, k))).dataobj).sum(dtype=np.int64))
        for h in ("left", "right"):
            total += float(np.asanyarray(nib.load(str(layout.surface_betas(s, k, h))).dataobj).sum())
with h5py.File(layout.stimuli) as f:
    total += float(f["imgBrick"][()].sum())
for p in layout.root.glob("annotations/*.json"):
    total += len(json.loads(p.read_text())["annotations"])
for p in sorted(corpus.glob("sub-*/*.rest.mgh")):
    total += float(np.asanyarray(nib.load(str(p)).dataobj).sum())
print(json.dumps({"seconds": time.perf_counter() - t, "checksum": total,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

PREP = r"""
import json, sys, time, resource, dataclasses
from neuropictor.config import load_params
from neuropictor.data.prep import prepare
overrides, subjects = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cfg = load_params(overrides=overrides)
cfg = dataclasses.replace(cfg, prep=dataclasses.replace(cfg.prep, subjects=tuple(subjects), n_workers=1))
import neuropictor.data.flatmap, neuropictor.data.nsd, nilearn.datasets  # module imports: interpreter
# start-up, paid once per process whatever the data size, so outside the timing and the baseline
base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
prepare(cfg)
print(json.dumps({"seconds": time.perf_counter() - t, "base_kb": base_kb,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def session_bytes(nsd: Path, subj: int) -> int:
    """In-memory size of one session of one subject: the int16 volume + both float32 hemispheres."""
    import nibabel as nib
    import numpy as np

    from neuropictor.data.nsd import NSDLayout

    layout = NSDLayout(nsd)
    vol = nib.load(str(layout.volume_betas(subj, 1)))
    n = int(np.prod(vol.shape)) * 2
    for h in ("left", "right"):
        n += int(np.prod(nib.load(str(layout.surface_betas(subj, 1, h))).shape)) * 4
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=["smoke", "default"], default="default",
                        help="default: reuse data/synthetic from `make repro` if present, else simulate")
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from neuropictor.config import load_params
    from neuropictor.data.synthetic import write_world

    tmp = Path(tempfile.mkdtemp(prefix="bench_prep_"))
    existing = ROOT / "data" / "synthetic"
    if args.world == "default" and (existing / "summary.json").exists() and \
            not json.loads((existing / "summary.json").read_text())["smoke"]:
        syn = existing
    else:
        syn = tmp / "synthetic"
        print(f"simulating a {args.world} world in {syn} ...", flush=True)
        write_world(load_params(overrides={"smoke": args.world == "smoke", "paths.synthetic_root": str(syn)}))
    overrides = {"smoke": args.world == "smoke", "paths.synthetic_root": str(syn),
                 "paths.nsd_root": str(syn / "nsd"), "paths.corpus_root": str(syn / "corpus"),
                 "paths.prepared": str(tmp / "prepared")}
    subjects = json.dumps(args.subjects)
    _run(READ, str(syn / "nsd"), str(syn / "corpus"), subjects)  # warm the page cache
    reads, preps = [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both sides
        reads.append(_run(READ, str(syn / "nsd"), str(syn / "corpus"), subjects))
        preps.append(_run(PREP, json.dumps(overrides), subjects))
    read_s = min(r["seconds"] for r in reads)
    prep_s = min(p["seconds"] for p in preps)
    sess = session_bytes(syn / "nsd", args.subjects[0])
    extra = max(p["peak_kb"] - p["base_kb"] for p in preps) * 1024
    one = _run(PREP, json.dumps(overrides), json.dumps(args.subjects[:1]))
    extra_one = (one["peak_kb"] - one["base_kb"]) * 1024
    data_bytes = sum(f.stat().st_size for s in args.subjects
                     for f in (syn / "nsd" / "nsddata_betas" / "ppdata" / f"subj{s:02d}").rglob("*betas_session*"))
    print(f"world: {syn}  subjects: {args.subjects}  (best of {args.repeats})")
    print(f"read + decompress : {read_s:7.2f} s")
    print(f"data prep         : {prep_s:7.2f} s")
    print(f"ratio prep / read : {prep_s / read_s:7.2f}   (target <= 1.5)")
    print(f"prep peak memory above baseline : {extra / 1e6:8.1f} MB  ({len(args.subjects)} subjects; "
          f"{extra_one / 1e6:.1f} MB with 1 subject)")
    print(f"one session of one subject      : {sess / 1e6:8.1f} MB   ratio {extra / sess:.2f}")
    print(f"beta files of these subjects    : {data_bytes / 1e6:8.1f} MB on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
