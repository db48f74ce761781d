"""The one training loop: resume after a kill, and N processes = 1 process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neuropictor.io import OUTPUT_MARKER
from neuropictor.train import TrainConfig, batch_indices, fit, param_groups

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from train_neuropictor_ddp import make as make_neuropictor  # noqa: E402
from train_probe import loss_fn, make  # noqa: E402

CFG = TrainConfig(steps=60, batch_size=16, lr=3e-2, warmup=5, ckpt_every=10, log_every=10)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_goes_down_and_batches_are_stateless():
    model, data = make()
    history = fit(model, loss_fn, data, CFG)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert torch.equal(batch_indices(256, 7, 16, 0), batch_indices(256, 7, 16, 0))
    assert not torch.equal(batch_indices(256, 7, 16, 0), batch_indices(256, 8, 16, 0))


def test_lr_scales_give_a_named_part_its_own_learning_rate():
    """lr_scales {"2.": 10}: the last layer's weights move at 10x the lr, the first layer's
    at the base lr (one step from the same start: Adam's first step is lr x sign(grad))."""
    import dataclasses

    model, _ = make()
    groups = param_groups(model, dataclasses.replace(CFG, lr_scales={"2.": 10}))
    assert [len(g["params"]) for g in groups] == [2, 2] and groups[1]["lr"] == 10 * CFG.lr
    assert [len(g["params"]) for g in param_groups(model, CFG)] == [4]  # no scales: one group
    moved = {}
    for scales in ({}, {"2.": 10}):
        model, data = make()
        start = _weights(model)
        fit(model, loss_fn, data, dataclasses.replace(CFG, steps=1, warmup=0, lr_scales=scales, grad_clip=0))
        moved[len(scales)] = {k: float((v - start[k]).abs().max()) for k, v in _weights(model).items()}
    assert moved[1]["0.weight"] == pytest.approx(moved[0]["0.weight"], rel=1e-5)
    assert moved[1]["2.weight"] == pytest.approx(10 * moved[0]["2.weight"], rel=1e-3)
    with pytest.raises(ValueError, match="'hlgn.'.*no trainable parameter"):
        param_groups(model, dataclasses.replace(CFG, lr_scales={"hlgn.": 10}))


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    model, data = make()
    fit(model, loss_fn, data, CFG, out_dir=tmp_path / "straight")
    straight = _weights(model)

    model, data = make()
    fit(model, loss_fn, data, CFG, out_dir=tmp_path / "killed", stop_after=17)  # dies at step 17
    ckpt = tmp_path / "killed" / "checkpoint"
    assert (ckpt / "model.safetensors").exists() and not list(ckpt.parent.glob(".*partial"))
    model, data = make()  # a fresh process: new model, state comes from the checkpoint (step 10)
    killed_seconds = [h["seconds"] for h in fit(model, loss_fn, data, CFG, out_dir=tmp_path / "killed")]
    resumed = _weights(model)
    # the logged wall time runs on across the resume: one clock for the whole run
    assert killed_seconds == sorted(killed_seconds) and killed_seconds[0] > 0
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=1e-6)
    # and the checkpoint holds only tensors + JSON (no pickle)
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "optimizer.safetensors", "state.json",
                                                OUTPUT_MARKER}


def _one_and_two_processes(script: str, tmp_path: Path) -> tuple[dict, dict]:
    """Run tests/scripts/`script` in one process and under `accelerate launch` in two (CPU,
    gloo); returns both runs' saved weights, after checking the second really ran two."""
    from safetensors import safe_open

    script = Path(__file__).parent / "scripts" / script
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.safetensors")], check=True, env=env)
    # --multi_gpu on a machine without GPUs runs MULTI_CPU; `--cpu --num_processes 2` runs one
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    str(script), str(tmp_path / "two.safetensors")], check=True, env=env, timeout=300)
    for name, expected in (("one", "1"), ("two", "2")):
        with safe_open(tmp_path / f"{name}.safetensors", "pt") as f:
            assert f.metadata()["processes"] == expected
    return load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    one, two = _one_and_two_processes("train_probe.py", tmp_path)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in one.values())


@pytest.mark.slow
def test_two_processes_match_one_on_neuropictor(tmp_path):
    """Issue 13: DDP on NeuroPictor itself (fMRI encoder, HLGN, ControlNet copy, frozen UNet,
    L_dif + L_sem, random noise / timesteps / caption drops) ends with the 1-process weights:
    a sample's draws do not depend on the process that holds it (`train.BatchDraws`), and
    the MAE decoder, unused downstream, is frozen so DDP waits for no gradient from it."""
    one, two = _one_and_two_processes("train_neuropictor_ddp.py", tmp_path)
    start = make_neuropictor()[0].trainable_state_dict()
    moved = [k for k in one if not torch.equal(one[k], start[k])]
    assert any(k.startswith("encoder.") for k in moved) and any(k.startswith("hlgn.") for k in moved)
    assert any(k.startswith("llmn.") for k in moved)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_stage_killed_under_dvc_repro_resumes_to_the_same_weights(tmp_path):
    """`dvc repro` deletes a stage's outputs before running it, so a checkpoint kept there
    could never be resumed; kept outside (paths.checkpoints), a stage killed midway (SIGKILL)
    resumes on the next `dvc repro` and ends with the weights of an uninterrupted run."""
    import json
    import shutil
    import signal
    import time

    scripts = Path(__file__).parent / "scripts"
    env = {**os.environ, "PYTHONPATH": f"{scripts}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}

    def project(name):
        root = tmp_path / name
        root.mkdir()
        shutil.copy(scripts / "train_stage.py", root / "train_stage.py")
        (root / "dvc.yaml").write_text(f"stages:\n  train:\n    cmd: {sys.executable} train_stage.py\n"
                                       "    deps: [train_stage.py]\n    outs: [out]\n")
        subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True, env=env)
        return root

    def repro(root):
        return subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300)

    straight = project("straight")
    assert repro(straight).returncode == 0
    killed = project("killed")
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-q"], cwd=killed, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "checkpoints" / "probe" / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["step"] >= 20):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    step = json.loads(state.read_text())["step"]
    assert 20 <= step < 60 and not (killed / "out" / "model.safetensors").exists()
    second = repro(killed)
    assert second.returncode == 0, second.stderr
    a = load_file(straight / "out" / "model.safetensors")
    b = load_file(killed / "out" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    # and it did resume: the run's own checkpoint history starts where the kill left it
    assert json.loads(state.read_text())["step"] == 60
