"""Paper-world loaders: pretrained weights from local files only (nothing is downloaded).

Every loader takes a local path and, when it is missing, stops with the path it expected and
where to get the weights on a machine that has network access.

| what                         | loader                  | format on disk                                   |
|------------------------------|-------------------------|--------------------------------------------------|
| Stable Diffusion 2.1         | `load_diffusion`        | a diffusers pipeline folder (model_index.json)   |
| OpenCLIP ViT-H/14, ViT-L/14  | `load_openclip`         | an open_clip checkpoint (.bin / .pt / .safetensors) |
| AlexNet, Inception v3, EfficientNet-B1 | `load_torchvision` | a torchvision state dict (.pth)            |
| SwAV ResNet-50               | `load_swav`             | the SwAV release's state dict (`module.` prefixes) |
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..io import DataError

SOURCES = {
    "sd21": "the diffusers folder of stabilityai/stable-diffusion-2-1 (e.g. `huggingface-cli download "
            "stabilityai/stable-diffusion-2-1 --local-dir PATH` on a machine with network access)",
    "ViT-H-14": "open_clip's laion2b_s32b_b79k checkpoint for ViT-H-14 (open_clip_pytorch_model.bin)",
    "ViT-L-14": "OpenAI's ViT-L/14 CLIP checkpoint as open_clip loads it (ViT-L-14.pt)",
    "alexnet": "torchvision's alexnet-owt-7be5be79.pth (AlexNet_Weights.IMAGENET1K_V1)",
    "inception_v3": "torchvision's inception_v3_google-0cc3c7bd.pth (Inception_V3_Weights.DEFAULT)",
    "efficientnet_b1": "torchvision's efficientnet_b1-c27df63c.pth (EfficientNet_B1_Weights.DEFAULT)",
    "swav": "the SwAV release's swav_800ep_pretrain.pth.tar (facebookresearch/swav)",
}


def _require(path: str | Path, key: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"Missing weights: expected {path}. Get {SOURCES[key]} and put it there "
                        "(this project never downloads at run time).")
    return path


def load_diffusion(path: str | Path, dtype: torch.dtype = torch.float32):
    """A Stable-Diffusion-style pipeline folder -> diffusers StableDiffusionPipeline (offline)."""
    from diffusers import StableDiffusionPipeline

    path = _require(path, "sd21")
    if not (path / "model_index.json").exists():
        raise DataError(f"{path} is not a diffusers pipeline folder (no model_index.json). Expected "
                        f"{SOURCES['sd21']}.")
    return StableDiffusionPipeline.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                   safety_checker=None, requires_safety_checker=False)


# OpenAI's CLIP weights were trained with QuickGELU, but open_clip's "ViT-L-14" config uses
# nn.GELU (open_clip itself pairs its 'openai' tag with quick_gelu=True).
QUICK_GELU = {"ViT-L-14"}


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive, such as OpenAI's own ViT-L-14.pt release."""
    import zipfile

    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:  # as torch.serialization._is_torchscript_zip
        return any(name.split("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def load_openclip(arch: str, checkpoint: str | Path, quick_gelu: bool | None = None):
    """An OpenCLIP model of architecture `arch` with weights from a local checkpoint file.

    `quick_gelu` defaults to True for the OpenAI-weight architectures in QUICK_GELU. A TorchScript
    checkpoint (OpenAI's release) cannot be read with torch.load(weights_only=True), so only
    for such a file open_clip reads it with weights_only=False (it is then torch.jit.load-ed).
    Returns (model, preprocess, tokenizer) as open_clip gives them."""
    import open_clip

    key = arch if arch in SOURCES else "ViT-L-14"
    checkpoint = _require(checkpoint, key)
    quick_gelu = arch in QUICK_GELU if quick_gelu is None else quick_gelu
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch, pretrained=str(checkpoint), force_quick_gelu=quick_gelu,
        weights_only=not _is_torchscript(checkpoint))
    return model.eval(), preprocess, open_clip.get_tokenizer(arch)


TORCHVISION = {"alexnet": "alexnet", "inception_v3": "inception_v3", "efficientnet_b1": "efficientnet_b1"}


def _state_dict(path: Path) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a state dict (got {type(obj).__name__}).")
    return obj


def load_torchvision(name: str, path: str | Path) -> torch.nn.Module:
    """AlexNet / Inception v3 / EfficientNet-B1 with ImageNet weights from a local .pth."""
    import torchvision

    if name not in TORCHVISION:
        raise ValueError(f"unknown network '{name}'; known: {', '.join(TORCHVISION)}")
    path = _require(path, name)
    # torchvision's inception_v3(weights=...) also sets transform_input=True: the Google weights
    # expect (x - 0.5) / 0.5 inputs and the model converts ImageNet-normalised input to that.
    kwargs = ({"aux_logits": True, "init_weights": False, "transform_input": True}
              if name == "inception_v3" else {})
    model = getattr(torchvision.models, TORCHVISION[name])(weights=None, **kwargs)
    try:
        model.load_state_dict(_state_dict(path))
    except RuntimeError as err:
        raise DataError(f"{path} does not match torchvision's {name}: {str(err)[:300]}") from err
    return model.eval()


def load_swav(path: str | Path) -> torch.nn.Module:
    """SwAV ResNet-50 trunk from the SwAV release checkpoint (keys prefixed 'module.')."""
    import torchvision

    path = _require(path, "swav")
    state = {k.removeprefix("module."): v for k, v in _state_dict(path).items()}
    state = {k: v for k, v in state.items() if not k.startswith(("projection_head", "prototypes"))}
    model = torchvision.models.resnet50(weights=None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
        raise DataError(f"{path} does not match a ResNet-50 trunk: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    model.fc = torch.nn.Identity()
    return model.eval()
