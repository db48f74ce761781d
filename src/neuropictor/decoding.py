"""NeuroPictor's stages 04-05 as library calls: data assembly, model building, training
and checkpoints (the voxel-based methods are in methods/). Notebooks 04-05 narrate these.

    found = load_foundation(cfg.path("foundation"))
    data = decoding_data(cfg, prepared, found, subjects=[1, 2], split="train")
    model = build_neuropictor(cfg, found, prepared, stage="pretrain")
    train_neuropictor(cfg, model, data, cfg.neuropictor.pretrain, out_dir)
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
from .models.foundation import image_latents, images_of
from .models.neuropictor import ModelSwitches, NeuroPictor, neuropictor_loss
from .train import TensorBatches, TrainConfig, fit


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


@dataclass
class DecodingData:
    """Flatmaps with their stimuli's latents and caption states (rows aligned)."""

    maps: torch.Tensor  # (n, H, W)
    z0: torch.Tensor  # (n, c, h, w)
    states: torch.Tensor  # (n, L_T, d_T)
    nsd_ids: np.ndarray
    subjects: np.ndarray

    def batches(self) -> TensorBatches:
        return TensorBatches(self.maps, self.z0, self.states)


def decoding_data(cfg: Settings, prepared, found, subjects, split: str) -> DecodingData:
    maps, ids, subj = [], [], []
    for s in subjects:
        rows = prepared.rows(s, split)
        maps.append(torch.from_numpy(np.asarray(prepared.flatmaps(s, split), dtype=np.float32)))
        ids.append(rows.nsd_id.to_numpy())
        subj.append(np.full(len(rows), int(s)))
    ids_all = np.concatenate(ids)
    uniq, inverse = np.unique(ids_all, return_inverse=True)  # each image encoded once
    z = image_latents(found.pipe.vae, images_of(prepared, uniq))
    states = caption_states(found.pipe, reference_captions(cfg, prepared, uniq))
    return DecodingData(torch.cat(maps), z[inverse], states[inverse], ids_all, np.concatenate(subj))


# --------------------------------------------------------------------------- model
def switches(cfg: Settings, stage: str) -> ModelSwitches:
    """The model switches of a stage, as the released code trains: multi-subject pretraining
    runs without the auxiliary encoder (Sec. 3.4) and without L_sem (weight 0 there; the
    paper's text has L_sem throughout); refining uses `neuropictor.use_aux` and `lambda_sem`."""
    n = cfg.neuropictor
    pretrain = stage == "pretrain"
    return ModelSwitches(encoder_output=n.encoder_output, encoder_trainable=n.encoder_trainable, use_llmn=n.use_llmn,
                         use_aux=n.use_aux and not pretrain, lambda_sem=0.0 if pretrain else n.lambda_sem,
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
    return NeuroPictor(encoder, pipe.unet, empty, scheduler, switches(cfg, stage), hlgn_hidden_tokens=n.hlgn_hidden_tokens,
                       hlgn_layer_norm=n.hlgn_layer_norm, llmn_map=n.llmn_map)


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
    the prepared data, the pretrained encoder, the foundation (its manifest; synthetic world)
    and `extra` (e.g. the pretrained model a refining starts from)."""
    found = [cfg.path("foundation") / "manifest.json"] if cfg.world == "synthetic" else []
    return [cfg.path("prepared"), cfg.path("encoder"), *found, *extra]


def train_neuropictor(model: NeuroPictor, data: DecodingData, loop: Loop, seed: int, checkpoints: Path | None,
                      desc: str, smoke_steps: int | None = None) -> list[dict]:
    """Train through `train.fit` in the released code's two phases: `loop.steps` with every
    caption kept, then the "mask" phase, `loop.mask_steps` at lr / 10 in which
    `switches.empty_rate` of F^sem is replaced by the empty caption (what classifier-free
    guidance needs). Resumes from `checkpoints` (see `stage_checkpoint`) if a killed run left
    state there; the state is removed once the run is complete. Returns one history, the mask
    phase's steps counted on from the first phase's."""
    import dataclasses
    import shutil

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
        tc = TrainConfig(steps=steps, batch_size=loop.batch_size, lr=lr, seed=seed + (phase == "mask"),
                         warmup=min(50, steps // 10), ckpt_every=100, log_every=min(25, steps))
        part = fit(model, neuropictor_loss, data.batches(), tc, None if checkpoints is None else Path(checkpoints) / phase,
                   desc=f"{desc} ({phase})")
        history += [dict(h, step=h["step"] + done, phase=phase) for h in part]
        done += steps
    model.switches = dataclasses.replace(model.switches, empty_rate=rate)
    if checkpoints is not None and Path(checkpoints).exists():
        shutil.rmtree(checkpoints)
    return history


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
