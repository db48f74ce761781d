"""Shared fixtures: one tiny synthetic world + its prepared arrays per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("OMP_NUM_THREADS", "2")

from neuropictor.config import PROJ_ROOT, load_params  # noqa: E402


def smoke_overrides(root: Path) -> dict:
    """Params overrides that point every output path into `root` and select the smoke sizes.
    `paths.foundation` stays: the smoke world uses the shipped foundation, as `make repro` does."""
    return {
        "smoke": True,
        "paths.synthetic_root": str(root / "synthetic"),
        "paths.nsd_root": str(root / "synthetic" / "nsd"),
        "paths.corpus_root": str(root / "synthetic" / "corpus"),
        "paths.prepared": str(root / "prepared"),
        "paths.encoder": str(root / "encoder"),
        "paths.models": str(root / "models"),
        "paths.checkpoints": str(root / "checkpoints"),
        "paths.features": str(root / "features"),
        "paths.reconstructions": str(root / "reconstructions"),
        "paths.tables": str(root / "tables"),
        "paths.figures": str(root / "figures"),
        "paths.metrics": str(root / "metrics"),
        "paths.reports": str(root / "reports"),
        "ablations.models": str(root / "ablations" / "models"),
        "ablations.tables": str(root / "ablations" / "tables"),
    }


def write_params(root: Path, **extra) -> Path:
    """A params file for notebooks: the project's params.yaml with smoke paths in `root`."""
    tree = yaml.safe_load((PROJ_ROOT / "params.yaml").read_text())
    for key, value in {**smoke_overrides(root), **extra}.items():
        node = tree
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A smoke-size synthetic world written in NSD layout: (settings, root)."""
    from neuropictor.data.synthetic import write_world

    root = tmp_path_factory.mktemp("world")
    cfg = load_params(overrides=smoke_overrides(root))
    write_world(cfg, n_workers=1)
    return cfg, root


@pytest.fixture(scope="session")
def prepared(world):
    """The smoke world after data prep: (settings, Prepared)."""
    from neuropictor.data.prep import Prepared, prepare

    cfg, root = world
    prepare(cfg)
    return cfg, Prepared(cfg.path("prepared"))
