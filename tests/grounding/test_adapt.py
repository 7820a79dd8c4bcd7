"""PEFT for grounding: each method trains only what it names, adapter files, domain switching."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from eokit.core.adapters import base_fingerprint
from eokit.core.errors import InputError
from eokit.grounding.adapt import (
    PLACEMENTS,
    DomainAdapters,
    GroundingStack,
    _canonical,
    adapt,
    load_adapter_file,
    parse_method,
    placement_modules,
    save_adapter_file,
)

RunCli = Callable[[list[str]], tuple[int, str, str]]
NAMES = ["ship", "plane", "storage tank", "vehicle", "building", "bridge", "tennis court"]
METHODS = ["lora:text", "lora:vision", "lora:fusion", "lora:decoder", "lora:all", "bitfit",
           "adapter:4", "head-only", "full", "lora:text,bitfit"]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from eokit.core.encoders import build_text_encoder

    return build_text_encoder("minilm_l6", pretrained=False).tokenizer


def make_stack(tokenizer: Any, seed: int = 0) -> GroundingStack:
    from transformers import BertConfig, BertModel

    from eokit.core.encoders import TextEncoder
    from eokit.grounding.detector import TextConditionedDetector
    from eokit.grounding.mbores import MBORESHead

    torch.manual_seed(seed)
    bert = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16,
                                num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    detector = TextConditionedDetector(pretrained=False, text_dim=16, dim=16)
    head = MBORESHead(16, 16, dim=16, heads=2, branch_layers=1, reasoner_layers=1)
    return GroundingStack(detector, head, TextEncoder(bert, tokenizer, "tiny")).eval()


@pytest.fixture(scope="module")
def samples() -> list[Any]:
    from eokit.core.synth.objects import generate_object_dataset
    from eokit.grounding.train import scene_samples

    return scene_samples(generate_object_dataset(3, 64, seed=0, n_expressions=2))


def outputs(stack: GroundingStack, samples: list[Any]) -> dict[str, torch.Tensor]:
    from eokit.grounding.adapt import _frozen_text
    from eokit.grounding.train import build_nodes, detect

    text = _frozen_text(stack.text)
    stack.eval()
    for p in stack.parameters():  # frozen weights select the attention fast path, as in use
        p.requires_grad_(False)
    with torch.no_grad():
        x = torch.from_numpy(__import__("numpy").stack([s.image for s in samples]))
        emb = text.classes(NAMES)
        out = stack.detector(x, emb)
        _, props = detect(stack.detector, samples, NAMES, text)
        nodes = build_nodes(props, emb, (64, 64))
        tokens, mask = text.tokens([s.expressions[0] for s in samples])
        head = stack.head({k: nodes[k] for k in ("features", "class_embed", "boxes", "mask")},
                          tokens, mask)
    return {"logits": out["logits"], "ltrb": out["ltrb"], "head": head["logits"],
            "emb": emb}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_only_what_it_names(tokenizer: Any, samples: list[Any],
                                          method: str) -> None:
    stack = make_stack(tokenizer)
    before = {k: v.clone() for k, v in stack.state_dict().items()}
    spec = parse_method(method, rank=2)
    report = adapt(stack, spec, samples, NAMES, steps=1, batch_size=2, lr=0.05)
    trainable = set(report["trainable"])
    after = stack.state_dict()
    # every base tensor outside the trained set is bit-identical (LoRA renames, not changes)
    for key, value in after.items():
        canon = _canonical(key, "default")
        if key in trainable or canon not in before:
            continue
        assert torch.equal(value, before[canon]), (method, key)
    changed = [k for k in trainable if _canonical(k, "default") not in before
               or not torch.equal(after[k], before[_canonical(k, "default")])]
    assert changed, method
    names = [k for k in trainable if "running_" not in k and "num_batches" not in k]
    if spec.full:
        assert report["trainable_percent"] == 100.0
    else:
        assert 0 < report["trainable_percent"] < 100.0
    for part in method.split(","):
        if part == "bitfit":
            assert any(n.endswith(".bias") and "lora_" not in n for n in names)
        if part.startswith("lora:") and part != "lora:all":
            place = part.split(":")[1]
            mods = placement_modules(make_stack(tokenizer), place)
            lora = [n for n in names if "lora_" in n]
            assert lora and all(any(n.startswith(m + ".lora_") for m in mods) for n in lora)
    if method == "head-only":
        assert all(n.startswith(("detector.embed", "detector.box_out", "detector.logit_",
                                 "head.score", "head.box_head")) for n in names)
    if method == "adapter:4":
        assert all("bottleneck_adapter" in n for n in names)
    assert report["optimizer_state_mb"] > 0 and report["step_seconds"] > 0


def test_placements_are_disjoint_and_cover_the_named_parts(tokenizer: Any) -> None:
    stack = make_stack(tokenizer)
    found = {p: set(placement_modules(stack, p)) for p in PLACEMENTS}
    assert all(n.startswith("text.model.encoder.layer.") for n in found["text"])
    assert all(n.startswith("detector.encoder.") for n in found["vision"])
    assert all(n.startswith(("head.visual", "head.spatial", "head.category", "head.fusion",
                             "head.text", "detector.text_proj")) for n in found["fusion"])
    assert all(n.startswith(("head.reasoner", "head.score", "head.box_head"))
               for n in found["decoder"])
    places = list(found)
    for i, a in enumerate(places):
        for b in places[i + 1:]:
            assert not found[a] & found[b]


def test_adapter_file_round_trips_and_refuses_another_base(
        tokenizer: Any, samples: list[Any], tmp_path: Path) -> None:
    stack = make_stack(tokenizer)
    fingerprint = base_fingerprint(stack, weights=True)
    spec = parse_method("lora:fusion,bitfit", rank=2)
    report = adapt(stack, spec, samples, NAMES, steps=2, batch_size=2, lr=0.05)
    path = save_adapter_file(stack, tmp_path / "a.safetensors", report["trainable"], spec=spec,
                             fingerprint=fingerprint)
    total = sum(p.numel() for p in stack.parameters())
    assert path.stat().st_size < 4 * total * 0.2  # adapter only, not the whole model
    fresh = make_stack(tokenizer)
    load_adapter_file(fresh, path, fingerprint=base_fingerprint(fresh, weights=True))
    assert same(outputs(fresh, samples), outputs(stack, samples))
    other = make_stack(tokenizer, seed=1)  # same architecture, other weights
    with pytest.raises(InputError, match="different base model"):
        load_adapter_file(other, path, fingerprint=base_fingerprint(other, weights=True))
    with pytest.raises(InputError, match="different base model"):
        DomainAdapters(other).add("a", path)


def test_domains_stack_switch_and_restore_the_base_exactly(
        tokenizer: Any, samples: list[Any], tmp_path: Path) -> None:
    base = make_stack(tokenizer)
    base_out = outputs(base, samples)
    fingerprint = base_fingerprint(base, weights=True)
    adapted, files = {}, {}
    for domain, method in (("coast", "lora:text,lora:decoder,bitfit"), ("city", "adapter:4"),
                           ("desert", "lora:fusion")):
        stack = copy.deepcopy(base)
        spec = parse_method(method, rank=2)
        report = adapt(stack, spec, samples, NAMES, steps=2, batch_size=2, lr=0.05,
                       adapter_name=domain)
        files[domain] = save_adapter_file(stack, tmp_path / f"{domain}.safetensors",
                                          report["trainable"], spec=spec,
                                          fingerprint=fingerprint, adapter_name=domain)
        adapted[domain] = outputs(stack, samples)
        assert not same(adapted[domain], base_out)
    domains = DomainAdapters(copy.deepcopy(base))
    for domain, path in files.items():
        domains.add(domain, path)
    for domain in ("city", "coast", "desert", "coast"):
        domains.use(domain)
        assert same(outputs(domains.stack, samples), adapted[domain]), domain
        domains.use(None)
        assert same(outputs(domains.stack, samples), base_out), domain
    domains.remove("coast")
    assert domains.domains == ["city", "desert"]
    assert same(outputs(domains.stack, samples), base_out)
    domains.use("desert")
    assert same(outputs(domains.stack, samples), adapted["desert"])
    with pytest.raises(InputError, match="no adapter loaded"):
        domains.use("coast")


@pytest.mark.parametrize("text,match", [("lora:head", "placement"), ("dora", "unknown method"),
                                        ("adapter:x", "positive integer"), ("", "give")])
def test_bad_methods_are_named(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_method(text)


def test_parse_combinations() -> None:
    spec = parse_method("lora:text,bitfit,adapter:8")
    assert spec.lora == ("text",) and spec.bitfit and spec.adapter == 8
    assert parse_method("lora:all").lora == ("text", "vision", "fusion", "decoder")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eokit.grounding.pipeline import fit_simulated

    out = tmp_path_factory.mktemp("peft") / "model"
    fit_simulated(out, scenes=6, size=64, det_epochs=1, head_epochs=1, pretrained=False,
                  dim=16, head_dim=16, branch_layers=1, reasoner_layers=1)
    return out


def test_cli_adapt_writes_adapter_and_report_and_refuses_another_base(
        model_dir: Path, tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "coast.safetensors"
    code, stdout, err = run_cli(["grounding", "adapt", str(model_dir), "--method",
                                 "lora:decoder,bitfit", "--simulate", "5", "--steps", "1",
                                 "--classes", "ship,bridge", "--gsd", "1.5", "--gain", "1.3",
                                 "--label-share", "0.5", "-o", str(out)])
    assert code == 0, err
    summary = json.loads(stdout)
    for key in ("trainable_params", "trainable_percent", "optimizer_state_mb", "step_seconds",
                "peak_rss_mb", "adapter_file_mb", "target_after"):
        assert key in summary
    assert 0 < summary["trainable_percent"] < 100 and summary["train_scenes"] == 2
    assert json.loads(out.with_suffix(".json").read_text())["adapter"] == str(out)
    code, stdout, err = run_cli(["grounding", "adapt", str(model_dir), "--simulate", "5",
                                 "--classes", "ship,bridge", "--gsd", "1.5", "--gain", "1.3",
                                 "--evaluate", str(out)])
    assert code == 0, err
    assert set(json.loads(stdout)) >= {"base", "adapted"}
    from eokit.grounding.pipeline import fit_simulated

    other = tmp_path / "other"
    fit_simulated(other, scenes=6, size=64, det_epochs=1, head_epochs=1, pretrained=False,
                  dim=16, head_dim=16, branch_layers=1, reasoner_layers=1, seed=5)
    code, stdout, err = run_cli(["grounding", "adapt", str(other), "--simulate", "5",
                                 "--evaluate", str(out)])
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "different base model" in lines[0]
    code, _, err = run_cli(["grounding", "adapt", str(model_dir), "--method", "lora:nose",
                            "--simulate", "5"])
    assert code == 2 and "placement" in err


def test_adapt_is_an_agent_tool(model_dir: Path, tmp_path: Path) -> None:
    from eokit.core.tools import ToolSpec
    from eokit.grounding.tools import TOOLS, grounding_adapt

    assert "grounding_adapt" in {t.name for t in TOOLS if isinstance(t, ToolSpec)}
    out = tmp_path / "a.safetensors"
    report = grounding_adapt(str(model_dir), str(out), method="bitfit", simulate=5, steps=1,
                             classes=["ship", "bridge"], gsd_m=1.5)
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert report["method"] == "bitfit" and 0 < report["trainable_percent"] < 100
