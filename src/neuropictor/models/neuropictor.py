"""NeuroPictor, assembled: fMRI encoder -> HLGN (semantics) + LLMN (structure) -> frozen UNet.

    S^r   = E(S)                                   (Eq. 1, models/fmri_encoder.py)
    F~txt = E_txt(S^r),  F^sem = F~txt + F^au      (Eq. 2, 4; HLGN, Sec. 3.2)
    F_0^l = E_ft(S^r)                              (Eq. 5; feature transformation, Sec. 3.3)
    F^l   = E_U(F_0^l)                             (Eq. 6; trainable copy of the UNet encoder)
    F~l   = F_sd + alpha * Z(F^l)                  (Eq. 7; zero convs, added to mid + decoder)
    L     = L_dif + lambda * L_sem                 (Eq. 8, 9; Sec. 3.4)

The manipulation network E_U with its zero convs Z is diffusers' `ControlNetModel` built
from the frozen UNet (its encoder copied, every output through a zero-initialised 1x1
conv). Its conditioning embedding is reduced to one conv pair without downsampling,
because F_0^l already has the latent's shape (c x h x w); the embedding's last conv is
zero-initialised too, so at initialisation the LLMN adds exactly nothing.

The encoder is any module with `encode(maps, output) -> (n, L_r, d_r)`, `tokens(output)`
(L_r) and `width` (d_r), as `fmri_encoder.FlatmapMAE` has.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..train import BatchDraws
from .foundation import diffusion_target


SEM_LOSSES = ("sum", "mean")


@dataclass(frozen=True)
class ModelSwitches:
    """The ablation switches of Table 2 (and the loss weights of Sec. 3.4)."""
    encoder_output: str = "full"  # "full" (all L_r tokens) | "cls" (the guide token only)
    encoder_trainable: bool = True  # False = the "frozen encoder" row
    use_llmn: bool = True  # False = "w/o LLMN": semantics only
    use_aux: bool = True  # False = "w/o auxiliary encoder" (and multi-subject pretraining)
    lambda_sem: float = 0.1  # Eq. 9; 0 = "w/o L_sem"
    sem_loss: str = "mean"  # Eq. 3 reduced over the width d_T: "sum" (the paper's text) | "mean" (the released code)
    empty_rate: float = 0.05  # share of F^sem replaced by the empty caption (for CFG)
    # weight of L_low, E_ft's map F_0^l regressed onto the stimulus's latent z0 (element-wise
    # MSE); not in the paper or the released code (0), where E_ft learns through L_dif alone
    lambda_low: float = 0.0

    def __post_init__(self):
        if self.encoder_output not in ("full", "cls"):
            raise ValueError(f"encoder_output must be 'full' or 'cls', got {self.encoder_output!r}")
        if self.lambda_sem < 0:
            raise ValueError(f"lambda_sem must be >= 0, got {self.lambda_sem}")
        if self.lambda_low < 0:
            raise ValueError(f"lambda_low must be >= 0, got {self.lambda_low}")
        if self.sem_loss not in SEM_LOSSES:
            raise ValueError(f"sem_loss must be one of {SEM_LOSSES}, got {self.sem_loss!r}")
        if not 0 <= self.empty_rate < 1:
            raise ValueError(f"empty_rate must be in [0, 1), got {self.empty_rate}")


def _token_convs(tokens_in: int, hidden: int, tokens_out: int) -> nn.Sequential:
    """Two 1-D convs over the token axis ((n, L, d): tokens are Conv1d's channels)."""
    return nn.Sequential(nn.Conv1d(tokens_in, hidden, 1), nn.GELU(), nn.Conv1d(hidden, tokens_out, 1))


def _mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))


class HLGN(nn.Module):
    """High-level guiding network (Sec. 3.2): S^r (n, L_r, d_r) -> F~txt, F^sem (n, L_T, d_T).

    `layer_norm` is the released code's layout (a LayerNorm ends each branch; the auxiliary
    branch's zero conv has kernel 3); without it, this world's (no norm, kernel 1).
    `dropout`: share of S^r's numbers zeroed (in training only) before both branches read it;
    0 as released."""

    def __init__(self, L_r: int, d_r: int, L_T: int, d_T: int, hidden_tokens: int | None = None,
                 use_aux: bool = True, hidden_dim: int | None = None, layer_norm: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"HLGN dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        ht = hidden_tokens or max(1, (L_r + L_T) // 2)
        hd = hidden_dim or max(d_r, d_T)
        norm = [nn.LayerNorm(d_T)] if layer_norm else []
        # E_txt (Eq. 2): token convs shrink L_r to L_T, an MLP maps d_r to the text space d_T
        self.fmri_to_text = nn.Sequential(_token_convs(L_r, ht, L_T), _mlp(d_r, hd, d_T), *norm)
        self.aux = None
        if use_aux:
            # E_au: same shape, plus a zero 1-D conv so F^au = 0 at the start (Eq. 4)
            k = 3 if layer_norm else 1
            zero = nn.Conv1d(L_T, L_T, k, padding=k // 2)
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)
            norm = [nn.LayerNorm(d_T)] if layer_norm else []
            self.aux = nn.Sequential(_token_convs(L_r, ht, L_T), _mlp(d_r, hd, d_T), *norm, zero)

    def forward(self, S_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """S^r (n, L_r, d_r) -> (F~txt, F^sem), each (n, L_T, d_T)."""
        S_r = self.dropout(S_r)
        F_txt = self.fmri_to_text(S_r)
        F_sem = F_txt + self.aux(S_r) if self.aux is not None else F_txt  # Eq. 4
        return F_txt, F_sem


LLMN_INPUTS = ("raw", "standardised")


class Standardise(nn.Module):
    """S^r (n, L_r, d_r) standardised per feature (token x dim) over the batch: BatchNorm1d
    without affine parameters, running statistics at evaluation. What differs between scans
    then reaches E_ft at unit scale instead of riding on what every scan shares (the
    encoder's positional part), which otherwise makes F_0^l a near-constant bias."""

    def __init__(self, L_r: int, d_r: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(L_r * d_r, affine=False)

    def forward(self, S_r: torch.Tensor) -> torch.Tensor:
        return self.norm(S_r.flatten(1)).reshape(S_r.shape)


class FeatureTransform(nn.Module):
    """E_ft (Eq. 5): S^r (n, L_r, d_r) -> F_0^l (n, c, h, w), the latent's shape.

    Token convs mix the L_r tokens into c channels; an MLP over the d_r dims makes h * w
    positions; a reshape makes the map."""

    def __init__(self, L_r: int, d_r: int, channels: int, side: int | tuple[int, int],
                 hidden_tokens: int | None = None, hidden_dim: int | None = None):
        super().__init__()
        self.h, self.w = (side, side) if isinstance(side, int) else tuple(side)
        self.channels = channels
        hw = self.h * self.w
        self.token_convs = _token_convs(L_r, hidden_tokens or max(1, (L_r + channels) // 2), channels)
        self.mlp = _mlp(d_r, hidden_dim or hw, hw)

    def forward(self, S_r: torch.Tensor) -> torch.Tensor:
        x = self.mlp(self.token_convs(S_r))  # (n, c, h * w)
        return x.reshape(len(x), self.channels, self.h, self.w)


class FeatureMapTransform(nn.Module):
    """E_ft as the released code builds it: S^r (n, L_r, d_r) -> F_0^l (n, C, h, w) at the
    UNet's first width C (SD-2.1: 320 x 64 x 64). Token convs L_r -> 2 L_r -> C, a Linear
    d_r -> h * w with SiLU, and a zero-initialised Conv1d(C, C, 3), so F_0 starts at zero."""

    def __init__(self, L_r: int, d_r: int, channels: int, side: int | tuple[int, int]):
        super().__init__()
        self.h, self.w = (side, side) if isinstance(side, int) else tuple(side)
        self.channels = channels
        self.token_convs = _token_convs(L_r, 2 * L_r, channels)
        self.linear = nn.Sequential(nn.Linear(d_r, self.h * self.w), nn.SiLU())
        self.zero = nn.Conv1d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.zero.weight)
        nn.init.zeros_(self.zero.bias)

    def forward(self, S_r: torch.Tensor) -> torch.Tensor:
        x = self.zero(self.linear(self.token_convs(S_r)))  # (n, C, h * w)
        return x.reshape(len(x), self.channels, self.h, self.w)


LLMN_MAPS = ("latent", "features")


class LLMN(nn.Module):
    """Low-level manipulation network (Sec. 3.3): feature transformation + a ControlNet copy
    of the UNet encoder. Returns the residuals for the frozen UNet's decoder and middle.

    `layout` (params `neuropictor.llmn_map`): "latent" (this world's choice) makes F_0^l the
    latent's shape and feeds it through a one-step conditioning embedding; "features" (the
    released code) makes it the UNet's first width (320 x 64 x 64 for SD-2.1) and adds it
    right after the copy's first input block (conv_in): the copy's image-hint embedding is
    then unused (an identity)."""

    def __init__(self, unet, L_r: int, d_r: int, embedding_channels: int | None = None,
                 hidden_tokens: int | None = None, hidden_dim: int | None = None, layout: str = "latent",
                 transform_input: str = "raw"):
        from diffusers import ControlNetModel

        super().__init__()
        if layout not in LLMN_MAPS:
            raise ValueError(f"LLMN map (params neuropictor.llmn_map) must be one of {LLMN_MAPS}, got {layout!r}")
        if transform_input not in LLMN_INPUTS:
            raise ValueError(f"LLMN input (params neuropictor.llmn_input) must be one of {LLMN_INPUTS}, "
                             f"got {transform_input!r}")
        # what E_ft reads: S^r as the encoder gives it (the released code) or standardised
        self.input_norm = Standardise(L_r, d_r) if transform_input == "standardised" else nn.Identity()
        c, side = unet.config.in_channels, unet.config.sample_size
        width = unet.config.block_out_channels[0]
        if layout == "features":
            self.feature_transform = FeatureMapTransform(L_r, d_r, width, side)
            self.manipulator = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,),
                                                         conditioning_channels=1)
            self.manipulator.controlnet_cond_embedding = nn.Identity()
        else:
            self.feature_transform = FeatureTransform(L_r, d_r, c, side, hidden_tokens, hidden_dim)
            # one entry = conv_in + zero conv_out, no stride-2 blocks: F_0^l is already at latent size
            self.manipulator = ControlNetModel.from_unet(
                unet, conditioning_embedding_out_channels=(embedding_channels or width,), conditioning_channels=c)

    def forward(self, z_t: torch.Tensor, t, F_sem: torch.Tensor, S_r: torch.Tensor,
                alpha: float = 1.0, F0: torch.Tensor | None = None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """-> (down residuals, one per UNet skip connection; mid residual), times alpha (Eq. 7).
        F0: F_0^l if the caller has computed it already (`feature_map(S_r)`)."""
        F0 = self.feature_map(S_r) if F0 is None else F0  # Eq. 5
        down, mid = self.manipulator(z_t, t, encoder_hidden_states=F_sem, controlnet_cond=F0,
                                     conditioning_scale=alpha, return_dict=False)  # Eq. 6-7
        return tuple(down), mid

    def feature_map(self, S_r: torch.Tensor) -> torch.Tensor:
        """F_0^l (Eq. 5) from S^r, through the input standardisation where there is one."""
        return self.feature_transform(self.input_norm(S_r))


class NeuroPictor(nn.Module):
    """The whole fMRI-to-image model around a frozen text-to-image UNet.

    encoder: fMRI encoder (see module docstring); unet: diffusers `UNet2DConditionModel`
    (frozen here); empty_states: the text encoder's states of the empty caption (1, L_T, d_T);
    noise_scheduler: the DDPM scheduler that defines training's forward process;
    hlgn_hidden_tokens, hlgn_layer_norm, hlgn_dropout, llmn_map, llmn_input: the layout choices
    where this world and the released code differ (params `neuropictor.hlgn_*`, `neuropictor.llmn_*`).
    """

    def __init__(self, encoder: nn.Module, unet, empty_states: torch.Tensor, noise_scheduler,
                 switches: ModelSwitches = ModelSwitches(), hidden_tokens: int | None = None,
                 hidden_dim: int | None = None, hlgn_hidden_tokens: int | None = None,
                 hlgn_layer_norm: bool = False, llmn_map: str = "latent", llmn_input: str = "raw",
                 hlgn_dropout: float = 0.0):
        super().__init__()
        if empty_states.dim() == 2:
            empty_states = empty_states[None]
        if empty_states.dim() != 3 or len(empty_states) != 1:
            raise ValueError(f"empty_states must be (1, L_T, d_T); got {tuple(empty_states.shape)}")
        if empty_states.shape[-1] != unet.config.cross_attention_dim:
            raise ValueError(f"empty_states have d_T = {empty_states.shape[-1]} but the UNet's "
                             f"cross_attention_dim is {unet.config.cross_attention_dim}")
        self.switches = switches
        self.noise_scheduler = noise_scheduler
        L_r, d_r = encoder.tokens(switches.encoder_output), encoder.width
        _, L_T, d_T = empty_states.shape
        if hasattr(encoder, "freeze_decoder"):  # the MAE's decoder has no part in decoding images
            encoder.freeze_decoder()
        self.encoder = encoder if switches.encoder_trainable else encoder.requires_grad_(False).eval()
        self.hlgn = HLGN(L_r, d_r, L_T, d_T, hlgn_hidden_tokens or hidden_tokens, use_aux=switches.use_aux,
                         hidden_dim=hidden_dim, layer_norm=hlgn_layer_norm, dropout=hlgn_dropout)
        # the LLMN copies the UNet's encoder weights, so build it before anything changes them
        self.llmn = (LLMN(unet, L_r, d_r, layout=llmn_map, transform_input=llmn_input)
                     if switches.use_llmn else None)
        if switches.lambda_low and llmn_map != "latent":
            raise ValueError(f"lambda_low (params neuropictor.lambda_low = {switches.lambda_low}) regresses F_0^l "
                             f"onto the latent, which needs llmn_map 'latent' (got {llmn_map!r}); set it to 0")
        self.unet = unet.requires_grad_(False).eval()
        self.register_buffer("empty_states", empty_states.detach().clone())

    def enable_gradient_checkpointing(self) -> "NeuroPictor":
        """Recompute activations in the backward pass instead of keeping them (params
        `compute.gradient_checkpointing`): the frozen UNet's and the LLMN's blocks (diffusers'
        own switch) and the encoder's transformer layers. Same loss and gradients, less
        memory, more time."""
        self.unet.enable_gradient_checkpointing()
        if self.llmn is not None:
            self.llmn.manipulator.enable_gradient_checkpointing()
        if hasattr(self.encoder, "gradient_checkpointing"):
            self.encoder.gradient_checkpointing = True
        return self

    def train(self, mode: bool = True):
        """The frozen parts stay in eval mode whatever `fit` asks."""
        super().train(mode)
        self.unet.eval()
        if not self.switches.encoder_trainable:
            self.encoder.eval()
        return self

    # ------------------------------------------------------------------ conditions
    def conditions(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """maps -> (S^r (n, L_r, d_r), F~txt (n, L_T, d_T), F^sem (n, L_T, d_T))."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.switches.encoder_trainable):
            S_r = self.encoder.encode(maps, output=self.switches.encoder_output)  # Eq. 1
        F_txt, F_sem = self.hlgn(S_r)
        return S_r, F_txt, F_sem

    def eps(self, z_t: torch.Tensor, t, S_r: torch.Tensor, F_sem: torch.Tensor,
            alpha: float = 1.0, F0: torch.Tensor | None = None) -> torch.Tensor:
        """Noise prediction of the frozen UNet under F^sem, manipulated by the LLMN (Eq. 7).

        alpha = 0 (or no LLMN) is the semantic-only model; the LLMN is then not run. F0: the
        LLMN's map F_0^l where the caller has it already."""
        residuals = {}
        if self.llmn is not None and alpha != 0:
            down, mid = self.llmn(z_t, t, F_sem, S_r, alpha, F0=F0)
            residuals = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
        return self.unet(z_t, t, encoder_hidden_states=F_sem, **residuals).sample

    # ------------------------------------------------------------------ training
    def semantic_loss(self, F_txt: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
        """Eq. 3. `switches.sem_loss` "sum": as the paper writes it, the squared L2 norm of
        each token's error (a sum over the width d_T), averaged over tokens and samples;
        "mean": as the released code computes it, the element-wise mean squared error, i.e.
        the same loss divided by d_T (lambda effectively d_T times smaller)."""
        err = (F_txt - text_states.to(F_txt)).pow(2)
        return err.sum(-1).mean() if self.switches.sem_loss == "sum" else err.mean()

    def forward(self, maps: torch.Tensor, z0: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
        """L = L_dif + lambda * L_sem (Eq. 8-9) [+ lambda_low * L_low] on one batch: maps,
        latents z0 (n, c, h, w) scaled by the VAE's factor, caption states (n, L_T, d_T). A
        forward (not only a method) so `accelerate`'s DDP wrapper syncs its gradients."""
        sw = self.switches
        S_r, F_txt, F_sem = self.conditions(maps)
        # a sample's draws are the same whatever the number of processes (DDP matches 1 process)
        draws = BatchDraws(len(z0), z0.device)
        # classifier-free guidance: only the semantic condition is dropped; the LLMN keeps S^r
        drop = draws.rand() < sw.empty_rate
        F_sem = torch.where(drop[:, None, None], self.empty_states.to(F_sem), F_sem)
        noise = draws.randn(*z0.shape[1:]).to(z0)
        t = draws.randint(self.noise_scheduler.config.num_train_timesteps)
        z_t = self.noise_scheduler.add_noise(z0, noise, t)
        # Eq. 8, written for epsilon; with a v-prediction UNet (SD-2.1) the target is the velocity
        # L_low (this world's addition): E_ft's map regressed onto the clean latent it should lay out
        F0 = self.llmn.feature_map(S_r) if sw.lambda_low and self.llmn is not None else None
        l_dif = F.mse_loss(self.eps(z_t, t, S_r, F_sem, F0=F0), diffusion_target(self.noise_scheduler, z0, noise, t))
        loss, l_sem, l_low = l_dif, None, None
        if sw.lambda_sem:  # skipped at 0, so missing / NaN captions cannot leak in
            l_sem = self.semantic_loss(F_txt, text_states)  # Eq. 3
            loss = loss + sw.lambda_sem * l_sem  # Eq. 9
        if F0 is not None:
            l_low = F.mse_loss(F0, z0.to(F0))
            loss = loss + sw.lambda_low * l_low
        # the terms of the last batch, for the training log (L_sem / L_low only where they are on)
        self.loss_terms = {"L_dif": l_dif.detach(), **({"L_sem": l_sem.detach()} if l_sem is not None else {}),
                           **({"L_low": l_low.detach()} if l_low is not None else {})}
        return loss

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """batch = (maps, z0, text_states) -> scalar loss."""
        return self(*batch)

    # ------------------------------------------------------------------ checkpoints
    TRAINABLE = ("encoder.", "hlgn.", "llmn.")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder, HLGN and LLMN weights: everything but the frozen UNet (and the empty-caption
        states, which come from the text encoder). The encoder is kept even when frozen, so
        a checkpoint is the whole fMRI side."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.TRAINABLE)}

    def load_trainable(self, state: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
        """Load a `trainable_state_dict`. strict=False allows missing keys (returned), e.g.
        the auxiliary encoder when refining from a multi-subject pretraining without it."""
        expected = set(self.trainable_state_dict())
        unexpected = sorted(set(state) - expected)
        missing = sorted(expected - set(state))
        if unexpected or (strict and missing):
            raise ValueError(f"checkpoint does not fit this model: unexpected {unexpected[:5]}"
                             f"{'...' if len(unexpected) > 5 else ''}, missing {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}. Were both built with the same "
                             f"ModelSwitches and sizes?")
        self.load_state_dict(state, strict=False)
        return missing


def neuropictor_loss(model: NeuroPictor, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`loss_fn` for `neuropictor.train.fit`: batch = (maps, z0, text_states) -> (L, its terms
    {"L_dif", "L_sem"}), so the history logs L_dif and L_sem apart (L_sem where lambda > 0).
    `model` may be wrapped (DDP): the terms are read from the module itself."""
    loss = model(*batch)
    return loss, getattr(model, "module", model).loss_terms
