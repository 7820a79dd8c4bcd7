"""One test matrix over tiny CNN / ResNet / ViT models for every adapter method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from eokit.core import adapters as A
from eokit.core.errors import InputError

timm = pytest.importorskip("timm")


class TinyCNN(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 3) -> None:
        super().__init__()
        self.block1 = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block2(self.block1(x))).flatten(1))


def make_model(kind: str, seed: int = 0, num_classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "cnn":
        model = TinyCNN(num_classes=num_classes)
        # non-trivial BN statistics so that per-domain copies matter
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    elif kind == "resnet":
        from timm.models.resnet import BasicBlock, ResNet

        # zero_init_last=False: residual branches must carry signal for adapters to learn
        model = ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), stem_width=8,
                       stem_type="deep", num_classes=num_classes, zero_init_last=False)
    elif kind == "vit":
        model = timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
            depth=2, num_heads=2, num_classes=num_classes,
        )
    else:
        raise ValueError(kind)
    return model.eval()


def example_input(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 32, 32, generator=g)


@dataclass
class Method:
    apply: Callable[[nn.Module, str], nn.Module]
    include: list[str]  # state keys saved in the adapter file
    trainable: str  # glob every trainable parameter must match
    identity_at_init: bool = True


LORA_TARGETS = {"cnn": ["0"], "resnet": r".*layer\d\.\d\.conv\d", "vit": ["qkv", "fc1"]}
IA3_TARGETS = {"cnn": (["0"], None), "resnet": (r".*layer\d\.\d\.conv\d", None),
               "vit": (["qkv", "fc2"], ["fc2"])}
BOTTLENECK_AT = {"cnn": ["block1", "block2"], "resnet": ["layer1", "layer3"],
                 "vit": ["blocks.0", "blocks.1"]}


def _lora(m: nn.Module, kind: str) -> nn.Module:
    return A.apply_lora(m, LORA_TARGETS[kind], r=2, alpha=4)


def _ia3(m: nn.Module, kind: str) -> nn.Module:
    targets, ff = IA3_TARGETS[kind]
    return A.apply_ia3(m, targets, ff)


def _bottleneck(m: nn.Module, kind: str) -> nn.Module:
    A.insert_adapters(m, BOTTLENECK_AT[kind], reduction=2,
                      example_input=example_input() if kind == "vit" else None)
    A.freeze_all_but(m, ["*bottleneck_adapter*"])
    return m


def _domain_bn(m: nn.Module, kind: str) -> nn.Module:
    A.convert_to_domain_bn(m, num_domains=3)
    A.freeze_all_but(m, ["*.bns.*"])
    A.set_domain(m, 1)
    return m


METHODS = {
    "lora": Method(_lora, ["*lora_*"], "*lora_*"),
    "ia3": Method(_ia3, ["*ia3_*"], "*ia3_*"),
    "bitfit": Method(lambda m, k: A.apply_bitfit(m), ["*.bias"], "*.bias"),
    "bottleneck": Method(_bottleneck, ["*bottleneck_adapter*"], "*bottleneck_adapter*"),
    "domain_bn": Method(_domain_bn, ["*.bns.*"], "*.bns.*"),
}
CASES = [
    pytest.param(kind, method, id=f"{kind}-{method}")
    for kind in ("cnn", "resnet", "vit")
    for method in METHODS
    if not (kind == "vit" and method == "domain_bn")  # a ViT has no BatchNorm
]


def adapted(kind: str, method: str, seed: int = 0, num_classes: int = 3) -> nn.Module:
    return METHODS[method].apply(make_model(kind, seed, num_classes), kind).eval()


def one_step(model: nn.Module, x: torch.Tensor) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.05)
    target = torch.arange(x.shape[0]) % 3
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize(("kind", "method"), CASES)
def test_insert_freeze_and_step(kind: str, method: str) -> None:
    x = example_input()
    model = adapted(kind, method)
    # identity at insertion (LoRA B=0, IA3 ones, bottleneck up=0, per-domain BN copies)
    with torch.no_grad():
        before, after = make_model(kind)(x), model(x)
    assert torch.allclose(before, after, atol=1e-6, rtol=0), (before - after).abs().max()

    # only the intended parameters are trainable, and the report counts them
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable and frozen
    pattern = METHODS[method].trainable
    assert all(A.matches_any(n, [pattern]) for n in trainable), sorted(trainable)[:5]
    report = A.trainable_parameter_report(model)
    assert report["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < report["percent"] < 100
    assert sum(g["trainable"] for g in report["groups"].values()) == report["trainable"]

    # one optimiser step changes those parameters only
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    one_step(model, x)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, snapshot[n])}
    assert changed, "optimiser step changed nothing"
    assert changed <= trainable, sorted(changed - trainable)[:5]
    if method == "domain_bn":  # only the active domain (1) learns
        assert all(".bns.1." in n for n in changed), sorted(changed)[:5]


@pytest.mark.parametrize(("kind", "method"), CASES)
def test_save_load_roundtrip_and_wrong_base(kind: str, method: str, tmp_path: Path) -> None:
    x = example_input()
    model = adapted(kind, method)
    one_step(model, x)
    one_step(model, x)
    with torch.no_grad():
        expected = model(x)
        assert not torch.equal(expected, make_model(kind)(x))  # training did something
    path = A.save_adapter(model, tmp_path / "a.safetensors", include=METHODS[method].include,
                          metadata={"method": method})
    state = model.state_dict()
    n_saved = sum(v.numel() for k, v in state.items() if A.matches_any(k, METHODS[method].include))
    assert n_saved < sum(v.numel() for v in state.values())

    fresh = adapted(kind, method)
    meta = A.load_adapter(fresh, path)
    assert meta["method"] == method
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)

    other = adapted(kind, method, num_classes=5)
    with pytest.raises(InputError, match="a.safetensors"):
        A.load_adapter(other, path)


def test_base_weight_hash_detects_other_weights(tmp_path: Path) -> None:
    model = adapted("cnn", "lora", seed=0)
    plain = A.save_adapter(model, tmp_path / "plain.safetensors", include=["*lora_*"])
    hashed = A.save_adapter(model, tmp_path / "hashed.safetensors", include=["*lora_*"],
                            hash_base_weights=True)
    A.load_adapter(adapted("cnn", "lora", seed=0), hashed)
    other_weights = adapted("cnn", "lora", seed=7)
    A.load_adapter(other_weights, plain)  # names and shapes match: accepted
    with pytest.raises(InputError, match="different base weights"):
        A.load_adapter(other_weights, hashed)


def test_load_needs_adapters_applied_first(tmp_path: Path) -> None:
    path = A.save_adapter(adapted("cnn", "lora"), tmp_path / "a.safetensors", include=["*lora_*"])
    with pytest.raises(InputError, match="apply the same adapters"):
        A.load_adapter(make_model("cnn"), path)


def test_load_bad_files(tmp_path: Path) -> None:
    model = adapted("cnn", "lora")
    with pytest.raises(InputError, match="not found"):
        A.load_adapter(model, tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InputError, match="corrupt.safetensors"):
        A.load_adapter(model, corrupt)
    with pytest.raises(InputError, match="include"):
        A.save_adapter(model, tmp_path / "x.safetensors", include=["nothing_matches_this"])
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_targets_and_patterns() -> None:
    with pytest.raises(InputError, match="target_modules"):
        A.apply_lora(make_model("cnn"), ["no_such_layer"])
    with pytest.raises(InputError, match="patterns"):
        A.freeze_all_but(make_model("cnn"), ["fc.*", "tpyo.*"])
    with pytest.raises(InputError, match="module_names"):
        A.insert_adapters(make_model("cnn"), ["block9"])
    with pytest.raises(InputError, match="domain"):
        A.set_domain(A.convert_to_domain_bn(make_model("cnn"), 2), 2)


def test_freeze_all_but_glob_and_regex() -> None:
    model = make_model("cnn")
    A.freeze_all_but(model, ["fc.*", r"block1\.1\."])
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["block1.1.bias", "block1.1.weight", "fc.bias", "fc.weight"]


def test_report_custom_groups() -> None:
    model = adapted("vit", "lora")
    rep = A.trainable_parameter_report(model, groups={"lora": "*lora_*", "attn": "*attn*"})
    assert rep["groups"]["lora"]["percent"] == 100.0
    assert rep["groups"]["lora"]["trainable"] == rep["trainable"]
    assert 0 < rep["groups"]["attn"]["percent"] < 100


def test_bottleneck_adapter_shapes() -> None:
    tokens = torch.randn(2, 5, 12)
    fmap = torch.randn(2, 12, 4, 4)
    a1, a2 = A.BottleneckAdapter(12, dims=1), A.BottleneckAdapter(12, reduction=3, dims=2)
    assert torch.equal(a1(tokens), tokens) and torch.equal(a2(fmap), fmap)
    assert a2.down.out_channels == 4
    nn.init.normal_(a1.up.weight)
    assert not torch.equal(a1(tokens), tokens)


def test_insert_keeps_base_parameter_names() -> None:
    model = make_model("cnn")
    names = set(model.state_dict())
    inserted = A.insert_adapters(model, ["block1"])
    assert inserted == ["block1.bottleneck_adapter"]
    assert names <= set(model.state_dict())
    model.load_state_dict(make_model("cnn").state_dict(), strict=False)


def test_domain_bn_training_changes_only_that_domain() -> None:
    model = A.convert_to_domain_bn(make_model("cnn"), num_domains=3)
    dbns = [m for m in model.modules() if isinstance(m, A.DomainBatchNorm)]
    assert len(dbns) == 2
    # converted from the model's BNs: every domain holds a copy of the original statistics
    orig = make_model("cnn").block1[1]
    for bn in dbns[0].bns:
        assert torch.equal(bn.running_mean, orig.running_mean)
        assert torch.equal(bn.weight, orig.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    A.set_domain(model, 1)
    model.train()
    with torch.no_grad():
        model(example_input() * 3 + 1)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(".bns.1." in k for k in changed), changed
    assert any(k.endswith("bns.1.running_mean") for k in changed)


def test_domain_bn_per_sample_ids_match_per_domain_calls() -> None:
    torch.manual_seed(0)
    dbn = A.DomainBatchNorm(4, num_domains=2, dims=2).eval()
    with torch.no_grad():
        for i, bn in enumerate(dbn.bns):
            bn.running_mean.fill_(float(i))
    x = torch.randn(6, 4, 3, 3)
    ids = torch.tensor([0, 1, 1, 0, 1, 0])
    mixed = dbn(x, domain=ids)
    for d in (0, 1):
        assert torch.equal(mixed[ids == d], dbn(x[ids == d], domain=d))


def test_domain_bn_keeps_timm_fused_activation() -> None:
    from timm.layers import BatchNormAct2d

    bn = BatchNormAct2d(4, act_layer=nn.ReLU).eval()
    x = torch.randn(2, 4, 3, 3)
    dbn = A.convert_to_domain_bn(bn, 2).eval()
    assert isinstance(dbn, A.DomainBatchNorm)
    assert torch.equal(dbn(x), bn(x))
    assert (dbn(x) >= 0).all()


def test_second_adapter_can_be_left_out_of_the_fingerprint(tmp_path: Path) -> None:
    x = example_input()
    both = A.apply_lora(make_model("cnn"), ["fc"], r=2)
    A.apply_lora(both, ["fc"], r=2, adapter_name="other")  # a second adapter on the same layer
    one_step(both, x)
    lora = ["*lora_*.default.*"]
    plain = A.save_adapter(both, tmp_path / "plain.safetensors", include=lora)
    scoped = A.save_adapter(both, tmp_path / "scoped.safetensors", include=lora,
                            fingerprint_exclude=["*lora_*.other.*"], hash_base_weights=True)
    only_default = A.apply_lora(make_model("cnn"), ["fc"], r=2)
    with pytest.raises(InputError, match="different base model"):
        A.load_adapter(only_default, plain)  # the other adapter's tensors were fingerprinted
    A.load_adapter(only_default, scoped)
    saved = {k: v for k, v in both.state_dict().items() if A.matches_any(k, lora)}
    loaded = only_default.state_dict()
    assert saved and all(torch.equal(loaded[k], v) for k, v in saved.items())
    # The base is still checked: another head width is refused.
    with pytest.raises(InputError, match="different base model|shape mismatch"):
        A.load_adapter(A.apply_lora(make_model("cnn", num_classes=5), ["fc"], r=2), scoped)
