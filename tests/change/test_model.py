import pytest
import torch

from eokit.change.model import (
    CANet,
    DomainAdapterBlock,
    SiameseTimmUNet,
    SiameseUNet,
    build_canet,
)
from eokit.core.adapters import DomainBatchNorm
from eokit.core.errors import InputError

DOMAINS = ["a", "b", "c"]


@pytest.mark.parametrize("bands,height,width", [(6, 37, 50), (3, 32, 32), (1, 20, 65)])
def test_timm_canet_output_shape_any_size_and_bands(bands, height, width):
    model = build_canet(DOMAINS, in_channels=bands)
    x = torch.rand(2, bands, height, width)
    out = model(x, x, domain="b")
    assert out.shape == (2, 1, height, width)
    assert torch.isfinite(out).all()


def test_siamese_unet_wrapped_by_canet():
    model = CANet(SiameseUNet(4, widths=(8, 16, 32)), ["x", "y"])
    x = torch.rand(3, 4, 30, 22)
    assert model(x, x, domain="y").shape == (3, 1, 30, 22)
    blocks = [m for m in model.modules() if isinstance(m, DomainAdapterBlock)]
    assert len(blocks) == 2  # one per decoder scale
    assert all(len(b.adapters) == 2 and len(b.icms) == 2 for b in blocks)
    bns = [m for m in model.modules() if isinstance(m, DomainBatchNorm)]
    assert bns and all(bn.num_domains == 2 for bn in bns)
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.base.modules()
                   if not isinstance(m, DomainBatchNorm) and m not in
                   [s for bn in bns for s in bn.bns])


@pytest.mark.parametrize("lora_ranks", [(0, 0), (4, 2)])
def test_canet_wrapper_starts_equal_to_base_without_icm(lora_ranks):
    torch.manual_seed(0)
    base = SiameseTimmUNet(3)
    base.eval()
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    expected = base(x, y).detach()
    model = CANet(base, DOMAINS, use_icm=False, lora_rank=lora_ranks[0],
                  encoder_lora_rank=lora_ranks[1]).eval()
    assert any(".encoder." in n and ".loras." in n
               for n, _ in model.named_parameters()) == bool(lora_ranks[1])
    # Zero-initialised adapters, BN copies and head copies: the wrapper changes nothing at first.
    for name in DOMAINS:
        assert torch.allclose(model(x, y, domain=name), expected, atol=1e-5)


def test_unknown_domain_is_input_error():
    model = build_canet(DOMAINS, in_channels=3)
    with pytest.raises(InputError, match="unknown dataset 'zzz'"):
        model.set_domain("zzz")
    with pytest.raises(InputError):
        model.set_domain(7)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_one_domain_changes_only_that_domains_state():
    model = build_canet(DOMAINS, in_channels=3)
    before = _snapshot(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    x = torch.rand(4, 3, 32, 32)
    loss = model(x, x.flip(-1), domain="b").square().mean()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for key in changed:
        if model.is_domain_specific(key):
            assert (".1." in key), f"{key} of another domain changed"
    # BN statistics and adapters of domain b moved; those of a and c did not.
    assert any(".bns.1.running_mean" in k for k in changed)
    assert not any(".bns.0." in k or ".bns.2." in k for k in changed)
    assert any(".adapters.1." in k for k in changed)
    assert not any(".adapters.0." in k or ".icms.2." in k or ".heads.0." in k for k in changed)


def test_add_domain_copies_source_and_switches():
    model = build_canet(["a", "b"], in_channels=3).eval()
    x = torch.rand(1, 3, 32, 32)
    reference = model(x, x, domain="b")
    index = model.add_domain("new", init_from="b")
    assert index == 2 and model.domains == ["a", "b", "new"]
    assert torch.allclose(model(x, x, domain="new"), reference, atol=1e-6)
    with pytest.raises(InputError):
        model.add_domain("a")


def test_icm_gates_the_adapter():
    model = build_canet(["a"], in_channels=3).eval()
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    blocks = [m for m in model.modules() if isinstance(m, DomainAdapterBlock)]
    reference = model(x, y).detach()
    with torch.no_grad():
        for block in blocks:
            block.adapters[0].up.weight.normal_(0, 0.5)  # a non-trivial adapter
    assert not torch.allclose(model(x, y), reference, atol=1e-4)
    with torch.no_grad():
        for block in blocks:
            block.icms[0].net[2].bias.fill_(-30.0)  # ICM closed everywhere: adapter has no say
    assert torch.allclose(model(x, y), reference, atol=1e-4)


def test_icm_on_output_can_suppress_change():
    model = build_canet(["a"], in_channels=3, icm_output=True).eval()
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    open_probability = torch.sigmoid(model(x, y)).mean()
    blocks = [m for m in model.modules() if isinstance(m, DomainAdapterBlock)]
    with torch.no_grad():
        blocks[-1].icms[0].net[2].bias.fill_(-20.0)
    closed = torch.sigmoid(model(x, y))
    assert closed.max() < 1e-6 < open_probability


@pytest.mark.parametrize("lora_rank", [0, 8])
def test_domain_parameter_share_is_small(lora_rank):
    model = build_canet(DOMAINS, in_channels=6, lora_rank=lora_rank)
    total = sum(p.numel() for p in model.parameters())
    own = dict(model.named_parameters())
    share = sum(own[n].numel() for n in model.domain_parameter_names("c")) / total
    assert 0 < share < 0.08


def test_bad_arguments():
    with pytest.raises(InputError):
        build_canet([], in_channels=3)
    with pytest.raises(InputError):
        build_canet(["a", "a"], in_channels=3)
    with pytest.raises(InputError):
        build_canet(["a"], architecture="nope")
    with pytest.raises(InputError, match="lora_rank"):
        build_canet(["a"], lora_rank=-1)
    with pytest.raises(InputError, match="encoder_lora_rank"):
        build_canet(["a"], encoder_lora_rank=-2)
    with pytest.raises(InputError):
        CANet(SiameseUNet(3), ["a"], adapter_points=["missing.block"])


def test_encoder_starts_from_a_local_timm_weights_file(tmp_path):
    """pretrained: PATH loads timm weights for the backbone without pickle or network, adapts the
    first (deep-stem) conv to the band count, and is not needed to reload the saved model."""
    import timm
    from safetensors.torch import save_file

    from eokit.change.model import BACKBONES
    from eokit.change.task import load_model, save_model

    name, preset = BACKBONES["resnet18-tiny"]
    torch.manual_seed(3)
    weights = {k: v.contiguous() for k, v in timm.create_model(name, **preset).state_dict().items()}
    path = tmp_path / "r18tiny.safetensors"
    save_file(weights, path)
    model = build_canet(["a"], in_channels=6, pretrained=path)
    encoder = dict(model.base.encoder.named_parameters())
    assert torch.equal(encoder["layer3.1.conv2.weight"].detach(), weights["layer3.1.conv2.weight"])
    stem = encoder["conv1.0.weight"].detach()  # 3 RGB channels spread over 6 bands by timm
    assert stem.shape[1] == 6 and torch.allclose(stem[:, 3:], weights["conv1.0.weight"] / 2)
    assert "pretrained" not in model.base_config
    saved = save_model(model, tmp_path / "model.safetensors")
    path.unlink()
    restored = load_model(saved)
    x = torch.rand(1, 6, 32, 32)
    assert torch.allclose(restored.eval()(x, x), model.eval()(x, x))


def test_pretrained_errors_are_one_line(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    with pytest.raises(InputError, match="weights file not found"):
        build_canet(["a"], pretrained=tmp_path / "none.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()},
              other)
    with pytest.raises(InputError, match="does not fit timm backbone 'resnet18'"):
        build_canet(["a"], pretrained=other)  # resnet18-tiny has other widths
    with pytest.raises(InputError, match="siamese_unet has no pretrained weights"):
        build_canet(["a"], architecture="siamese_unet", pretrained=other)
    # offline and not in timm's cache: fails at once, naming the way out
    monkeypatch.setenv("EOKIT_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    with pytest.raises(InputError, match="give a local weights file instead"):
        build_canet(["a"], backbone="resnet18", pretrained=True)


def _lite_installed() -> bool:
    from eokit.core.weights import CATALOGUE, _carrier_file

    path = _carrier_file(CATALOGUE["efficientnet_lite0.imagenet"])
    return path is not None and path.is_file()


@pytest.mark.skipif(not _lite_installed(), reason="EfficientNet-Lite0 carrier not installed")
def test_canet_on_the_imagenet_lite0_encoder_adapts_stacks_and_reloads(tmp_path):
    """ImageNet weights in the siamese encoder, per-dataset BN over its BNs, inputs rescaled to
    the weights' range inside the model, adapter files that stack; reloading needs no weights."""
    from eokit.change.task import (
        load_domain_adapter,
        load_model,
        prepare_adapt,
        save_domain_adapter,
        save_model,
    )
    from eokit.core.adapters import DomainBatchNorm
    from eokit.core.encoders import build_image_encoder

    model = build_canet(["a", "b"], in_channels=6, backbone="efficientnet_lite0",
                        pretrained=True)
    reference = build_image_encoder("efficientnet_lite0", pretrained=True, in_chans=6).body
    ours = dict(model.base.encoder.named_parameters())
    assert torch.equal(ours["blocks.3.0.conv_pw.weight"],
                       reference.blocks[3][0].conv_pw.weight)
    assert ours["conv_stem.weight"].shape[1] == 6
    assert model.base.input_normalization == {"mean": [0.5] * 6, "std": [0.5] * 6}
    assert sum(isinstance(m, DomainBatchNorm) for m in model.base.encoder.modules()) > 10
    assert "pretrained" not in model.base_config
    x, y = torch.rand(1, 6, 40, 40), torch.rand(1, 6, 40, 40)
    seen = []
    hook = model.base.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    model(x, y)
    hook.remove()
    assert torch.allclose(seen[0][:1, :, :40, :40], (x - 0.5) / 0.5)  # the weights' [-1, 1]
    shared = save_model(model, tmp_path / "shared.safetensors")
    outputs, files = {}, {}
    for name, placement in (("site_a", "all"), ("site_b", "finest")):
        run = load_model(shared)
        report = prepare_adapt(run, name, placement=placement)
        assert 0 < report["percent"] < 8
        torch.manual_seed(1)
        optimiser = torch.optim.SGD([p for p in run.parameters() if p.requires_grad], lr=0.5)
        run.train()
        loss = run(x, y, domain=name).sigmoid().mean()
        loss.backward()
        optimiser.step()
        files[name] = save_domain_adapter(run, name, tmp_path / f"{name}.safetensors")
        outputs[name] = run.eval()(x, y, domain=name).detach()
    stacked = load_model(shared)
    for name in ("site_b", "site_a"):
        load_domain_adapter(stacked, files[name])
    stacked.eval()
    for name, expected in outputs.items():
        assert torch.allclose(stacked(x, y, domain=name), expected, atol=1e-5)
    assert not torch.allclose(outputs["site_a"], outputs["site_b"])
