"""Issue 13's compute settings and on-disk features: params `compute:`, gradient
accumulation and checkpointing on NeuroPictor, the features stage's store, streamed
training batches, chunked stimulus prep."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neuropictor import compute
from neuropictor.config import Compute, ParamsError, load_params
from neuropictor.io import DataError
from neuropictor.models.neuropictor import neuropictor_loss
from neuropictor.train import TensorBatches, TrainConfig, fit

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from train_neuropictor_ddp import make as make_neuropictor  # noqa: E402


# --------------------------------------------------------------------------- params
@pytest.mark.parametrize("key, value, words", [
    ("compute.device", "gpu", "compute.device"),
    ("compute.precision", "fp8", "compute.precision"),
    ("compute.feature_dtype", "int8", "compute.feature_dtype"),
    ("compute.grad_accumulation", 0, "compute.grad_accumulation"),
    ("compute.grad_accumulation", 5, "must divide by compute.processes x compute.grad_accumulation"),
    ("compute.workers", -1, "compute.workers"),
])
def test_bad_compute_params_name_the_key(key, value, words):
    with pytest.raises(ParamsError, match=words.replace(".", r"\.")):
        load_params(overrides={key: value})


def test_fp16_on_cpu_and_cuda_without_a_gpu_are_refused():
    with pytest.raises(ParamsError, match="fp16 needs a GPU"):
        load_params(overrides={"compute.device": "cpu", "compute.precision": "fp16"})
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ParamsError, match="no GPU"):
        compute.device_of(Compute(device="cuda"))
    with pytest.raises(ParamsError, match="fp16"):
        compute.device_of(Compute(device="auto", precision="fp16"))
    assert compute.device_of(Compute(device="auto")).type == "cpu"
    assert compute.train_settings(Compute(precision="bf16", grad_accumulation=2, workers=1)) == {
        "device": "auto", "mixed_precision": "bf16", "grad_accumulation": 2, "workers": 1}


# --------------------------------------------------------------------------- training
def _train(accumulation: int = 1, workers: int = 0, steps: int = 3):
    model, data = make_neuropictor()
    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-3, warmup=1, log_every=1, grad_accumulation=accumulation,
                      workers=workers)
    history = fit(model, neuropictor_loss, data, cfg)
    return model.trainable_state_dict(), history


@pytest.mark.slow
def test_gradient_accumulation_follows_the_one_pass_trajectory_on_neuropictor():
    """2 and 4 micro-batches of the same global batch (each micro-batch keeping the noise,
    timesteps and caption drops its rows get in one pass) end at the one-pass weights; the
    logged loss is the global batch's."""
    one, h1 = _train(1)
    start = make_neuropictor()[0].trainable_state_dict()
    assert any(not torch.equal(one[k], start[k]) for k in one)
    for micro in (2, 4):
        acc, h = _train(micro)
        for k in one:
            torch.testing.assert_close(acc[k], one[k], rtol=1e-4, atol=1e-5)
        assert h[-1]["loss"] == pytest.approx(h1[-1]["loss"], rel=1e-4)


@pytest.mark.slow
def test_dataloader_workers_feed_the_same_batches():
    one, _ = _train(1, workers=0)
    two, _ = _train(1, workers=2)
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    def loss_and_grads(checkpointing: bool):
        model, data = make_neuropictor()
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert model.unet.is_gradient_checkpointing and model.encoder.gradient_checkpointing
        model.train()
        torch.manual_seed(5)  # the loss's draws outside fit come from the global generator
        loss = model(*data[torch.arange(6)])
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss0, g0 = loss_and_grads(False)
    loss1, g1 = loss_and_grads(True)
    torch.testing.assert_close(loss1, loss0)
    assert g0.keys() == g1.keys() and any(n.startswith("encoder.") for n in g0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_reaches_the_sampler():
    """compute.precision bf16 runs the sampler's denoiser under autocast: the draw moves a
    little (bf16 rounding) and stays close to fp32's; fp32 is a no-op."""
    from neuropictor.sample import denoise
    from neuropictor.models.foundation import noise_schedule

    torch.manual_seed(0)
    net = torch.nn.Conv2d(4, 4, 3, padding=1)
    scheduler = noise_schedule("ddpm")

    def make_predict(rows):
        return lambda x, t: net(x)

    try:
        compute.configure(Compute(precision="fp32"))
        fp32 = denoise(make_predict, scheduler, (2, 4, 8, 8), steps=5, seed=1)
        compute.configure(Compute(precision="bf16"))
        bf16 = denoise(make_predict, scheduler, (2, 4, 8, 8), steps=5, seed=1)
    finally:
        compute.configure(Compute())
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert float((bf16 - fp32).abs().max()) < 0.05 * float(fp32.abs().max())


# --------------------------------------------------------------------------- features on disk
@pytest.fixture(scope="module")
def features(prepared, tmp_path_factory):
    from neuropictor.features import FeatureStore, compute_features
    from neuropictor.models.foundation import load_foundation

    cfg, prep = prepared
    found = load_foundation(cfg.path("foundation"))
    out = tmp_path_factory.mktemp("features") / "features"
    import dataclasses

    cfg = dataclasses.replace(cfg, compute=Compute(feature_batch=7))  # batches that do not divide the count
    manifest = compute_features(cfg, prep, found, out)
    return cfg, prep, found, FeatureStore(out), manifest


def test_features_are_the_encoders_output_by_nsd_id(features):
    from neuropictor.decoding import caption_states, reference_captions
    from neuropictor.models.foundation import image_latents, images_of

    cfg, prep, found, store, manifest = features
    ids = prep.stimulus_ids()
    assert manifest["n_images"] == len(ids) == len(store.ids)
    pick = ids[[5, 0, len(ids) - 1, 3]]  # any order, read back in that order
    torch.testing.assert_close(store.latents(pick), image_latents(found.pipe.vae, images_of(prep, pick)),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(store.states(pick), caption_states(found.pipe, reference_captions(cfg, prep, pick)),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError, match="not in .*older than the prepared data"):
        store.latents(np.array([ids.max() + 1]))


def test_streamed_pairs_are_the_rows_and_train_like_tensors(features):
    """NeuroPictor's training set read from disk per batch gives the rows an in-memory
    gather gives, so `fit` on it ends at the same weights."""
    from neuropictor.features import StreamedPairs

    cfg, prep, _, store, _ = features
    pairs = StreamedPairs(prep, store, [1, 2], "train")
    n1 = len(prep.rows(1, "train"))
    assert len(pairs) == n1 + len(prep.rows(2, "train"))
    rows = np.array([n1 + 1, 0, n1, 2])  # across both subjects
    maps, z, c = pairs[rows]
    want = np.concatenate([np.asarray(prep.flatmaps(s, "train")) for s in (1, 2)])[rows]
    np.testing.assert_array_equal(maps.numpy(), want)
    torch.testing.assert_close(z, store.latents(pairs.nsd_ids[rows]))
    assert c.shape[0] == 4

    all_rows = np.arange(len(pairs))
    tensors = TensorBatches(*pairs[all_rows])

    def loss(model, batch):
        m, z0, s = batch
        return ((model(m.flatten(1)) - z0.flatten(1)[:, :3]) ** 2).mean() + 0 * s.sum()

    def train(data):
        torch.manual_seed(0)
        model = torch.nn.Linear(maps[0].numel(), 3)
        fit(model, loss, data, TrainConfig(steps=5, batch_size=4, lr=1e-2, warmup=1, log_every=1))
        return model.weight.detach().clone()

    assert torch.equal(train(pairs), train(tensors))


def test_feature_store_errors_name_the_folder_and_the_fix(features, tmp_path, monkeypatch):
    import json
    import shutil

    from neuropictor import features as F

    cfg, prep, found, store, _ = features
    with pytest.raises(DataError, match=r"dvc repro features"):
        F.FeatureStore(tmp_path / "nowhere")
    damaged = tmp_path / "damaged"
    shutil.copytree(store.root, damaged)
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["latents"][0] += 1
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="damaged"):
        F.FeatureStore(damaged)
    # a run that fails midway leaves no folder that looks complete
    import neuropictor.models.foundation as fd

    calls = {"n": 0}
    real = fd.image_latents

    def fail_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(fd, "image_latents", fail_second)
    with pytest.raises(RuntimeError, match="killed"):
        F.compute_features(cfg, prep, found, tmp_path / "half")
    assert not (tmp_path / "half").exists()


def test_prep_writes_the_stimuli_in_chunks_as_one_read_would(prepared, tmp_path):
    from neuropictor.data.nsd import NSDLayout, read_stimuli
    from neuropictor.data.prep import _write_stimuli

    cfg, prep = prepared
    layout = NSDLayout(cfg.path("nsd_root"))
    _write_stimuli(cfg, layout, prep.index, tmp_path, chunk=5)
    ids = np.load(tmp_path / "stimuli_ids.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "stimuli.npy"), read_stimuli(layout, ids, cfg.prep.image_size))
    np.testing.assert_array_equal(np.load(tmp_path / "stimuli.npy"), np.load(prep.root / "stimuli.npy"))


def test_missing_corpus_stops_prep_before_the_subjects(world, tmp_path):
    import dataclasses
    import time

    from neuropictor.data.prep import prepare

    cfg, _ = world
    cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, corpus_root=str(tmp_path / "no_corpus")))
    t0 = time.time()
    with pytest.raises(DataError, match="No corpus participants"):
        prepare(cfg, tmp_path / "prepared")
    assert time.time() - t0 < 20 and not list((tmp_path / "prepared").glob("subj*"))


def test_checkpoints_keep_the_trained_weights_only_and_resume(tmp_path):
    """A NeuroPictor checkpoint holds what resume needs (trained weights, buffers, optimizer
    state), not the frozen UNet; a run stopped after 2 of 4 steps resumes to the weights of
    the uninterrupted run."""
    from safetensors.torch import load_file

    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-3, warmup=1, log_every=1, ckpt_every=2)
    model, data = make_neuropictor()
    fit(model, neuropictor_loss, data, cfg, tmp_path / "run", stop_after=2)
    saved = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert saved and not any(k.startswith("unet.") for k in saved)
    assert any(k.startswith("llmn.") for k in saved) and any(k.startswith("encoder.") for k in saved)
    model, data = make_neuropictor()
    fit(model, neuropictor_loss, data, cfg, tmp_path / "run")  # resumes at step 2
    resumed = model.trainable_state_dict()
    model, data = make_neuropictor()
    fit(model, neuropictor_loss, data, cfg)
    straight = model.trainable_state_dict()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


@pytest.mark.slow
def test_neuropictor_training_launched_in_two_processes_from_the_kernel_matches_one():
    """compute.processes 2: `train_neuropictor` launches DDP from the calling process
    (accelerate's notebook_launcher, as notebook 04 does) and ends at the 1-process weights."""
    from neuropictor.config import Loop
    from neuropictor.decoding import train_neuropictor

    loop = Loop(steps=3, batch_size=8, lr=1e-3, mask_steps=1)
    runs = {}
    for processes in (1, 2):
        model, data = make_neuropictor()
        history = train_neuropictor(model, data, loop, 0, None, f"{processes} processes",
                                    compute=Compute(processes=processes))
        runs[processes] = model.trainable_state_dict(), history
    start = make_neuropictor()[0].trainable_state_dict()
    (one, h1), (two, h2) = runs[1], runs[2]
    assert any(not torch.equal(one[k], start[k]) for k in one)
    assert any(not torch.equal(two[k], start[k]) for k in two)  # the parent got the children's weights
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
    assert [h["phase"] for h in h2] == [h["phase"] for h in h1] and h2[-1]["loss"] == pytest.approx(h1[-1]["loss"], rel=1e-4)
