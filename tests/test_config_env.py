"""Settings, pinned environment and offline switches."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

from neuropictor.config import PROJ_ROOT, Settings, load_params

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_pyproject_and_environment_yml_agree():
    pyproject = tomllib.loads((PROJ_ROOT / "pyproject.toml").read_text())
    proj = pyproject["project"]
    declared = _pins(proj["dependencies"] + proj["optional-dependencies"]["dev"])
    env = yaml.safe_load((PROJ_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = _pins(pip_section)
    assert declared == conda_pins
    assert len(declared) == len(proj["dependencies"]) + len(proj["optional-dependencies"]["dev"])  # all pinned exactly


def test_torch_pair_is_constrained():
    pins = _pins((PROJ_ROOT / "constraints.txt").read_text().splitlines())
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}
    import torch
    import torchvision

    assert torch.__version__.split("+")[0] == "2.14.1"
    assert torchvision.__version__.split("+")[0] == "0.29.1"


def test_offline_switches():
    import os

    import neuropictor  # noqa: F401  (sets the switches on import)

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    cfg = configparser.ConfigParser()
    cfg.read(PROJ_ROOT / ".dvc" / "config")
    assert cfg["core"]["analytics"] == "false" and cfg["core"]["check_update"] == "false"


def test_default_params_are_the_dataclass_defaults_and_world_sizes():
    cfg = load_params()
    assert cfg == Settings()  # params.yaml documents exactly the defaults in config.py
    assert cfg.sizes == cfg.synthetic.default
    smoke = load_params(overrides={"smoke": True})
    assert smoke.sizes == cfg.synthetic.smoke and smoke.sizes.n_shared < cfg.sizes.n_shared


def test_paper_params_file_is_valid():
    cfg = load_params(PROJ_ROOT / "params.paper.yaml")
    assert cfg.world == "nsd" and cfg.prep.flatmap_size == 256
    assert cfg.prep.subjects == (1, 2, 3, 4, 5, 6, 7, 8)


def test_partial_sections_keep_their_defaults():
    cfg = load_params(overrides={"synthetic.smoke": {"n_shared": 10}})
    assert cfg.synthetic.smoke.n_shared == 10
    assert cfg.synthetic.smoke.trials_per_session == Settings().synthetic.smoke.trials_per_session


def test_sizes_that_cannot_fit_are_rejected():
    from neuropictor.config import ParamsError

    with pytest.raises(ParamsError, match="do not fit"):
        load_params(overrides={"synthetic.smoke.n_unique_per_subject": 1000})


def test_ci_calls_the_readme_test_command():
    readme = (PROJ_ROOT / "README.md").read_text()
    assert "make test" in readme and "make repro" in readme
    assert "make test" in (PROJ_ROOT / ".ci" / "run").read_text()
