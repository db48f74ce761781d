"""Paper-world loaders (neuropictor.models.pretrained) on files of the real formats, written here.

Nothing is downloaded: every checkpoint is a randomly initialised model of the right architecture
(or, for CLIP and Stable Diffusion, a tiny one of the same family) saved the way its release is."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from neuropictor.io import DataError
from neuropictor.models import pretrained
from neuropictor.models.pretrained import load_diffusion, load_openclip, load_swav, load_torchvision

TORCHVISION_FILES = {  # the release file names that torchvision's DEFAULT weights download
    "alexnet": "alexnet-owt-7be5be79.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth",
    "efficientnet_b1": "efficientnet_b1-c27df63c.pth",
}


def _build(name: str) -> torch.nn.Module:
    kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def _first_param(model: torch.nn.Module) -> str:
    return next(k for k, _ in model.named_parameters())


def _assert_same_state(model: torch.nn.Module, state: dict, skip: tuple[str, ...] = ()) -> None:
    got = model.state_dict()
    keys = [k for k in state if not k.startswith(skip)]
    assert keys and set(keys) <= set(got)
    for k in keys:
        assert torch.equal(got[k], state[k]), k


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
    """{name: (path, state dict)}: each network with one parameter perturbed, saved as a state dict."""
    root = tmp_path_factory.mktemp("torchvision")
    out = {}
    torch.manual_seed(0)
    for name, filename in TORCHVISION_FILES.items():
        model = _build(name)
        key = _first_param(model)
        before = model.get_parameter(key).detach().clone()
        with torch.no_grad():
            model.get_parameter(key).add_(0.5)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.testing.assert_close(state[key], before + 0.5)
        path = root / filename
        torch.save(model.state_dict(), path)
        out[name] = (path, state)
    return out


@pytest.mark.parametrize("name", list(TORCHVISION_FILES))
def test_load_torchvision_round_trip(name, torchvision_files):
    path, state = torchvision_files[name]
    model = load_torchvision(name, path)
    _assert_same_state(model, state)  # every tensor, the perturbed one (+0.5) included
    assert not model.training and not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", list(TORCHVISION_FILES))
def test_load_torchvision_equals_torchvision_pretrained_builder(name, torchvision_files, monkeypatch):
    """Given the same weights file, the loader's network computes what torchvision's
    `<name>(weights=DEFAULT)` does (e.g. Inception's transform_input=True)."""
    import torchvision.models._api as api

    path, _ = torchvision_files[name]
    urls = []

    def fake_download(url, *args, **kwargs):  # instead of torch.hub's download
        urls.append(url)
        return torch.load(path, map_location="cpu", weights_only=True)

    monkeypatch.setattr(api, "load_state_dict_from_url", fake_download)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    reference = getattr(torchvision.models, name)(weights=weights).eval()
    assert [Path(u).name for u in urls] == [TORCHVISION_FILES[name]]
    assert TORCHVISION_FILES[name] in pretrained.SOURCES[name]

    model = load_torchvision(name, path)
    x = torch.randn(2, 3, 80, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    if name == "inception_v3":
        assert model.transform_input and reference.transform_input


def test_load_torchvision_wrong_architecture(torchvision_files):
    alexnet_path, _ = torchvision_files["alexnet"]
    with pytest.raises(DataError, match="does not match torchvision's efficientnet_b1"):
        load_torchvision("efficientnet_b1", alexnet_path)
    with pytest.raises(DataError, match=str(alexnet_path)):
        load_torchvision("inception_v3", alexnet_path)


@pytest.mark.parametrize("name", list(TORCHVISION_FILES))
def test_load_torchvision_missing_file(name, tmp_path):
    path = tmp_path / "nowhere" / TORCHVISION_FILES[name]
    with pytest.raises(DataError) as err:
        load_torchvision(name, path)
    assert str(path) in str(err.value)
    assert TORCHVISION_FILES[name] in str(err.value)  # says which file to get


def test_load_torchvision_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown network 'vgg16'"):
        load_torchvision("vgg16", tmp_path / "vgg16.pth")


# ---------------------------------------------------------------- SwAV

@pytest.fixture(scope="module")
def swav_trunk():
    torch.manual_seed(1)
    model = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        model.conv1.weight.add_(0.5)
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


@pytest.mark.parametrize("wrapped", [True, False], ids=["state_dict-wrapped", "flat"])
def test_load_swav(swav_trunk, wrapped, tmp_path):
    state = {f"module.{k}": v for k, v in swav_trunk.items()}
    state["module.projection_head.0.weight"] = torch.randn(64, 2048)
    state["module.projection_head.0.bias"] = torch.randn(64)
    state["module.prototypes.weight"] = torch.randn(30, 64)
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save({"state_dict": state, "epoch": 800} if wrapped else state, path)

    model = load_swav(path)
    _assert_same_state(model, swav_trunk)
    assert not model.training
    assert isinstance(model.fc, torch.nn.Identity)

    # the output is ResNet-50's 2048-d average-pooled feature
    trunk = torchvision.models.resnet50(weights=None)
    trunk.load_state_dict(swav_trunk, strict=False)
    trunk.eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x)
        feats = trunk.avgpool(trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(
            trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))))))).flatten(1)
    assert out.shape == (2, 2048)
    torch.testing.assert_close(out, feats)


def test_load_swav_errors(tmp_path, torchvision_files):
    path = tmp_path / "missing" / "swav_800ep_pretrain.pth.tar"
    with pytest.raises(DataError, match="swav_800ep_pretrain") as err:
        load_swav(path)
    assert str(path) in str(err.value)
    alexnet_path, _ = torchvision_files["alexnet"]
    with pytest.raises(DataError, match="does not match a ResNet-50 trunk"):
        load_swav(alexnet_path)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_a_state_dict)
    with pytest.raises(DataError, match="does not hold a state dict"):
        load_swav(not_a_state_dict)


# ---------------------------------------------------------------- OpenCLIP

TINY_CLIP = "NeuroPictorTest-TinyViT"


@pytest.fixture(scope="module")
def tiny_clip_arch(tmp_path_factory):
    """Registers a tiny ViT CLIP config with open_clip (same schema as ViT-H-14.json)."""
    import open_clip

    root = tmp_path_factory.mktemp("open_clip_configs")
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (root / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root)
    assert TINY_CLIP in open_clip.list_models()
    return TINY_CLIP


@pytest.fixture(scope="module")
def tiny_clip_state(tiny_clip_arch):
    import open_clip

    torch.manual_seed(2)
    model = open_clip.create_model(tiny_clip_arch, pretrained=None)
    with torch.no_grad():
        model.visual.proj.add_(0.5)
        model.logit_scale.fill_(3.0)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _activations(model) -> set[str]:
    return {type(m).__name__ for m in model.modules() if "GELU" in type(m).__name__}


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".safetensors"])
def test_load_openclip_round_trip(tiny_clip_arch, tiny_clip_state, suffix, tmp_path):
    from PIL import Image

    path = tmp_path / f"open_clip_pytorch_model{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in tiny_clip_state.items()}, str(path))
    else:
        torch.save(tiny_clip_state, path)
    model, preprocess, tokenizer = load_openclip(tiny_clip_arch, path)
    _assert_same_state(model, tiny_clip_state)
    assert not model.training
    assert _activations(model) == {"GELU"}  # not an OpenAI (QuickGELU) architecture

    tokens = tokenizer(["a photo of a cat", "a dog"])
    assert tokens.shape == (2, 16) and tokens.dtype == torch.long
    assert tokens[0, 0] == 49406 and 49407 in tokens[0].tolist()  # <start_of_text> ... <end_of_text>
    assert not torch.equal(tokens[0], tokens[1])
    image = preprocess(Image.fromarray(np.full((40, 50, 3), 128, dtype=np.uint8)))
    assert image.shape == (3, 32, 32)
    with torch.no_grad():
        assert model.encode_image(image[None]).shape == (1, 32)
        assert model.encode_text(tokens).shape == (2, 32)


def test_load_openclip_quick_gelu(tiny_clip_arch, tiny_clip_state, tmp_path, monkeypatch):
    # OpenAI's ViT-L-14 weights need QuickGELU; open_clip's ViT-L-14 config alone gives GELU
    assert "ViT-L-14" in pretrained.QUICK_GELU and "ViT-H-14" not in pretrained.QUICK_GELU
    path = tmp_path / "ckpt.bin"
    torch.save(tiny_clip_state, path)
    assert _activations(load_openclip(tiny_clip_arch, path, quick_gelu=True)[0]) == {"QuickGELU"}
    monkeypatch.setattr(pretrained, "QUICK_GELU", {tiny_clip_arch})
    assert _activations(load_openclip(tiny_clip_arch, path)[0]) == {"QuickGELU"}
    assert _activations(load_openclip(tiny_clip_arch, path, quick_gelu=False)[0]) == {"GELU"}


@pytest.mark.filterwarnings("ignore:'torch.load' received a zip file that looks like a TorchScript archive")
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_load_openclip_torchscript_release(tiny_clip_arch, tiny_clip_state, tmp_path):
    """OpenAI's ViT-L-14.pt is a TorchScript archive whose state dict also holds the
    input_resolution / context_length / vocab_size scalars; torch.load(weights_only=True)
    refuses such archives."""
    nn = torch.nn
    root = nn.Module()
    extra = {"input_resolution": torch.tensor(32), "context_length": torch.tensor(16),
             "vocab_size": torch.tensor(49408)}
    for key, value in {**tiny_clip_state, **extra}.items():
        *parents, last = key.split(".")
        node = root
        for p in parents:
            if not hasattr(node, p):
                node.add_module(p, nn.Module())
            node = getattr(node, p)
        node.register_buffer(last, value.clone())
    path = tmp_path / "ViT-L-14.pt"
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, but OpenAI's release is in that format
        torch.jit.save(torch.jit.script(root), str(path))
    with pytest.raises(RuntimeError, match="TorchScript"):
        torch.load(path, weights_only=True)
    assert pretrained._is_torchscript(path)
    model, _, _ = load_openclip(tiny_clip_arch, path)
    _assert_same_state(model, tiny_clip_state)


def test_load_openclip_missing_file(tiny_clip_arch, tmp_path):
    for arch in ("ViT-H-14", "ViT-L-14"):
        path = tmp_path / "weights" / f"{arch}.bin"
        with pytest.raises(DataError) as err:
            load_openclip(arch, path)
        assert str(path) in str(err.value)
        assert pretrained.SOURCES[arch] in str(err.value)


def test_is_torchscript_is_false_for_plain_files(tiny_clip_state, tmp_path):
    torch.save(tiny_clip_state, tmp_path / "a.bin")
    (tmp_path / "b.txt").write_text("not a zip")
    assert not pretrained._is_torchscript(tmp_path / "a.bin")
    assert not pretrained._is_torchscript(tmp_path / "b.txt")


# ---------------------------------------------------------------- Stable Diffusion

def _tiny_pipeline():
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        layers_per_block=1, sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
        num_attention_heads=2, num_hidden_layers=1, vocab_size=64, max_position_embeddings=16))
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({ch: len(vocab) + i for i, ch in enumerate(letters)})
    vocab.update({f"{ch}</w>": len(vocab) + i for i, ch in enumerate(letters)})
    vocab.update({"ca": len(vocab), "cat</w>": len(vocab) + 1})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")], model_max_length=16)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    pipe = _tiny_pipeline()
    path = tmp_path_factory.mktemp("sd21")
    pipe.save_pretrained(path)
    return pipe, path


def test_load_diffusion_round_trip(tiny_sd):
    from diffusers import StableDiffusionPipeline

    pipe, path = tiny_sd
    assert pipe.tokenizer("a cat").input_ids == [0, 28, 55, 1]  # the tokenizer really has this vocab
    loaded = load_diffusion(path)
    assert isinstance(loaded, StableDiffusionPipeline)
    for part in ("unet", "vae", "text_encoder"):
        _assert_same_state(getattr(loaded, part), getattr(pipe, part).state_dict())
        assert getattr(loaded, part).dtype == torch.float32
    assert loaded.tokenizer("a cat").input_ids == [0, 28, 55, 1]
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    assert loaded.safety_checker is None
    out = loaded("a cat", num_inference_steps=2, height=32, width=32, guidance_scale=1.0, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()


def test_load_diffusion_dtype(tiny_sd):
    _, path = tiny_sd
    loaded = load_diffusion(path, dtype=torch.float16)
    assert loaded.unet.dtype == torch.float16 and loaded.text_encoder.dtype == torch.float16


def test_load_diffusion_errors(tmp_path):
    missing = tmp_path / "stable-diffusion-2-1"
    with pytest.raises(DataError, match="stable-diffusion-2-1") as err:
        load_diffusion(missing)
    assert str(missing) in str(err.value)
    empty = tmp_path / "not_a_pipeline"
    (empty / "unet").mkdir(parents=True)
    with pytest.raises(DataError, match="no model_index.json") as err:
        load_diffusion(empty)
    assert str(empty) in str(err.value)


def test_paper_metric_networks_read_the_named_layers(torchvision_files):
    """AlexNet(2)/(5) are features.4 / features.11 of the loaded AlexNet, on ImageNet-normalised
    input, and plug into the metric suite (no dagger: these are the real networks' formats)."""
    from neuropictor.metrics import evaluate
    from neuropictor.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, paper_metric_networks

    weights = torchvision_files["alexnet"][0].parent
    nets = paper_metric_networks(weights, only=("AlexNet(2)", "AlexNet(5)", "Inception", "EffNet-B"))
    alex = load_torchvision("alexnet", weights / "alexnet-owt-7be5be79.pth")
    x = torch.rand(3, 3, 64, 64)
    xn = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(nets.features["AlexNet(2)"](x), alex.features[:5](xn))
        torch.testing.assert_close(nets.features["AlexNet(5)"](x), alex.features[:12](xn))
    scores = evaluate(x, x, nets)
    assert scores["AlexNet(2)"] == 1.0 and scores["Inception"] == 1.0 and "AlexNet(2)†" not in scores


def test_paper_metric_networks_missing_file_names_it(tmp_path):
    from neuropictor.models.pretrained import paper_metric_networks

    with pytest.raises(DataError, match="swav_800ep_pretrain.pth.tar"):
        paper_metric_networks(tmp_path, only=("SwAV",))
