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
    "sd21": "the diffusers folder of stabilityai/stable-diffusion-2-1-base (e.g. `huggingface-cli download "
            "stabilityai/stable-diffusion-2-1-base --local-dir PATH` on a machine with network access)",
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
    try:
        return StableDiffusionPipeline.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                       safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise DataError(f"{path}: the diffusion pipeline cannot be loaded ({type(err).__name__}: {str(err)[:300]}); "
                        f"a file may be truncated or missing. Restore the folder ({SOURCES['sd21']} in the paper "
                        "world; `git checkout -- foundation/weights` or `make foundation` in the synthetic one).") from err


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


# ------------------------------------------------------------------ the paper's metric networks
WEIGHT_FILES = {  # file names under paths.weights (as their releases name them)
    "alexnet": "alexnet-owt-7be5be79.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth",
    "efficientnet_b1": "efficientnet_b1-c27df63c.pth",
    "swav": "swav_800ep_pretrain.pth.tar",
    "ViT-L-14": "ViT-L-14.pt",
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _normalised(fn, mean, std):
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    @torch.no_grad()
    def features(x: torch.Tensor) -> torch.Tensor:
        return fn((x - m.to(x)) / s.to(x))
    return features


def _layer(model: torch.nn.Module, node: str):
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(model, return_nodes={node: "out"}).eval()
    return lambda x: extractor(x)["out"]


def paper_metric_networks(weights: str | Path, only: tuple[str, ...] | None = None):
    """MindEye's metric networks (REFERENCE.md) from local files in `weights` (see WEIGHT_FILES):
    AlexNet features.4 / features.11, Inception v3 avgpool, OpenAI CLIP ViT-L/14 image
    embedding, EfficientNet-B1 avgpool, SwAV ResNet-50 avgpool. `only` limits the metrics."""
    from ..metrics import MetricNetworks

    weights = Path(weights)
    wanted = set(only or ("AlexNet(2)", "AlexNet(5)", "Inception", "CLIP", "EffNet-B", "SwAV"))
    feats = {}
    if wanted & {"AlexNet(2)", "AlexNet(5)"}:
        alex = load_torchvision("alexnet", weights / WEIGHT_FILES["alexnet"])
        feats["AlexNet(2)"] = _normalised(_layer(alex, "features.4"), IMAGENET_MEAN, IMAGENET_STD)
        feats["AlexNet(5)"] = _normalised(_layer(alex, "features.11"), IMAGENET_MEAN, IMAGENET_STD)
    if "Inception" in wanted:
        inc = load_torchvision("inception_v3", weights / WEIGHT_FILES["inception_v3"])
        feats["Inception"] = _normalised(_layer(inc, "avgpool"), IMAGENET_MEAN, IMAGENET_STD)
    if "EffNet-B" in wanted:
        eff = load_torchvision("efficientnet_b1", weights / WEIGHT_FILES["efficientnet_b1"])
        feats["EffNet-B"] = _normalised(_layer(eff, "avgpool"), IMAGENET_MEAN, IMAGENET_STD)
    if "SwAV" in wanted:
        feats["SwAV"] = _normalised(load_swav(weights / WEIGHT_FILES["swav"]), IMAGENET_MEAN, IMAGENET_STD)
    if "CLIP" in wanted:
        clip, _, _ = load_openclip("ViT-L-14", weights / WEIGHT_FILES["ViT-L-14"])
        feats["CLIP"] = _normalised(clip.encode_image, OPENAI_MEAN, OPENAI_STD)
    return MetricNetworks(features={k: v for k, v in feats.items() if k in wanted}, stand_in=False)
