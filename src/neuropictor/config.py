"""`params.yaml` -> typed, validated settings; project paths.

One loader for every notebook, stage and test. Unknown or mistyped keys stop with a
message naming the key and the closest valid one, so an ablation typo can never run
silently with defaults.

    >>> cfg = load_params()              # params.yaml at the project root
    >>> cfg.sizes.n_shared               # world sizes, chosen by cfg.smoke
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _find_root() -> Path:
    env = os.environ.get("NEUROPICTOR_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]  # src/neuropictor/config.py -> repo
    if (here / "params.yaml").exists():
        return here
    return Path.cwd().resolve()


PROJ_ROOT = _find_root()


class ParamsError(ValueError):
    """A params file is missing, malformed, or has an unknown / mistyped key."""


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class Paths:
    """Where things live. Relative paths are relative to the project root."""

    nsd_root: str = "data/synthetic/nsd"  # NSD layout root (synthetic world writes here)
    corpus_root: str = "data/synthetic/corpus"  # resting-state corpus (UK Biobank stand-in)
    synthetic_root: str = "data/synthetic"  # what the synthetic-world stage writes
    generic_input: str | None = None  # world "generic": one .npz/.h5/.mat (see README)
    prepared: str = "data/prepared"
    foundation: str = "foundation/weights"  # synthetic world: the shipped foundation models
    encoder: str = "data/encoder"  # the pretrained fMRI encoder (stage 03)
    models: str = "data/models"  # NeuroPictor checkpoints: pretrain/, refine/subjXX/
    checkpoints: str = "data/checkpoints"  # training state of stages 03-04 (resume; not a DVC output)
    features: str = "data/features"  # per-image features on disk (VAE latents, caption states): stage 02b
    reconstructions: str = "data/reconstructions"  # sampled test images per subject and model
    tables: str = "tables"
    sd_folder: str = "weights/stable-diffusion-2-1"  # paper world: SD-2.1 diffusers folder
    weights: str = "weights"  # paper world: metric networks / OpenCLIP checkpoints
    figures: str = "figures"
    metrics: str = "metrics"
    reports: str = "reports"


@dataclass(frozen=True)
class WorldSizes:
    """Size of the simulated experiment (NSD analogue) and corpus."""

    n_shared: int = 100  # images every subject sees (NSD's shared1000)
    n_unique_per_subject: int = 400  # images only one subject sees (training images)
    n_repeats: int = 3  # presentations per image (NSD: 3)
    trials_per_session: int = 250  # NSD: 750
    n_sessions_complete: int = 6  # sessions of subjects 1, 2, 5, 7 (covers all repeats)
    n_sessions_partial: int = 4  # sessions of the other subjects (NSD: 30-32 of 40)
    image_size: int = 64  # stimulus side in pixels (NSD: 425)
    voxel_size_mm: float = 4.0  # volume grid of the func "1pt8mm"-like betas
    n_corpus_subjects: int = 120  # resting-state subjects (UK Biobank stand-in)
    corpus_maps_per_subject: int = 8


@dataclass(frozen=True)
class Synthetic:
    """The simulated world: sizes for the default run and for smoke tests, plus the brain."""

    default: WorldSizes = field(default_factory=WorldSizes)
    smoke: WorldSizes = field(
        default_factory=lambda: WorldSizes(
            n_shared=12, n_unique_per_subject=24, trials_per_session=36,
            n_sessions_complete=3, n_sessions_partial=2, voxel_size_mm=6.0,
            n_corpus_subjects=6, corpus_maps_per_subject=2,
        )
    )
    complete_subjects: tuple[int, ...] = (1, 2, 5, 7)
    visual_field_deg: float = 8.4  # stimulus width in degrees (NSD: 8.4)
    signal_psc: float = 1.5  # typical evoked response, percent signal change
    noise_psc: float = 2.0  # trial noise s.d. at SNR factor 1 (percent signal change)
    snr_range: tuple[float, float] = (0.8, 1.25)  # per-subject SNR factor
    session_offset_psc: float = 1.0  # per-session, per-vertex baseline drift
    session_gain_sd: float = 0.15  # per-session, per-vertex gain drift
    anatomy_jitter: float = 1.0  # scale of the per-subject warp of the maps (0 = none)


@dataclass(frozen=True)
class Ridge:
    alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)
    folds: int = 5


@dataclass(frozen=True)
class Prep:
    """Data prep (stage 1). The same code reads the synthetic tree and the real NSD."""

    subjects: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    zscore: str = "session"  # "session" (MindEye2), "train" (Brain-Diffuser), "none"
    corpus_zscore: str = "vertex"  # resting-state maps: "vertex" (per vertex across a participant's maps,
    # as task maps per vertex across a session) | "map" (each map across vertices)
    volume_beta_scale: float = 300.0  # int16 NIfTI betas = percent signal change x 300
    surface: bool = True  # also build flatmaps from fsaverage .mgh betas
    flatmap_size: int = 64  # flatmap side in pixels (paper: 256)
    flatmap_roi: str = "nsdgeneral"  # fsaverage label whose bounding box is the crop
    flatmap_margin: float = 0.05  # crop margin, fraction of the box
    flatmap_roi_only: bool = True  # zero outside the ROI (NeuroPictor's flatmaps) | false: all cortex in the crop
    image_size: int = 64  # stimuli are resized to this for later stages
    n_workers: int = 2  # subjects prepared in parallel
    min_repeats: int = 1  # images with fewer repeats are dropped (reported)
    ridge: Ridge = field(default_factory=Ridge)


@dataclass(frozen=True)
class CorpusParams:
    """The foundation's own procedural corpus (the role LAION plays): scenes of the world's
    stimulus generator under a seed of its own, never the NSD-like world's test images."""

    seed: int = 20240318  # not the world's seed: the corpus and the experiment never share scenes
    scenes: int = 60000  # scenes rendered for training (index 0 .. scenes - 1)
    held_out: int = 300  # quality checks: the last scenes of the index range, never trained on
    smoke_scenes: int = 96  # with smoke on


@dataclass(frozen=True)
class VAEParams:
    channels: tuple[int, ...] = (16, 32, 64)  # len - 1 halvings: 64 px -> 16 x 16 latents
    latent_channels: int = 4
    norm_groups: int = 4
    object_weight: float = 9.0  # extra loss weight of object pixels (objects carry the content)
    steps: int = 1200
    batch_size: int = 32
    lr: float = 2e-3


@dataclass(frozen=True)
class CLIPParams:
    width: int = 128  # text and image towers
    layers: int = 6  # >= 6: NeuralDiffuser's guidance reads several depths of the image tower
    heads: int = 4
    embed_dim: int = 128
    max_length: int = 32  # tokens per caption (L_T)
    patch: int = 8  # image tower patch size
    full_caption_share: float = 0.5  # share of steps pairing an image with its full caption
    shape_negatives: bool = True  # each image also meets its caption with another shape (NegCLIP)
    steps: int = 2400
    batch_size: int = 128
    lr: float = 1e-3


@dataclass(frozen=True)
class UNetParams:
    channels: tuple[int, ...] = (32, 64, 128)
    heads: int = 4
    empty_caption_rate: float = 0.1  # captions dropped for classifier-free guidance
    snr_gamma: float | None = None  # Min-SNR-gamma loss weighting (e.g. 5.0); null = plain MSE
    primary_caption_share: float = 0.5  # training captions cut after the primary object's name
    prediction: str = "v_prediction"  # epsilon | v_prediction (what SD-2.1 predicts)
    zero_terminal_snr: bool = True  # betas rescaled so t = T is pure noise (needs v_prediction)
    ema: float = 0.999  # EMA of the weights; the shipped UNet is the average
    steps: int = 10000
    batch_size: int = 32
    lr: float = 1e-3
    eval_every: int = 1500  # learning curve: text-to-image read by the classifier
    eval_captions: int = 100


@dataclass(frozen=True)
class HVAEParams:
    """The hierarchical (VDVAE-style) VAE the GRU decoder and Brain-Diffuser-style baseline use."""

    resolutions: tuple[int, ...] = (1, 4, 8, 16)
    groups: tuple[int, ...] = (2, 4, 8, 17)  # 31 groups; the first 15 end at the first 16 x 16 one
    width: int = 64
    pixel_width: int = 32
    z_dim: int = 8
    sigma: float = 0.1  # Gaussian likelihood std (images in [-1, 1])
    steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3


@dataclass(frozen=True)
class StandinParams:
    width: int = 16  # AttributeNet (AlexNet / Inception stand-ins, attribute classifier)
    second_width: int = 24  # a second AttributeNet, other seed (EffNet-B stand-in)
    steps: int = 6000
    batch_size: int = 64
    lr: float = 3e-3


@dataclass(frozen=True)
class Foundation:
    """The synthetic foundation (`make foundation`, foundation/dvc.yaml): trained once on its
    own corpus and shipped under paths.foundation. The paper world loads SD-2.1 instead."""

    corpus: CorpusParams = field(default_factory=CorpusParams)
    vae: VAEParams = field(default_factory=VAEParams)
    clip: CLIPParams = field(default_factory=CLIPParams)
    unet: UNetParams = field(default_factory=UNetParams)
    hvae: HVAEParams = field(default_factory=HVAEParams)
    standins: StandinParams = field(default_factory=StandinParams)
    sample_steps: int = 25  # DDIM steps of the text-to-image check
    guidance: float = 5.0  # classifier-free guidance scale
    checkpoints: str = "foundation/checkpoints"  # resumable training state (not shipped)
    smoke_steps: int = 3  # with smoke on, every model trains only this many steps


@dataclass(frozen=True)
class EncoderParams:
    """Stage 03: the guide-token MAE over flatmaps, pretrained on the resting-state corpus."""

    patch: int = 8
    width: int = 128  # d_r
    depth: int = 4
    heads: int = 4
    decoder_width: int = 96
    decoder_depth: int = 2
    holdout_corpus_subjects: int = 10  # unseen subjects for the reconstruction check
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3


@dataclass(frozen=True)
class Loop:
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-4
    mask_steps: int = 100  # then the released code's "mask" phase: lr / 10, empty captions at empty_rate
    hlgn_lr_scale: float = 1.0  # the HLGN's lr = lr x this (1: one lr for everything, as the released code)
    transform_lr_scale: float = 1.0  # the LLMN's feature transformation E_ft: lr x this


@dataclass(frozen=True)
class NeuroPictorParams:
    """Stage 04/05 (Sec. 3.2-3.4). Every Table 2 switch is a key here."""

    encoder_init: str = "pretrained"  # pretrained (Sec. 3.1) | random (Xavier): Table 2 "random init"
    encoder_output: str = "full"  # full (all tokens) | cls (guide token only): Table 2 "[CLS]"
    encoder_trainable: bool = True  # false: Table 2 "frozen"
    use_llmn: bool = True  # false: "w/o LLMN"
    use_aux: bool = True  # false: "w/o Au. Enc." (always off in multi-subject pretraining)
    lambda_sem: float = 0.1  # Eq. 9; 0: "w/o L_sem"
    lambda_low: float = 0.0  # L_low: E_ft's map regressed onto the latent z0 (not in paper or code: 0)
    sem_loss: str = "sum"  # Eq. 3 over the width: sum (the paper's text) | mean (the released code)
    sem_in_pretraining: bool = True  # L_sem in multi-subject pretraining too (paper's text) | refining only (code)
    empty_rate: float = 0.05  # share of F^sem replaced by the empty caption (CFG)
    multi_subject_pretraining: bool = True  # false: refine from scratch on one subject
    refining: bool = True  # false: evaluate the pretrained model ("w/o ft")
    # layout where this world and the released code differ (params.paper.yaml: 128, true, features)
    hlgn_hidden_tokens: int | None = None  # HLGN's middle token count; null = (L_r + L_T) // 2
    hlgn_layer_norm: bool = False  # LayerNorm closing each HLGN branch, aux zero conv kernel 3
    hlgn_dropout: float = 0.0  # share of S^r zeroed in training before the HLGN reads it (code: 0)
    llmn_map: str = "latent"  # F_0^l at the latent's shape (latent) | the UNet's first width (features)
    llmn_input: str = "standardised"  # what E_ft reads: S^r standardised per feature over the batch | raw (as encoded, the released code)
    pretrain: Loop = field(default_factory=lambda: Loop(steps=800, batch_size=32, lr=1e-3, mask_steps=160,
                                                        hlgn_lr_scale=10.0))
    refine: Loop = field(default_factory=lambda: Loop(steps=240, batch_size=32, lr=3e-4, mask_steps=48,
                                                      hlgn_lr_scale=10.0))
    refine_subjects: tuple[int, ...] = (1, 2, 5, 7)


@dataclass(frozen=True)
class Reconstruction:
    """Stage 06: sampling and evaluation."""

    steps: int = 25  # DDIM steps
    guidance: float = 5.0  # classifier-free guidance scale
    alpha: float = 1.0  # control scale of Eq. 7
    alpha_sweep: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    ridge_strength: float = 0.75  # Takagi & Nishimoto img2img strength
    n_figure: int = 8  # test images in the figures


@dataclass(frozen=True)
class DecoderFit:
    """Adam on MSE, up to `epochs` passes, early stopping on a held-out share of the training
    split (CS292F's recipe; the two-stage GRU decoder trains the same way)."""

    lr: float = 0.0005
    batch_size: int = 256
    epochs: int = 100
    patience: int = 5


@dataclass(frozen=True)
class CS292FParams:
    """CS292F nonlinear decoders (seed 003); learning rates and batch sizes: the report's Table 2 (NSD)."""

    strength: float = 0.75  # img2img strength of stage 2
    text_tokens: int = 15  # caption-state tokens decoded (report: 15 of 77); the rest: their training mean
    text_cnn: DecoderFit = field(default_factory=lambda: DecoderFit(lr=0.0001, batch_size=16))
    image_cnn: DecoderFit = field(default_factory=lambda: DecoderFit(lr=0.0005, batch_size=256))
    image_vae: DecoderFit = field(default_factory=lambda: DecoderFit(lr=0.0005, batch_size=256))
    image_gcn: DecoderFit = field(default_factory=lambda: DecoderFit(lr=0.001, batch_size=64))
    width: int = 512  # ChebConv width (report: 512)
    channels: int = 16  # Conv1D channels of the CNN decoders
    vae_latent: int = 256  # VAE decoder's latent size
    vae_fmri_weight: float = 1.0  # weight of its fMRI reconstruction loss
    vae_kl_weight: float = 0.001
    edge_threshold: float = 0.5  # functional-connectivity edges kept above this
    table4_samples: int = 5  # samples per image averaged in Table 4 (report: 5)


@dataclass(frozen=True)
class GRUParams:
    """Two-stage GRU decoder (seed 004): bidirectional GRU over the beta vector in chunks ->
    the hierarchical VAE's first `groups` latent groups -> coarse image -> img2img."""

    strength: float = 0.75
    groups: int = 15  # latent groups decoded (paper: 15; its latent-size study: 31)
    study_groups: int = 31  # the latent-size study's second size
    chunk: int = 64  # voxels per sequence step
    hidden: int = 128
    layers: int = 1
    rank: int = 64  # rank of the linear read-out from the GRU's states
    fit: DecoderFit = field(default_factory=lambda: DecoderFit(lr=0.001, batch_size=32))
    noise_levels: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)  # x the decoded features' s.d. (noise study)


@dataclass(frozen=True)
class TakagiParams:
    strength: float = 0.75  # img2img strength from the ridge-decoded latent


@dataclass(frozen=True)
class BrainDiffuserParams:
    strength: float = 0.75
    groups: int = 31  # ridge -> this many hierarchical-VAE groups (Brain-Diffuser: VDVAE's first 31)


@dataclass(frozen=True)
class NeuralDiffuserParams:
    """NeuralDiffuser: ridge -> z, c and the image tower's layer features g; img2img from z with
    primary visual feature guidance (`sample.Guide`) on the first `eta` of the reverse steps."""

    strength: float = 0.75  # img2img strength from the decoded z (paper: 0.75)
    eta: float = 0.2  # share of the reverse steps run that are guided (paper: 0.2)
    layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # hooked blocks of the image tower (paper: 2, 4, ..., 12 of 12)
    weights: tuple[float, ...] = (1.5, 1.2, 1.0, 1.0, 1.0, 1.0)  # w_l (paper)
    kappa_candidates: tuple[float, ...] = (0.0, 100.0, 300.0, 1000.0)  # kappa is chosen among these on training data
    select_share: float = 0.15  # training images held out (ridge fit on the rest) to choose kappa
    eta_grid: tuple[float, ...] = (0.1, 0.2, 0.5)  # the kappa x eta study (those held-out scans)
    # "+ guidance" rows (Takagi + guidance is the NeuralDiffuser row itself: the same ridge z, c)
    guided_rows: tuple[str, ...] = ("neuropictor", "brain_diffuser", "cs292f", "gru")


@dataclass(frozen=True)
class Methods:
    """Stage 05 methods (`src/neuropictor/methods/`, one DVC stage each): fit on the training
    split, decode the test split, draw through the shared img2img sampler."""

    rows: tuple[str, ...] = ("takagi", "brain_diffuser", "cs292f", "gru", "neuraldiffuser")  # Table 1's voxel-method rows
    seeds: tuple[int, ...] = (0, 1)  # decoder training (and sampling) seeds for the claims' spread (issue 14: two)
    val_share: float = 0.1  # training images held out for early stopping
    takagi: TakagiParams = field(default_factory=TakagiParams)
    brain_diffuser: BrainDiffuserParams = field(default_factory=BrainDiffuserParams)
    cs292f: CS292FParams = field(default_factory=CS292FParams)
    gru: GRUParams = field(default_factory=GRUParams)
    neuraldiffuser: NeuralDiffuserParams = field(default_factory=NeuralDiffuserParams)


@dataclass(frozen=True)
class Compute:
    """Where and how every training and sampling loop runs (applied through accelerate)."""

    device: str = "auto"  # auto (a GPU if there is one) | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 needs a GPU)
    gradient_checkpointing: bool = False  # recompute NeuroPictor's activations in backward (memory for time)
    grad_accumulation: int = 1  # micro-batches per optimizer step (the global batch and its draws unchanged)
    workers: int = 0  # DataLoader processes streaming training batches from disk (0 = in the main process)
    processes: int = 1  # NeuroPictor training processes (DDP via accelerate's notebook_launcher; one per GPU)
    feature_batch: int = 64  # images per batch in the features stage
    feature_dtype: str = "float32"  # storage of the on-disk features (float16 halves NSD's ~28 GB)


@dataclass(frozen=True)
class Ablations:
    """Notebook 06 (`make ablations`): Table 2's rows on one subject."""

    subject: int = 1  # the paper's Table 2 is on subject 1
    rows: tuple[str, ...] = ("random_init", "cls", "frozen", "full", "wo_finetune", "wo_llmn", "wo_aux", "wo_lsem",
                             "neuropictor")  # keys of neuropictor.ablations.TABLE2
    models: str = "data/ablations"  # the rows' trained models (relative to the project root)
    tables: str = "ablations/tables"  # Table 2 as CSV, Markdown, LaTeX

    def path(self, key: str) -> Path:
        """Absolute path of `models` or `tables`."""
        p = Path(getattr(self, key))
        return p if p.is_absolute() else PROJ_ROOT / p


WORLDS = ("synthetic", "nsd", "generic")
ZSCORE_MODES = ("session", "train", "none")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
METHOD_NAMES = ("takagi", "brain_diffuser", "cs292f", "gru", "neuraldiffuser")  # src/neuropictor/methods/<name>.py


@dataclass(frozen=True)
class Settings:
    seed: int = 0
    world: str = "synthetic"
    smoke: bool = False
    paths: Paths = field(default_factory=Paths)
    synthetic: Synthetic = field(default_factory=Synthetic)
    prep: Prep = field(default_factory=Prep)
    foundation: Foundation = field(default_factory=Foundation)
    encoder: EncoderParams = field(default_factory=EncoderParams)
    neuropictor: NeuroPictorParams = field(default_factory=NeuroPictorParams)
    reconstruction: Reconstruction = field(default_factory=Reconstruction)
    methods: Methods = field(default_factory=Methods)
    ablations: Ablations = field(default_factory=Ablations)
    compute: Compute = field(default_factory=Compute)

    def steps(self, steps: int) -> int:
        """Training steps in force: `foundation.smoke_steps` when `smoke` is on."""
        return min(steps, self.foundation.smoke_steps) if self.smoke else steps

    @property
    def sizes(self) -> WorldSizes:
        """World sizes in force: the smoke sizes when `smoke` is on."""
        return self.synthetic.smoke if self.smoke else self.synthetic.default

    def path(self, key: str) -> Path:
        """Absolute path for a `paths` key."""
        value = getattr(self.paths, key)
        if value is None:
            raise ParamsError(f"paths.{key} is not set in params.yaml; set it to a file or folder.")
        p = Path(value)
        return p if p.is_absolute() else PROJ_ROOT / p


# --------------------------------------------------------------------------- loading
def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(options)}."


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{where} must be a mapping, got {value!r}.")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where} must be a list, got {value!r}.")
        args = typing.get_args(tp)
        inner = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ParamsError(f"{where} must have {len(args)} entries, got {value!r}.")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where} must be true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where} must be an integer, got {value!r}.")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None:
                raise ParamsError(f"{where} is the text {value!r}, not a number: YAML reads an exponent "
                                  f"without a dot (1e-3) as text. Write {number!r} instead.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where} must be a number, got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where} must be a string, got {value!r}.")
        return value
    return value


def _build(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ParamsError(f"Unknown key '{where}.{key}'." + _suggest(key, names))
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    # nested sections given partially keep the defaults of the keys not given
    for f in dataclasses.fields(cls):
        if f.name in kwargs and dataclasses.is_dataclass(hints[f.name]):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            given = data[f.name]
            kwargs[f.name] = dataclasses.replace(default, **{
                k: getattr(kwargs[f.name], k) for k in given
            })
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParamsError(f"Override '{dotted}': '{part}' is not a section.")
    node[parts[-1]] = value


def load_params(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read and validate a params file; `overrides` maps dotted keys to values."""
    path = Path(path) if path is not None else PROJ_ROOT / "params.yaml"
    if not path.is_absolute() and not path.exists():
        path = PROJ_ROOT / path
    if not path.exists():
        raise ParamsError(f"Params file {path} not found. Run from the project root or pass its path.")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(tree, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(tree).__name__}.")
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    try:
        settings = _build(Settings, tree, "params")
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    _validate(settings, path)
    return settings


# Ranges of numeric keys, by dotted-key pattern (fnmatch): (test, what the value must be).
# Checked at load time, before any work starts, so a batch size of 0 cannot train NaNs for
# twenty steps and save them, and a typed-by-hand rate cannot run silently out of range.
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_POSITIVE = (lambda v: v > 0, "greater than 0")
_NON_NEGATIVE = (lambda v: v >= 0, "0 or more")
_SHARE = (lambda v: 0 <= v <= 1, "between 0 and 1")
RANGES: tuple[tuple[str, tuple], ...] = (
    ("seed", _NON_NEGATIVE), ("*.seed", _NON_NEGATIVE),
    ("*.steps", _AT_LEAST_1), ("*.mask_steps", _NON_NEGATIVE), ("*.batch_size", _AT_LEAST_1), ("*.lr", _POSITIVE),
    ("*.hlgn_lr_scale", _POSITIVE), ("*.transform_lr_scale", _POSITIVE),
    ("*.width", _AT_LEAST_1), ("*.*_width", _AT_LEAST_1), ("*.heads", _AT_LEAST_1), ("*.layers", _AT_LEAST_1),
    ("*.depth", _AT_LEAST_1), ("*.*_depth", _AT_LEAST_1), ("*.patch", _AT_LEAST_1), ("*.z_dim", _AT_LEAST_1),
    ("*.embed_dim", _AT_LEAST_1), ("*.max_length", _AT_LEAST_1), ("*.latent_channels", _AT_LEAST_1),
    ("*.norm_groups", _AT_LEAST_1), ("*.channels", _AT_LEAST_1), ("*.resolutions", _AT_LEAST_1),
    ("*.groups", _NON_NEGATIVE),
    ("synthetic.*.n_*", _AT_LEAST_1), ("synthetic.*.trials_per_session", _AT_LEAST_1),
    ("synthetic.*.corpus_maps_per_subject", _AT_LEAST_1), ("*.image_size", (lambda v: v >= 16, "at least 16")),
    ("*.voxel_size_mm", _POSITIVE), ("synthetic.visual_field_deg", _POSITIVE), ("synthetic.signal_psc", _POSITIVE),
    ("synthetic.noise_psc", _NON_NEGATIVE), ("synthetic.snr_range", _POSITIVE),
    ("synthetic.session_offset_psc", _NON_NEGATIVE), ("synthetic.session_gain_sd", _NON_NEGATIVE),
    ("synthetic.anatomy_jitter", _NON_NEGATIVE), ("prep.volume_beta_scale", _POSITIVE),
    ("prep.flatmap_margin", (lambda v: 0 <= v < 0.5, "0 or more and below 0.5")), ("prep.n_workers", _AT_LEAST_1),
    ("prep.min_repeats", _AT_LEAST_1), ("prep.ridge.alphas", _POSITIVE),
    ("prep.ridge.folds", (lambda v: v >= 2, "at least 2")),
    ("foundation.corpus.*", _AT_LEAST_1), ("foundation.vae.object_weight", _NON_NEGATIVE),
    ("*_rate", _SHARE), ("*_share", _SHARE), ("*.ema", (lambda v: 0 <= v < 1, "0 or more and below 1")),
    ("foundation.unet.snr_gamma", _POSITIVE), ("foundation.unet.eval_every", _NON_NEGATIVE),
    ("foundation.unet.eval_captions", _AT_LEAST_1), ("foundation.hvae.sigma", _POSITIVE),
    ("foundation.sample_steps", _AT_LEAST_1), ("*.guidance", _NON_NEGATIVE), ("foundation.smoke_steps", _AT_LEAST_1),
    ("encoder.holdout_corpus_subjects", _AT_LEAST_1), ("neuropictor.lambda_sem", _NON_NEGATIVE),
    ("neuropictor.lambda_low", _NON_NEGATIVE),
    ("reconstruction.alpha", _NON_NEGATIVE), ("reconstruction.alpha_sweep", _NON_NEGATIVE),
    ("reconstruction.ridge_strength", (lambda v: 0 < v <= 1, "above 0 and at most 1")),
    ("reconstruction.n_figure", _AT_LEAST_1),
    ("methods.*.strength", (lambda v: 0 < v <= 1, "above 0 and at most 1")), ("methods.seeds", _NON_NEGATIVE),
    ("methods.*.epochs", _AT_LEAST_1), ("*.patience", _AT_LEAST_1),
    ("methods.val_share", (lambda v: 0 < v < 0.5, "above 0 and below 0.5")), ("methods.*.*.epochs", _AT_LEAST_1),
    ("methods.cs292f.text_tokens", _AT_LEAST_1), ("methods.cs292f.*_weight", _NON_NEGATIVE),
    ("methods.cs292f.edge_threshold", (lambda v: -1 <= v <= 1, "between -1 and 1")),
    ("methods.cs292f.table4_samples", _AT_LEAST_1), ("methods.cs292f.vae_latent", _AT_LEAST_1),
    ("methods.gru.*groups", _AT_LEAST_1), ("methods.gru.chunk", _AT_LEAST_1), ("methods.gru.hidden", _AT_LEAST_1),
    ("methods.gru.rank", _AT_LEAST_1), ("methods.gru.layers", _AT_LEAST_1),
    ("methods.gru.noise_levels", _NON_NEGATIVE),
    ("compute.grad_accumulation", _AT_LEAST_1), ("compute.workers", _NON_NEGATIVE), ("compute.processes", _AT_LEAST_1),
    ("compute.feature_batch", _AT_LEAST_1),
)


def _check_ranges(tree: dict, bad, prefix: str = "") -> None:
    import fnmatch

    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_ranges(value, bad, dotted + ".")
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers:
            continue
        for pattern, (ok, what) in RANGES:
            if fnmatch.fnmatchcase(dotted, pattern):
                wrong = [v for v in numbers if not ok(v)]
                if wrong:
                    shown = value if len(values) == 1 and not isinstance(value, (list, tuple)) else list(values)
                    bad(f"params.{dotted} is {shown!r}; it must be {what}"
                        f"{' (every entry)' if isinstance(value, (list, tuple)) else ''}.")
                break  # the first matching pattern rules


def _validate(s: Settings, path: Path) -> None:
    def bad(msg: str) -> None:
        raise ParamsError(f"{path}: {msg}")

    _check_ranges(as_dict(s), bad)
    for name, sizes in (("default", s.synthetic.default), ("smoke", s.synthetic.smoke)):
        if s.prep.min_repeats > sizes.n_repeats:
            bad(f"params.prep.min_repeats is {s.prep.min_repeats} but the {name} world shows each image only "
                f"{sizes.n_repeats} times (synthetic.{name}.n_repeats): no image would be kept. Lower min_repeats.")
        if sizes.image_size != s.prep.image_size and s.world == "synthetic":
            bad(f"params.synthetic.{name}.image_size ({sizes.image_size}) differs from prep.image_size "
                f"({s.prep.image_size}); the shipped foundation works at 64 px: set both to the same size.")
    if s.prep.flatmap_size % s.encoder.patch:
        bad(f"params.prep.flatmap_size ({s.prep.flatmap_size}) is not a multiple of encoder.patch "
            f"({s.encoder.patch}): the encoder cuts the flatmap into patches. Change one of them.")
    if s.encoder.width % s.encoder.heads or s.encoder.decoder_width % s.encoder.heads:
        bad(f"params.encoder.width ({s.encoder.width}) and decoder_width ({s.encoder.decoder_width}) must be "
            f"multiples of encoder.heads ({s.encoder.heads}).")
    F = s.foundation
    if F.unet.prediction not in ("epsilon", "v_prediction"):
        bad(f"params.foundation.unet.prediction is '{F.unet.prediction}'; use epsilon or v_prediction.")
    if F.unet.zero_terminal_snr and F.unet.prediction != "v_prediction":
        bad("params.foundation.unet.zero_terminal_snr needs prediction: v_prediction (at SNR 0 the noise equals "
            "the noisy latent, so epsilon prediction learns nothing there); set one or the other.")
    if F.clip.width % F.clip.heads:
        bad(f"params.foundation.clip.width ({F.clip.width}) must be a multiple of clip.heads ({F.clip.heads}).")
    if s.prep.image_size % F.clip.patch:
        bad(f"params.foundation.clip.patch ({F.clip.patch}) must divide prep.image_size ({s.prep.image_size}).")
    if any(c % F.vae.norm_groups for c in F.vae.channels):
        bad(f"params.foundation.vae.channels {list(F.vae.channels)} must be multiples of vae.norm_groups "
            f"({F.vae.norm_groups}).")
    if len(F.hvae.groups) != len(F.hvae.resolutions) or sum(F.hvae.groups) < 1:
        bad(f"params.foundation.hvae.groups {list(F.hvae.groups)} must give a count for each of the "
            f"{len(F.hvae.resolutions)} resolutions {list(F.hvae.resolutions)}, at least one group in all.")
    if s.reconstruction.alpha_sweep == ():
        bad("params.reconstruction.alpha_sweep is empty; give at least one control scale, e.g. [0.0, 1.0].")

    if s.world not in WORLDS:
        bad(f"params.world is '{s.world}'; use one of {', '.join(WORLDS)}.")
    if s.prep.zscore not in ZSCORE_MODES:
        bad(f"params.prep.zscore is '{s.prep.zscore}'; use one of {', '.join(ZSCORE_MODES)}.")
    if s.prep.corpus_zscore not in ("vertex", "map"):
        bad(f"params.prep.corpus_zscore is '{s.prep.corpus_zscore}'; use vertex or map.")
    unknown = [x for x in s.prep.subjects if x not in range(1, 9)]
    if unknown:
        bad(f"params.prep.subjects has unknown subject(s) {unknown}; NSD subjects are 1-8.")
    if s.prep.flatmap_size < 8 or s.prep.flatmap_size % 2:
        bad("params.prep.flatmap_size must be an even number >= 8 (64 default, 256 paper).")
    for name, sizes in (("default", s.synthetic.default), ("smoke", s.synthetic.smoke)):
        total = sizes.n_shared + sizes.n_unique_per_subject
        if total * sizes.n_repeats > sizes.trials_per_session * sizes.n_sessions_complete:
            bad(f"params.synthetic.{name}: {total} images x {sizes.n_repeats} repeats do not fit in "
                f"{sizes.n_sessions_complete} sessions of {sizes.trials_per_session} trials; "
                "raise n_sessions_complete or trials_per_session.")
        if sizes.n_sessions_partial > sizes.n_sessions_complete:
            bad(f"params.synthetic.{name}.n_sessions_partial must not exceed n_sessions_complete.")
    if s.neuropictor.encoder_init not in ("pretrained", "random"):
        bad(f"params.neuropictor.encoder_init is '{s.neuropictor.encoder_init}'; use pretrained or random.")
    if s.neuropictor.llmn_map not in ("latent", "features"):
        bad(f"params.neuropictor.llmn_map is '{s.neuropictor.llmn_map}'; use latent or features.")
    if s.neuropictor.llmn_input not in ("raw", "standardised"):
        bad(f"params.neuropictor.llmn_input is '{s.neuropictor.llmn_input}'; use raw (S^r as encoded, the released "
            f"code) or standardised (per feature over the batch).")
    if s.neuropictor.hlgn_hidden_tokens is not None and s.neuropictor.hlgn_hidden_tokens < 1:
        bad(f"params.neuropictor.hlgn_hidden_tokens is {s.neuropictor.hlgn_hidden_tokens}; use a positive count or null.")
    if not 0 <= s.neuropictor.hlgn_dropout < 1:
        bad(f"params.neuropictor.hlgn_dropout is {s.neuropictor.hlgn_dropout}; use a share in [0, 1) (0: none, as released).")
    if s.neuropictor.sem_loss not in ("sum", "mean"):
        bad(f"params.neuropictor.sem_loss is '{s.neuropictor.sem_loss}'; use sum (the paper's text) or mean "
            f"(the released code).")
    if s.neuropictor.encoder_output not in ("full", "cls"):
        bad(f"params.neuropictor.encoder_output is '{s.neuropictor.encoder_output}'; use full or cls.")
    missing = [x for x in s.neuropictor.refine_subjects if x not in s.prep.subjects]
    if missing:
        bad(f"params.neuropictor.refine_subjects {missing} are not in prep.subjects; prepare them first.")
    unknown = [m for m in s.methods.rows if m not in METHOD_NAMES]
    if unknown:
        bad(f"params.methods.rows has unknown method(s) {unknown}; known: {list(METHOD_NAMES)} "
            "(one file each in src/neuropictor/methods/).")
    nd = s.methods.neuraldiffuser
    if len(nd.layers) != len(nd.weights):
        bad(f"params.methods.neuraldiffuser: {len(nd.layers)} layers but {len(nd.weights)} weights; give one weight "
            "per hooked layer.")
    unknown = [m for m in nd.guided_rows if m not in METHOD_NAMES[:-1] + ("neuropictor",)]
    if unknown:
        bad(f"params.methods.neuraldiffuser.guided_rows has unknown row(s) {unknown}; known: "
            f"{list(METHOD_NAMES[:-1]) + ['neuropictor']}.")
    if not 0 < nd.eta <= 1 or any(not 0 < e <= 1 for e in nd.eta_grid):
        bad("params.methods.neuraldiffuser.eta and eta_grid must lie in (0, 1] (shares of the reverse steps).")
    if 0.0 not in nd.kappa_candidates or min(nd.kappa_candidates) < 0:
        bad("params.methods.neuraldiffuser.kappa_candidates must be non-negative and include 0 (the ablation).")
    too_many = {k: v for k, v in (("gru.groups", s.methods.gru.groups), ("gru.study_groups", s.methods.gru.study_groups),
                                  ("brain_diffuser.groups", s.methods.brain_diffuser.groups))
                if v > sum(s.foundation.hvae.groups)}
    if too_many:
        bad(f"params.methods: {too_many} "
            f"exceed the hierarchical VAE's {sum(s.foundation.hvae.groups)} latent groups (foundation.hvae.groups).")
    if s.ablations.subject not in s.prep.subjects:
        bad(f"params.ablations.subject {s.ablations.subject} is not in prep.subjects {list(s.prep.subjects)}.")
    c = s.compute
    for key, value, options in (("device", c.device, DEVICES), ("precision", c.precision, PRECISIONS),
                                ("feature_dtype", c.feature_dtype, ("float32", "float16"))):
        if value not in options:
            bad(f"params.compute.{key} is '{value}'; use one of {', '.join(options)}.")
    if c.precision == "fp16" and c.device == "cpu":
        bad("params.compute.precision fp16 needs a GPU (compute.device cuda or auto); on CPU use fp32 or bf16.")
    for name, loop in (("pretrain", s.neuropictor.pretrain), ("refine", s.neuropictor.refine)):
        if loop.batch_size % (c.grad_accumulation * c.processes):
            bad(f"params.neuropictor.{name}.batch_size ({loop.batch_size}) must divide by compute.processes x "
                f"compute.grad_accumulation ({c.processes} x {c.grad_accumulation}): each optimizer step still sees "
                "the whole batch, split equally over processes and micro-batches.")
    if s.world == "generic" and s.paths.generic_input is None:
        bad("world is 'generic' but paths.generic_input is not set; point it at your .npz/.h5/.mat.")


def as_dict(settings: Settings) -> dict:
    """Plain nested dict (for display in notebooks and JSON records)."""
    return dataclasses.asdict(settings)


def notebook_overrides(overrides: dict, smoke: bool | None) -> dict:
    """A notebook's parameters as params overrides: its dotted keys, plus `smoke` when set."""
    return dict(overrides, **({} if smoke is None else {"smoke": smoke}))


def notebook_setup(params_file: str | Path, smoke: bool | None, overrides: dict, figures: str,
                   show: tuple[str, ...] = ("seed", "world", "smoke")) -> tuple[Settings, Path]:
    """What every notebook's settings cell does: load params (the notebook's parameters cell
    may override `smoke` and any dotted key), print the sections `show`, apply `compute:`
    (`compute.configure`) and make the notebook's figure folder. Returns (settings, figure folder)."""
    cfg = load_params(params_file, notebook_overrides(overrides, smoke))
    from .compute import configure

    configure(cfg.compute)  # device / precision of every training and sampling loop in this kernel
    fig_dir = cfg.path("figures") / figures
    fig_dir.mkdir(parents=True, exist_ok=True)
    settings = as_dict(cfg)
    print(yaml.safe_dump({k: settings[k] for k in show}, sort_keys=False))
    return cfg, fig_dir
