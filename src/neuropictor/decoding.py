"""NeuroPictor's stages 04-05 as library calls: data assembly, model building, training
and checkpoints (the voxel-based methods are in methods/). Notebooks 04-05 narrate these.

    found = load_world_foundation(cfg)
    data = decoding_data(cfg, prepared, subjects=[1, 2], split="train")   # streamed from disk
    model = build_neuropictor(cfg, found, mask, stage="pretrain")
    train_neuropictor(model, data, cfg.neuropictor.pretrain, cfg.seed, out_dir, desc="pretrain")
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .config import Loop, Settings
from .io import DataError, atomic_dir, read_safetensors
from .models.fmri_encoder import EncoderSpec, FlatmapMAE, load_encoder
from .models.neuropictor import ModelSwitches, NeuroPictor, neuropictor_loss
from .train import TrainConfig, fit


def encoder_spec(cfg: Settings) -> EncoderSpec:
    e = cfg.encoder
    return EncoderSpec(image_size=cfg.prep.flatmap_size, patch=e.patch, width=e.width, depth=e.depth, heads=e.heads,
                       decoder_width=e.decoder_width, decoder_depth=e.decoder_depth)


# --------------------------------------------------------------------------- data
def reference_captions(cfg: Settings, prepared, nsd_ids: np.ndarray) -> list[str]:
    """The caption each image's semantic target is computed from: in the synthetic world the
    full caption (every object, position, background), in the paper world the first COCO one."""
    if cfg.world == "synthetic":
        from .data.stimuli import full_caption, scene_of_row

        return [full_caption(scene_of_row(r)) for _, r in prepared.attributes(nsd_ids).iterrows()]
    caps = prepared.captions()
    return [caps[int(i)][0] for i in nsd_ids]


@torch.no_grad()
def caption_states(pipe, texts: list[str], batch: int = 256) -> torch.Tensor:
    """The frozen text encoder's token states (n, L_T, d_T): the UNet's condition F^txt."""
    tok = pipe.tokenizer
    out = []
    for s in range(0, len(texts), batch):
        ids = tok(texts[s:s + batch], padding="max_length", truncation=True, max_length=tok.model_max_length,
                  return_tensors="pt").input_ids
        out.append(pipe.text_encoder(input_ids=ids).last_hidden_state)
    return torch.cat(out)


def decoding_data(cfg: Settings, prepared, subjects, split: str):
    """Flatmaps of `subjects`' `split` with their stimuli's latents and caption states, as a
    `features.StreamedPairs` (rows read from disk per batch; the features stage computed the
    latents and states once)."""
    from .features import FeatureStore, StreamedPairs

    return StreamedPairs(prepared, FeatureStore(cfg.path("features")), subjects, split)


# --------------------------------------------------------------------------- model
def switches(cfg: Settings, stage: str) -> ModelSwitches:
    """The model switches of a stage. Multi-subject pretraining runs without the auxiliary
    encoder (Sec. 3.4); L_sem (`lambda_sem`, reduced over the width as `sem_loss` says) is on
    in refining, and in pretraining only where `sem_in_pretraining` (the paper's text has it
    throughout; the released code has weight 0 there)."""
    n = cfg.neuropictor
    pretrain = stage == "pretrain"
    lam = n.lambda_sem if (n.sem_in_pretraining or not pretrain) else 0.0
    return ModelSwitches(encoder_output=n.encoder_output, encoder_trainable=n.encoder_trainable, use_llmn=n.use_llmn,
                         use_aux=n.use_aux and not pretrain, lambda_sem=lam, sem_loss=n.sem_loss,
                         lambda_low=n.lambda_low if n.use_llmn else 0.0,
                         empty_rate=n.empty_rate)


def build_neuropictor(cfg: Settings, found, mask: np.ndarray, stage: str) -> NeuroPictor:
    """A fresh NeuroPictor on the frozen foundation UNet; the encoder is the pretrained one
    (stage 03) unless `neuropictor.encoder_init` is `random` (Xavier uniform)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(cfg.seed)
    if cfg.neuropictor.encoder_init == "pretrained":
        encoder = load_encoder(cfg.path("encoder"))
    else:
        encoder = FlatmapMAE(encoder_spec(cfg), torch.from_numpy(np.asarray(mask, dtype=bool)))
    pipe = found.pipe
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    empty = caption_states(pipe, [""])
    n = cfg.neuropictor
    model = NeuroPictor(encoder, pipe.unet, empty, scheduler, switches(cfg, stage), hlgn_hidden_tokens=n.hlgn_hidden_tokens,
                        hlgn_layer_norm=n.hlgn_layer_norm, llmn_map=n.llmn_map, llmn_input=n.llmn_input,
                        hlgn_dropout=n.hlgn_dropout)
    if cfg.compute.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model


def stage_checkpoint(cfg: Settings, name: str, *inputs: Path) -> Path:
    """Where a training stage keeps its resumable state: under `paths.checkpoints`, outside
    the stage's DVC outputs (DVC deletes those before it reruns a stage, so a checkpoint
    there could never be resumed), keyed by the settings and a fingerprint of the input
    files, so a rerun on other settings or data starts afresh instead of resuming."""
    from .config import as_dict
    from .io import fingerprint
    from .train import checkpoint_dir

    settings = as_dict(cfg)
    return checkpoint_dir(cfg.path("checkpoints"), name, settings["neuropictor"], settings["encoder"],
                          settings["prep"], cfg.seed, cfg.smoke, fingerprint(*inputs))


def training_inputs(cfg: Settings, *extra: Path) -> list[Path]:
    """What a NeuroPictor training stage learns from, for `stage_checkpoint`'s fingerprint:
    the prepared data, the per-image features (their manifest), the pretrained encoder, the
    foundation (its manifest; synthetic world) and `extra` (e.g. the pretrained model a
    refining starts from)."""
    found = [cfg.path("foundation") / "manifest.json"] if cfg.world == "synthetic" else []
    return [cfg.path("prepared"), cfg.path("features") / "manifest.json", cfg.path("encoder"), *found, *extra]


def lr_scales(model: NeuroPictor, loop: Loop) -> dict[str, float]:
    """The stage's lr multipliers by parameter-name prefix (`train.TrainConfig.lr_scales`): the
    HLGN and the LLMN's feature transformation, the parts that start untrained, may learn
    faster than the pretrained encoder and the ControlNet copy (1 = one lr, as released)."""
    scales = {"hlgn.": loop.hlgn_lr_scale}
    if getattr(model, "llmn", None) is not None:
        scales["llmn.feature_transform."] = loop.transform_lr_scale
    return {k: v for k, v in scales.items() if v != 1}


def train_neuropictor(model: NeuroPictor, data, loop: Loop, seed: int, checkpoints: Path | None,
                      desc: str, smoke_steps: int | None = None, compute=None) -> list[dict]:
    """Train through `train.fit` in the released code's two phases: `loop.steps` with every
    caption kept, then the "mask" phase, `loop.mask_steps` at lr / 10 in which
    `switches.empty_rate` of F^sem is replaced by the empty caption (what classifier-free
    guidance needs). `data`: a row-indexable dataset (`decoding_data`); `compute`: params'
    `compute:` section (device, precision, accumulation, workers; default: the configured
    one, `compute.configure`). Resumes from `checkpoints` (see `stage_checkpoint`) if a killed run left
    state there; the state is removed once the run is complete. Returns one history, the mask
    phase's steps counted on from the first phase's."""
    import dataclasses
    import shutil

    from .compute import active, train_settings

    compute = compute or active()
    if compute.processes > 1:
        return _train_in_processes(model, data, loop, seed, checkpoints, desc, smoke_steps, compute)

    def steps_of(n):
        return min(n, smoke_steps) if smoke_steps else n

    rate = model.switches.empty_rate
    phases = [("main", loop.steps, loop.lr, 0.0), ("mask", loop.mask_steps, loop.lr / 10, rate)]
    history, done = [], 0
    for phase, n, lr, empty_rate in phases:
        steps = steps_of(n)
        if steps <= 0:
            continue
        model.switches = dataclasses.replace(model.switches, empty_rate=empty_rate)
        scales = lr_scales(model, loop)
        tc = TrainConfig(steps=steps, batch_size=loop.batch_size, lr=lr, lr_scales=scales, seed=seed + (phase == "mask"),
                         warmup=min(50, steps // 10), ckpt_every=100, log_every=min(25, steps),
                         **train_settings(compute))
        part = fit(model, neuropictor_loss, data, tc, None if checkpoints is None else Path(checkpoints) / phase,
                   desc=f"{desc} ({phase})")
        history += [dict(h, step=h["step"] + done, phase=phase) for h in part]
        done += steps
    model.switches = dataclasses.replace(model.switches, empty_rate=rate)
    if checkpoints is not None:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return history


def _train_in_processes(model: NeuroPictor, data, loop: Loop, seed: int, checkpoints, desc: str, smoke_steps,
                        compute) -> list[dict]:
    """`train_neuropictor` in `compute.processes` processes (DDP), launched from the notebook's
    kernel by accelerate's `notebook_launcher` (one process per GPU; gloo on CPU). Every process
    draws the global batch's noise, timesteps and caption drops and keeps its rows, so the
    result is the 1-process one (tested); the first process hands the trained weights back."""
    import dataclasses
    import tempfile

    from accelerate import PartialState, notebook_launcher
    from safetensors.torch import load_file

    one = dataclasses.replace(compute, processes=1)
    with tempfile.TemporaryDirectory() as tmp:
        weights, log = Path(tmp) / "trained.safetensors", Path(tmp) / "history.json"

        def worker():
            history = train_neuropictor(model, data, loop, seed, checkpoints, desc, smoke_steps, one)
            state = PartialState()
            if state.is_main_process:
                save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, str(weights),
                          metadata={"processes": str(state.num_processes)})
                log.write_text(json.dumps(history))

        from accelerate.state import AcceleratorState

        # a 1-process Accelerator left in this kernel (an earlier cell's training) would stop the launch
        AcceleratorState._reset_state(reset_partial_state=True)
        # notebook_launcher forks; a child of a parent whose OpenMP pool has run with several
        # threads hangs at its first parallel op (libgomp is not fork-safe), so the processes
        # are forked from one thread (each trains on one CPU thread, or on its GPU)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            notebook_launcher(worker, num_processes=compute.processes, use_port=str(_free_port()))
        finally:
            torch.set_num_threads(threads)
            AcceleratorState._reset_state(reset_partial_state=True)
        if not weights.exists():
            raise RuntimeError(f"{desc}: the {compute.processes} training processes ended without weights; see their "
                               "output above.")
        model.load_trainable(load_file(str(weights)))
        return json.loads(log.read_text())


def _free_port() -> int:
    """A TCP port nothing listens on (DDP's rendezvous; a stale run may hold 29500)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_model(path: Path, model: NeuroPictor, meta: dict) -> None:
    """The trainable parts (encoder, HLGN, LLMN) as safetensors + a JSON of the switches."""
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "model.json").write_text(json.dumps(dict(meta, switches=asdict(model.switches)), indent=1))


def load_model(path: Path, model: NeuroPictor, strict: bool = True) -> NeuroPictor:
    path = Path(path)
    if not (path / "model.safetensors").exists():
        raise DataError(f"No trained NeuroPictor at {path} (model.safetensors missing). Run the training "
                        "stage that writes it first (`dvc repro`).")
    fix = f"Re-run the training stage that writes {path} (`dvc repro`); delete the folder first if it is damaged."
    try:
        model.load_trainable(read_safetensors(path / "model.safetensors", fix), strict=strict)
    except RuntimeError as err:
        raise DataError(f"{path / 'model.safetensors'} does not fit this model (other widths or switches?): "
                        f"{str(err)[:300]}. {fix}") from err
    return model.eval()
