"""Parameter-efficient adaptation of the grounding model to a new simulated domain.

A grounding model (detector + MB-ORES head + MiniLM text encoder) is trained once on a source
domain: 1 m GSD, neutral sensor, four object classes, attribute-style plain expressions. It is
then adapted to a target domain that differs as real data do: 1.5 m GSD, brighter and blurred
sensor (gain 1.4, blur 1.2 px), three new classes (vehicle, bridge, tennis court) and
relation-heavy wordy expressions. Per method, label share (5 / 25 / 100 % of the target
training scenes) and seed (label subset, batch order, adapter initialisation), the base is
copied, adapted for a fixed number of steps and scored:

* Pr@0.5, meanIoU, cumIoU on held-out target scenes;
* the same on held-out source scenes with the adapter left on (retention), and after saving
  the adapter file, loading it onto a fresh base with :class:`DomainAdapters` and switching
  back to the base: whether the base outputs are restored bit for bit;
* trainable parameters (count, % of the whole model), optimizer-state memory, median step
  time, adapter file size, peak RSS of the process.

The source model is shared by all methods and seeds (it is the base each adapts from).

    python benchmarks/grounding_peft.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, peak_rss_mb, seed_all, write_results  # noqa: E402

METHODS = ("head-only", "full", "bitfit", "adapter:8", "lora:text", "lora:vision",
           "lora:fusion", "lora:decoder", "lora:all")
SHARES = (0.05, 0.25, 1.0)
SOURCE_CLASSES = ("ship", "plane", "storage tank", "building")
TARGET_CLASSES = ("ship", "building", "vehicle", "bridge", "tennis court")


def _scale(quick: bool) -> dict[str, Any]:
    if quick:
        return {"quick": True, "size": 64, "source_scenes": 16, "source_test": 4,
                "target_pool": 12, "target_test": 4, "det_epochs": 1, "head_epochs": 1,
                "steps": 2, "pretrained": False, "seeds": 1, "methods": list(METHODS[:3]),
                "shares": [1.0]}
    return {"quick": False, "size": 64, "source_scenes": 96, "source_test": 16,
            "target_pool": 60, "target_test": 16, "det_epochs": 8, "head_epochs": 10,
            "steps": 20, "pretrained": True, "seeds": 3, "methods": list(METHODS),
            "shares": list(SHARES)}


def _domains() -> tuple[Any, Any]:
    from eokit.core.synth.objects import ObjectDomain
    from eokit.core.synth.scene import SensorDomain

    source = ObjectDomain(gsd_m=1.0, sensor=SensorDomain(), classes=SOURCE_CLASSES,
                          expression_mix="attribute", phrasing="plain")
    target = ObjectDomain(gsd_m=1.5, sensor=SensorDomain(gain=1.4, blur_sigma=1.2,
                                                         noise_std=0.01),
                          classes=TARGET_CLASSES, expression_mix="relation", phrasing="wordy")
    return source, target


def _pretrain(cfg: dict[str, Any], source_train: list[Any], text: Any) -> tuple[Any, float]:
    import torch

    from eokit.grounding.adapt import GroundingStack
    from eokit.grounding.detector import TextConditionedDetector
    from eokit.grounding.mbores import MBORESHead
    from eokit.grounding.train import build_nodes, detect, fit_detector, fit_grounder

    start = time.perf_counter()
    torch.manual_seed(0)
    names = list(SOURCE_CLASSES)
    detector = TextConditionedDetector(pretrained=cfg["pretrained"], text_dim=text.dim, dim=64,
                                       frozen_bn=cfg["pretrained"])
    head = MBORESHead(detector.dim, text.dim, dim=64, branch_layers=1, reasoner_layers=2,
                      selection="hard")
    fit_detector(detector, source_train, names, text, epochs=cfg["det_epochs"], seed=0)
    _, props = detect(detector, source_train, names, text)
    size = tuple(source_train[0].image.shape[-2:])
    fit_grounder(head, source_train, build_nodes(props, text.classes(names), size), text,
                 epochs=cfg["head_epochs"], seed=0)
    return GroundingStack(detector, head, text.encoder).eval(), time.perf_counter() - start


def _outputs(stack: Any, batch: Any, names: list[str]) -> dict[str, Any]:
    """Raw outputs (detector maps + head logits) on a fixed batch, for exact comparisons."""
    import torch

    from eokit.grounding.adapt import _frozen_text
    from eokit.grounding.train import build_nodes, detect

    text = _frozen_text(stack.text)
    with torch.no_grad():
        x = torch.from_numpy(np.stack([s.image for s in batch]))
        out = stack.detector.eval()(x, text.classes(names))
        _, props = detect(stack.detector, batch, names, text)
        nodes = build_nodes(props, text.classes(names), tuple(x.shape[-2:]))
        tokens, mask = text.tokens([s.expressions[0] for s in batch])
        head = stack.head.eval()({k: nodes[k] for k in ("features", "class_embed", "boxes",
                                                         "mask")}, tokens, mask)
    return {"logits": out["logits"], "ltrb": out["ltrb"], "head": head["logits"]}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return all(torch.equal(a[k], b[k]) for k in a)


def run(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    import torch

    from eokit.core.adapters import base_fingerprint
    from eokit.core.encoders import build_text_encoder
    from eokit.core.synth.objects import generate_object_dataset
    from eokit.grounding.adapt import (
        DomainAdapters,
        adapt,
        evaluate,
        label_subset,
        parse_method,
        save_adapter_file,
    )
    from eokit.grounding.train import TextCache, scene_samples

    torch.set_num_threads(1)
    text = TextCache(build_text_encoder("minilm_l6"))
    source, target = _domains()
    size = cfg["size"]
    src = scene_samples(generate_object_dataset(cfg["source_scenes"] + cfg["source_test"], size,
                                                seed=100, domain=source, n_expressions=4))
    src_train, src_test = src[:cfg["source_scenes"]], src[cfg["source_scenes"]:]
    tgt = scene_samples(generate_object_dataset(cfg["target_pool"] + cfg["target_test"], size,
                                                seed=200, domain=target, n_expressions=4))
    tgt_pool, tgt_test = tgt[:cfg["target_pool"]], tgt[cfg["target_pool"]:]
    base, pretrain_s = _pretrain(cfg, src_train, text)
    names = list(dict.fromkeys([*SOURCE_CLASSES, *TARGET_CLASSES]))
    base_source = evaluate(base, src_test, list(SOURCE_CLASSES))
    base_target = evaluate(base, tgt_test, names)
    base_out = _outputs(base, src_test[:4], list(SOURCE_CLASSES))
    fingerprint = base_fingerprint(base, weights=True)
    runs = []
    for method in cfg["methods"]:
        for share in cfg["shares"]:
            for seed in range(cfg["seeds"]):
                stack = copy.deepcopy(base)
                torch.manual_seed(seed)
                train = label_subset(tgt_pool, share, seed)
                spec = parse_method(method)
                cost = adapt(stack, spec, train, names, steps=cfg["steps"], seed=seed,
                             adapter_name="target")
                target_m = evaluate(stack, tgt_test, names)
                source_on = evaluate(stack, src_test, list(SOURCE_CLASSES))
                adapted_out = _outputs(stack, src_test[:4], list(SOURCE_CLASSES))
                with tempfile.TemporaryDirectory() as tmp:
                    path = save_adapter_file(stack, Path(tmp) / "target.safetensors",
                                             cost.pop("trainable"), spec=spec,
                                             fingerprint=fingerprint, adapter_name="target")
                    file_mb = path.stat().st_size / 2**20
                    fresh = copy.deepcopy(base)
                    domains = DomainAdapters(fresh)
                    domains.add("target", path)
                    domains.use("target")
                    reloaded = _same(_outputs(fresh, src_test[:4], list(SOURCE_CLASSES)),
                                     adapted_out)
                    domains.use(None)
                    restored = _same(_outputs(fresh, src_test[:4], list(SOURCE_CLASSES)),
                                     base_out)
                del stack, fresh, domains
                row = {"method": method, "label_share": share, "seed": seed,
                       "train_scenes": len(train), "target": target_m,
                       "source_adapter_on": source_on,
                       "source_drop_pr50": round(base_source["Pr@0.5"] - source_on["Pr@0.5"], 2),
                       "reload_matches": reloaded, "switch_back_exact": restored,
                       "adapter_file_mb": round(file_mb, 4), **cost}
                runs.append(row)
                print(f"{method:13s} share {share:4.2f} seed {seed}: target Pr@0.5 "
                      f"{target_m['Pr@0.5']:5.1f}  source drop {row['source_drop_pr50']:5.1f}  "
                      f"{cost['trainable_percent']:7.3f} % trainable  "
                      f"{cost['step_seconds']:.3f} s/step", flush=True)
    return {"runs": runs, "pretrain_seconds": round(pretrain_s, 1),
            "base_source": base_source, "base_target": base_target}


def _summary(runs: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for method in cfg["methods"]:
        rows = [r for r in runs if r["method"] == method]
        entry: dict[str, Any] = {
            "trainable_percent": rows[0]["trainable_percent"],
            "trainable_params": rows[0]["trainable_params"],
            "optimizer_state_mb": rows[0]["optimizer_state_mb"],
            "adapter_file_mb": rows[0]["adapter_file_mb"],
            "step_seconds": round(float(np.median([r["step_seconds"] for r in rows])), 4),
            "switch_back_exact": all(r["switch_back_exact"] for r in rows),
            "reload_matches": all(r["reload_matches"] for r in rows), "shares": {}}
        for share in cfg["shares"]:
            sel = [r for r in rows if r["label_share"] == share]
            entry["shares"][f"{round(share * 100)}%"] = {
                **{k: {"mean": round(float(np.mean([r["target"][k] for r in sel])), 2),
                       "std": round(float(np.std([r["target"][k] for r in sel])), 2)}
                   for k in ("Pr@0.5", "meanIoU", "cumIoU")},
                "source_drop_pr50": round(float(np.mean([r["source_drop_pr50"] for r in sel])),
                                          2)}
        table[method] = entry
    return table


def _targets(table: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    peft = {m: e for m, e in table.items() if m != "full" and e["trainable_percent"] <= 5.0}
    out: dict[str, Any] = {}
    if "full" not in table or not peft:
        return {"note": "full fine-tuning or PEFT methods not run"}
    for share, goal in (("100%", "within_2_points"), ("5%", "better_than_full")):
        if share not in table["full"]["shares"]:
            continue
        full = table["full"]["shares"][share]["Pr@0.5"]["mean"]
        best = max(peft, key=lambda m: peft[m]["shares"][share]["Pr@0.5"]["mean"])
        value = peft[best]["shares"][share]["Pr@0.5"]["mean"]
        met = value >= full - 2.0 if goal == "within_2_points" else value > full
        out[share] = {"goal": goal, "full_pr50": full, "best_peft": best,
                      "best_peft_pr50": value,
                      "best_peft_trainable_percent": peft[best]["trainable_percent"],
                      "met": bool(met)}
    return out


def _figure(table: dict[str, Any], cfg: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = [f"{round(s * 100)}%" for s in cfg["shares"]]
    fig, axes = plt.subplots(1, len(shares), figsize=(4.2 * len(shares), 3.8), squeeze=False,
                             sharey=True)
    for ax, share in zip(axes[0], shares, strict=True):
        pts = sorted((max(e["trainable_percent"], 1e-3), e["shares"][share]["Pr@0.5"]["mean"],
                      m) for m, e in table.items())
        for x, y, m in pts:
            ax.scatter(x, y, s=30, color="C3" if m == "full" else "C0")
            ax.annotate(m, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front, best = [], -1.0
        for x, y, _ in pts:
            if y > best:
                front.append((x, y))
                best = y
        ax.plot(*zip(*front, strict=True), color="C1", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (%)")
        ax.set_title(f"target labels {share}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("target Pr@0.5 (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    seed_all(args.seed)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = _scale(args.quick)
    start = time.perf_counter()
    result = run(cfg, args.out)
    table = _summary(result["runs"], cfg)
    targets = _targets(table, cfg)
    notes = []
    for share, t in targets.items():
        if isinstance(t, dict):
            notes.append(f"{share} labels: best PEFT {t['best_peft']} {t['best_peft_pr50']} vs "
                         f"full {t['full_pr50']} Pr@0.5 -> {'met' if t['met'] else 'missed'}")
    exact = all(e["switch_back_exact"] for e in table.values())
    notes.append("switching back to the base restored the source outputs bit for bit for "
                 "every method" if exact else "switching back did NOT restore the base exactly "
                 "for some method")
    payload = {"quick": cfg["quick"], "config": cfg, "seeds": list(range(cfg["seeds"])),
               "base": {"source": result["base_source"], "target": result["base_target"]},
               "summary": table, "targets": targets,
               "verdict": "met" if targets and all(
                   t.get("met", False) for t in targets.values() if isinstance(t, dict))
               else "missed", "notes": notes,
               "pretrain_seconds": result["pretrain_seconds"], "runs": result["runs"],
               "peak_rss_mb": round(peak_rss_mb(), 1),
               "seconds": round(time.perf_counter() - start, 1)}
    json_path, _ = write_results("grounding_peft", payload, _figure(table, cfg),
                                 out_dir=args.out)
    print(json_path)


if __name__ == "__main__":
    main()
