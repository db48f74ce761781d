"""Foundation models of the synthetic world, in the formats the paper world's weights use.

- VAE: diffusers `AutoencoderKL` (64 px RGB -> 4 x side x side latents);
- a CLIP-style pair: transformers `CLIPModel` (text tower = `CLIPTextModel`, image tower),
  trained contrastively on image-caption pairs, with an offline tokenizer (tokenizer.py);
- a text-to-image `UNet2DConditionModel` on the VAE latents, conditioned on the text tower's
  token states (the role OpenCLIP ViT-H/14's states play for SD-2.1), with DDPM training
  and DDIM sampling; saved together as a diffusers Stable-Diffusion pipeline folder.

Sizes are chosen for 2 CPU cores: plain Down/UpBlock2D at full latent resolution and
attention only below it (attention at the top resolution dominates CPU time).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F



@dataclass(frozen=True)
class VAESpec:
    channels: tuple[int, ...] = (16, 32, 64)  # len - 1 downsamplings: 64 px -> 16 x 16
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_groups: int = 4  # >= 2 channels per group keeps absolute colour recoverable
    object_weight: float = 9.0  # extra loss weight of pixels that differ from the background


@dataclass(frozen=True)
class CLIPSpec:
    width: int = 128
    layers: int = 3
    heads: int = 4
    embed_dim: int = 128
    max_length: int = 32
    patch: int = 8


@dataclass(frozen=True)
class UNetSpec:
    channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 1
    heads: int = 4
    empty_caption_rate: float = 0.1  # captions dropped for classifier-free guidance
    train_timesteps: int = 1000


# --------------------------------------------------------------------------- VAE
def build_vae(spec: VAESpec, image_size: int = 64):
    from diffusers import AutoencoderKL

    n = len(spec.channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(spec.channels),
        layers_per_block=spec.layers_per_block, latent_channels=spec.latent_channels,
        norm_num_groups=spec.norm_groups, sample_size=image_size, mid_block_add_attention=False)


def vae_loss(object_weight: float):
    """L1 + MSE of the reconstruction from the posterior mean, with object pixels up-weighted:
    backgrounds are most pixels and are learnt first; objects carry the content."""
    def loss(vae, batch):
        (x,) = batch
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mean).sample
        background = x.flatten(2).median(-1).values[..., None, None]
        w = 1 + object_weight * ((x - background).abs().sum(1, keepdim=True) > 0.1).float()
        err = (rec - x).abs() + (rec - x) ** 2
        return (w * err).mean() / w.mean() + 1e-6 * post.kl().mean()
    return loss


def images_of(prepared, nsd_ids) -> torch.Tensor:
    """Stimuli of a `data.prep.Prepared` tree as a float tensor (n, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(prepared.images(nsd_ids))).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def image_latents(vae, images: torch.Tensor, scale: float | None = None, batch: int = 256) -> torch.Tensor:
    """Images (n, 3, H, W) in [0, 1] -> VAE posterior means times `scale` (default: the VAE's
    `scaling_factor`), i.e. the latents z0 the UNet denoises."""
    scale = vae.config.scaling_factor if scale is None else scale
    return torch.cat([vae.encode(2 * images[s:s + batch] - 1).latent_dist.mean
                      for s in range(0, len(images), batch)]) * scale


# --------------------------------------------------------------------------- CLIP pair
def build_clip(spec: CLIPSpec, vocab_size: int, image_size: int = 64):
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=vocab_size, hidden_size=spec.width, intermediate_size=4 * spec.width,
                num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                max_position_embeddings=spec.max_length, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=spec.width, intermediate_size=4 * spec.width, num_hidden_layers=spec.layers,
                  num_attention_heads=spec.heads, image_size=image_size, patch_size=spec.patch)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=spec.embed_dim))


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> the image tower's input (centred, unit-ish scale)."""
    return (images - 0.5) / 0.25


def pick_caption(ids: torch.Tensor, first_share: float | None = None) -> torch.Tensor:
    """(n, k, L) token ids of k captions per image -> (n, L), one caption per image at random;
    with `first_share`, caption 0 is drawn with that probability and the others share the rest."""
    if ids.ndim == 2:
        return ids
    n, k = ids.shape[:2]
    choice = torch.randint(0, k, (n,), device=ids.device)
    if first_share is not None:
        first = torch.rand(n, device=ids.device) < first_share
        choice = torch.where(first, 0, torch.randint(1, k, (n,), device=ids.device))
    return ids[torch.arange(n, device=ids.device), choice]


def clip_loss(first_share: float | None = None):
    """Symmetric InfoNCE of CLIPModel over (images in [0, 1], caption ids (n, k, L))."""
    def loss(clip, batch):
        images, ids = batch
        return clip(input_ids=pick_caption(ids, first_share), pixel_values=clip_pixels(images), return_loss=True).loss
    return loss


def clip_negatives_loss(first_share: float | None = None):
    """InfoNCE of CLIPModel where each image also meets hard negatives (NegCLIP, Yuksekgonul
    et al. 2023): batches are (images, caption ids (n, k, L), negative ids (n, m, L)); one
    negative per image (e.g. its full caption with another shape) joins the text side, so
    the towers must tell shapes apart, not only scenes."""
    def loss(clip, batch):
        images, ids, negatives = batch
        n = len(images)
        text = torch.cat([pick_caption(ids, first_share), pick_caption(negatives)])
        img = F.normalize(_features(clip.get_image_features(pixel_values=clip_pixels(images))), dim=-1)
        txt = F.normalize(_features(clip.get_text_features(input_ids=text)), dim=-1)
        logits = clip.logit_scale.exp() * img @ txt.T  # (n, 2n)
        target = torch.arange(n, device=images.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :n].T, target)) / 2
    return loss


def _features(out):
    """transformers 5 returns a tensor or a model output whose pooler_output is the projection."""
    return out if torch.is_tensor(out) else out.pooler_output


@torch.no_grad()
def clip_embed_images(clip, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    clip.eval()
    out = [clip.get_image_features(pixel_values=clip_pixels(images[s:s + batch])) for s in range(0, len(images), batch)]
    return F.normalize(torch.cat([_features(o) for o in out]), dim=-1)


@torch.no_grad()
def clip_embed_text(clip, ids: torch.Tensor, batch: int = 256) -> torch.Tensor:
    clip.eval()
    out = [clip.get_text_features(input_ids=ids[s:s + batch]) for s in range(0, len(ids), batch)]
    return F.normalize(torch.cat([_features(o) for o in out]), dim=-1)


def clip_retrieval(clip, images: torch.Tensor, ids: torch.Tensor) -> float:
    """Image -> caption top-1 retrieval: the share of images whose own caption (row i of
    `ids`) scores highest among all the captions given."""
    sim = clip_embed_images(clip, images) @ clip_embed_text(clip, ids).T
    return float((sim.argmax(1) == torch.arange(len(images))).float().mean())


def clip_shape_pick(clip, images: torch.Tensor, attributes, captions: list[str], token_ids) -> float:
    """The share of images closest to their own full caption among its variants with each
    other primary shape (issue 12's CLIP shape bar; chance 1 / len(SHAPES)). `attributes`
    holds the images' attribute rows, `token_ids` turns texts into caption ids."""
    from ..data.corpus import shape_variants
    from ..data.stimuli import SHAPES

    img = clip_embed_images(clip, images)
    true = attributes["shape_0"].to_numpy()
    sims = []
    for shape in SHAPES:
        texts = [full if true[i] == shape else shape_variants(attributes.iloc[i], [shape])[0]
                 for i, full in enumerate(captions)]
        sims.append((img * clip_embed_text(clip, token_ids(texts))).sum(1))
    picked = torch.stack(sims, 1).argmax(1).numpy()
    return float((picked == np.array([SHAPES.index(s) for s in true])).mean())


def text_encoder_of(clip):
    """The text tower as a stand-alone `CLIPTextModel` (what SD pipelines load)."""
    from transformers import CLIPTextModel

    model = CLIPTextModel(clip.config.text_config)
    model.load_state_dict(clip.text_model.state_dict())  # transformers 5: same module layout
    return model.eval()


# --------------------------------------------------------------------------- UNet
def build_unet(spec: UNetSpec, latent_side: int, latent_channels: int, cross_dim: int):
    from diffusers import UNet2DConditionModel

    n = len(spec.channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=latent_side, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=down, up_block_types=up, block_out_channels=tuple(spec.channels),
        layers_per_block=spec.layers_per_block, cross_attention_dim=cross_dim,
        attention_head_dim=spec.heads, norm_num_groups=min(32, spec.channels[0] // 2))


def snr_weights(scheduler, t: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), so the many nearly clean timesteps stop
    dominating the gradient: min(SNR, gamma) / SNR for epsilon prediction, min(SNR, gamma) /
    (SNR + 1) for v-prediction; all ones without gamma."""
    if gamma is None:
        return torch.ones(t.shape, device=t.device)
    ac = scheduler.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    if scheduler.config.prediction_type == "v_prediction":
        return snr.clamp(max=gamma) / (snr + 1)
    return snr.clamp(max=gamma) / snr


def diffusion_target(scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses at (z0, noise, t): the noise (epsilon prediction, SD-1.x and
    SD-2.1-base) or the velocity sqrt(a) noise - sqrt(1 - a) z0 (v-prediction, SD-2.1)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(z0, noise, t)
    raise ValueError(f"prediction_type {kind!r} is not supported for training; use 'epsilon' or 'v_prediction'")


def diffusion_loss(scheduler, empty_states: torch.Tensor, drop_rate: float, text_encoder=None,
                   snr_gamma: float | None = None, first_share: float | None = None):
    """DDPM loss (target by the scheduler's prediction type); a `drop_rate` share of captions
    become the empty caption.

    Batches are (latents, caption states) or, with a frozen `text_encoder`, (latents, caption
    ids (n, k, L)): one of the k captions is drawn per image (caption 0 with probability
    `first_share` if given, see `pick_caption`) and encoded on the fly."""
    def loss(unet, batch):
        z0, states = batch
        if text_encoder is not None:
            with torch.no_grad():
                states = text_encoder(input_ids=pick_caption(states, first_share)).last_hidden_state
        noise = torch.randn_like(z0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (z0.shape[0],), device=z0.device)
        drop = torch.rand(z0.shape[0], device=z0.device) < drop_rate
        states = torch.where(drop[:, None, None], empty_states.to(states), states)
        noisy = scheduler.add_noise(z0, noise, t)
        err = (unet(noisy, t, encoder_hidden_states=states).sample - diffusion_target(scheduler, z0, noise, t)) ** 2
        return (snr_weights(scheduler, t, snr_gamma) * err.flatten(1).mean(1)).mean()
    return loss


def noise_schedule(kind: str = "ddpm", train_timesteps: int = 1000, prediction_type: str = "epsilon",
                   zero_terminal_snr: bool = False):
    """Stable Diffusion's noise schedule (scaled-linear betas 0.00085-0.012): "ddpm" for
    training, "ddim" (SD's sampler settings) for sampling and the saved pipeline.

    zero_terminal_snr: rescale the betas so the last step is pure noise (Lin et al. 2024,
    "Common diffusion noise schedules and sample steps are flawed"). SD's own schedule leaves
    a trace of the image at t = T, so a sampler that starts from pure noise sees a mean
    brightness the model never saw in training. Needs v-prediction (the noise is not
    identifiable at SNR 0) and "trailing" timesteps, so sampling starts at t = T."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
    if zero_terminal_snr and prediction_type != "v_prediction":
        raise ValueError("zero_terminal_snr needs prediction_type 'v_prediction' (at SNR 0 the noise "
                         "equals the noisy latent, so epsilon prediction learns nothing there); set "
                         "foundation.unet.prediction: v_prediction or zero_terminal_snr: false")
    betas = dict(num_train_timesteps=train_timesteps, beta_schedule="scaled_linear", beta_start=0.00085,
                 beta_end=0.012, clip_sample=False, prediction_type=prediction_type,
                 rescale_betas_zero_snr=zero_terminal_snr,
                 timestep_spacing="trailing" if zero_terminal_snr else "leading")
    if kind == "ddpm":
        return DDPMScheduler(**betas)
    if kind == "ddim":
        return DDIMScheduler(**betas, set_alpha_to_one=False, steps_offset=1)
    raise ValueError(f"noise_schedule: kind must be 'ddpm' or 'ddim', not {kind!r}")


def save_pipeline(path: Path, vae, text_encoder, tokenizer, unet, scale: float, scheduler=None) -> None:
    """Write a Stable-Diffusion-style diffusers folder (loadable by models.pretrained.load_diffusion).
    scheduler: the sampler to store (default: SD's DDIM, `noise_schedule("ddim")`)."""
    from diffusers import StableDiffusionPipeline

    from ..io import atomic_dir

    vae.register_to_config(scaling_factor=scale)
    scheduler = noise_schedule("ddim") if scheduler is None else scheduler
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with atomic_dir(path) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)


# --------------------------------------------------------------------------- the bundle
STANDINS = ("attribute_net", "second_net")


def save_standins(path: Path, nets: dict) -> None:
    """AttributeNets as safetensors + a JSON of their widths (no pickles)."""
    import json

    from safetensors.torch import save_file

    from ..io import atomic_dir

    with atomic_dir(path) as tmp:
        for name, net in nets.items():
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / f"{name}.safetensors"))
        (tmp / "standins.json").write_text(json.dumps({name: {"width": net.width} for name, net in nets.items()}))


@dataclass
class FoundationModels:
    """What later stages use: the SD-style pipeline, the CLIP pair and the metric stand-ins."""

    pipe: object  # diffusers StableDiffusionPipeline (vae, text_encoder, tokenizer, unet, scheduler)
    clip: object | None  # transformers CLIPModel (synthetic world)
    standins: dict  # name -> AttributeNet (synthetic world)
    weights: Path | None = None  # paper world: folder of the metric networks' files

    def metric_networks(self):
        if self.weights is not None:
            from .pretrained import paper_metric_networks

            return paper_metric_networks(self.weights)
        from .standins import standin_networks

        return standin_networks(self.standins["attribute_net"], self.standins["second_net"], self.clip, self.pipe.vae)


def load_foundation(root: str | Path) -> FoundationModels:
    """The foundation stage's output folder -> FoundationModels (offline; eval mode)."""
    import json

    from transformers import CLIPModel

    from ..io import DataError, read_safetensors
    from .pretrained import load_diffusion
    from .standins import AttributeNet

    root = Path(root)
    fix = (f"The synthetic world's foundation is shipped in the repository: restore it with `git checkout -- {root}`, "
           "or retrain it with `make foundation`.")
    if not (root / "standins" / "standins.json").exists():
        raise DataError(f"{root} holds no finished foundation models (no standins/standins.json). {fix}")
    pipe = load_diffusion(root / "pipeline")
    try:
        clip = CLIPModel.from_pretrained(str(root / "clip"), local_files_only=True).eval()
        nets = {}
        for name, meta in json.loads((root / "standins" / "standins.json").read_text()).items():
            net = AttributeNet(meta["width"])
            net.load_state_dict(read_safetensors(root / "standins" / f"{name}.safetensors", fix))
            nets[name] = net.eval()
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise DataError(f"{root}: the CLIP pair or the stand-ins cannot be loaded ({type(err).__name__}: "
                        f"{str(err)[:300]}). {fix}") from err
    for module in (pipe.vae, pipe.text_encoder, pipe.unet, clip):
        module.requires_grad_(False)
    return FoundationModels(pipe=pipe, clip=clip, standins=nets)


def load_world_foundation(cfg) -> FoundationModels:
    """The foundation models of the world in force: the synthetic world's trained ones
    (`paths.foundation`), or in the paper world SD-2.1 from `paths.sd_folder` with the
    ImageNet/OpenAI metric networks from `paths.weights` (loaded when first used)."""
    if cfg.world == "synthetic":
        return load_foundation(cfg.path("foundation"))
    from .pretrained import load_diffusion

    pipe = load_diffusion(cfg.path("sd_folder"))
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.requires_grad_(False)
    return FoundationModels(pipe=pipe, clip=None, standins={}, weights=cfg.path("weights"))


# --------------------------------------------------------------------------- checks and manifest
@torch.no_grad()
def text_to_image_check(pipe, captions: list[str], attrs, classifier, steps: int, guidance: float,
                        seed: int, batch: int = 50):
    """Draw one image per caption through `pipe` (DDIM, classifier-free guidance) and read its
    primary object with the attribute classifier. Returns (scores, images, predictions):
    shape / colour / size accuracy against `attrs` (the captions' scenes) and shape & colour."""
    from .standins import attribute_metrics, predict_attributes

    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat([pipe(captions[s:s + batch], num_inference_steps=steps, guidance_scale=guidance,
                             generator=generator, output_type="pt").images.float().clamp(0, 1)
                        for s in range(0, len(captions), batch)])
    pred = predict_attributes(classifier, images)
    m = attribute_metrics(pred, attrs)
    both = float(((pred["shape"].to_numpy() == attrs["shape_0"].to_numpy())
                  & (pred["colour"].to_numpy() == attrs["colour_0"].to_numpy())).mean())
    scores = {"shape": m["shape accuracy"], "colour": m["colour accuracy"], "size": m["size accuracy"],
              "shape_and_colour": both}
    return scores, images, pred


MANIFEST = "manifest.json"


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (relative POSIX paths), the manifest itself and the
    output markers (`io.OUTPUT_MARKER`, written when the folder is renamed into place) excepted."""
    import hashlib

    from ..io import OUTPUT_MARKER

    out = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name not in (MANIFEST, OUTPUT_MARKER)):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[path.relative_to(root).as_posix()] = h.hexdigest()
    return out


def check_manifest(root: str | Path) -> dict:
    """The shipped foundation's manifest, after checking every file's sha256 against it.
    A missing, extra or changed file stops with its name and how to restore it."""
    import json

    from ..io import DataError

    root = Path(root)
    path = root / MANIFEST
    fix = ("Restore the shipped files (`git checkout -- " + str(root) + "`) or retrain them with "
           "`make foundation`.")
    if not path.exists():
        raise DataError(f"{root} has no {MANIFEST}: it is not a finished foundation. {fix}")
    try:
        manifest = json.loads(path.read_text())
        recorded = manifest["files"]
    except (ValueError, KeyError) as err:
        raise DataError(f"{path} is not a readable manifest ({err}). {fix}") from err
    actual = file_hashes(root)
    missing = sorted(set(recorded) - set(actual))
    extra = sorted(set(actual) - set(recorded))
    changed = sorted(k for k in set(recorded) & set(actual) if recorded[k] != actual[k])
    if missing or extra or changed:
        detail = "; ".join(f"{what}: {', '.join(names[:5])}" for what, names in
                           (("missing", missing), ("not in the manifest", extra), ("changed", changed)) if names)
        raise DataError(f"The foundation under {root} does not match its manifest ({detail}). {fix}")
    return manifest
