"""Open-vocabulary segmentation on the vocabulary simulator: seen / unseen / h-mIoU.

Per seed: simulated scenes (``eokit.core.synth.vocab``) are cut into 128 px tiles; training
scenes and test scenes come from disjoint simulator seeds. Every model is trained on the *seen*
classes of the packaged ``sim`` split only (unseen-class pixels ignored) and scored on the test
tiles against *all* split classes, seen and unseen together; seen mIoU, unseen mIoU and
h-mIoU = 2SU/(S+U) come from one confusion matrix over every test pixel.

Models (one locked encoder pair for all: ImageNet EfficientNet-Lite0 + all-MiniLM-L6-v2, so the
encoder outputs of every tile and rotation are computed once per seed and shared):

* ``full``: rotation ensemble (0/90/180/270), guided spatial refinement, class refinement,
  semantic back-projection, multi-scale decoder;
* ablations ``no_rotation``, ``no_guidance``, ``no_back_projection``, ``no_class_refinement``,
  and ``no_rotation_no_guidance`` (the reference of the +2.5 h-mIoU target);
* ``dense_cosine``: the training-free-head baseline: the dense cosine between the projected
  image features and the prompt embeddings, nothing else (with this encoder pair the image-side
  projection itself has to be learnt from the seen classes, LiT-style; no aggregation is);
* ``closed_set``: the same encoder with a supervised head trained on all classes, seen and
  unseen (an upper bound, not an open-vocabulary model).

Training uses ``eokit.core.train`` (the same task and loss as ``eokit openvocab fit``).

    python benchmarks/openvocab_sim.py [--quick] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, seed_all, write_results  # noqa: E402

NAME = "openvocab_sim"
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_rotation": {"rotations": (0,)},
    "no_guidance": {"guidance": False},
    "no_back_projection": {"back_projection": False},
    "no_class_refinement": {"class_refinement": False},
    "no_rotation_no_guidance": {"rotations": (0,), "guidance": False},
    "dense_cosine": {"head": "cosine", "rotations": (0,)},
}
TARGET_GAIN = 2.5


def _scale(quick: bool, seeds: int) -> dict[str, Any]:
    if quick:
        return {"quick": True, "seeds": 1, "train_scenes": 2, "test_scenes": 1, "size": 256,
                "tile": 128, "epochs": 2, "batch": 8, "lr": 3e-3}
    return {"quick": False, "seeds": seeds, "train_scenes": 8, "test_scenes": 3, "size": 256,
            "tile": 128, "epochs": 12, "batch": 8, "lr": 3e-3}


def _scores(cm: Any, n_seen: int, n_all: int) -> dict[str, Any]:
    from eokit.openvocab.model import seen_unseen_scores

    s = seen_unseen_scores(cm, range(n_seen), range(n_seen, n_all))
    return {k: (100 * v if isinstance(v, float) else [100 * x for x in v]) for k, v in s.items()}


def run_seed(seed: int, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    import torch

    from eokit.core.encoders import build_image_encoder, build_text_encoder
    from eokit.core.metrics import ConfusionMatrix
    from eokit.openvocab.data import load_split
    from eokit.openvocab.model import ClosedSetSegmenter, OpenVocabSegmenter
    from eokit.openvocab.pipeline import SIZES, scene_items, simulated_scenes
    from eokit.openvocab.prompts import PromptBank, class_texts
    from eokit.openvocab.task import (
        ClosedSetTask,
        EncodedDataset,
        OpenVocabTask,
        encode_dataset,
        fit_task,
        remap_labels,
    )

    seed_all(seed)
    split = load_split("sim")
    seen, unseen = list(split.seen), list(split.unseen)
    names = seen + unseen
    t0 = time.perf_counter()
    train_scenes = simulated_scenes(cfg["train_scenes"], cfg["size"], 1000 * seed + 1)
    test_scenes = simulated_scenes(cfg["test_scenes"], cfg["size"], 1000 * seed + 500)
    train_x, train_y = scene_items(train_scenes, names, cfg["tile"])
    test_x, test_y = scene_items(test_scenes, names, cfg["tile"])
    seen_map = list(range(len(seen))) + [255] * len(unseen)
    train_seen_y = [remap_labels(y, seen_map) for y in train_y]
    encoder = build_image_encoder("efficientnet_lite0", pretrained=True, frozen_bn=True)
    text_encoder = build_text_encoder("minilm_l6").requires_grad_(False).eval()
    bank = PromptBank(text_encoder.encode)
    vocab = _vocabulary()
    text_seen = bank(class_texts(seen, vocab))
    text_all = bank(class_texts(names, vocab))
    small = {**SIZES["small"]}
    probe = OpenVocabSegmenter(encoder, text_encoder.dim, bank.num_prompts, **small)
    train_enc = encode_dataset(probe, train_x)
    test_enc = encode_dataset(probe, test_x)
    encode_s = time.perf_counter() - t0
    y_seen = torch.from_numpy(np.stack(train_seen_y))
    y_all = torch.from_numpy(np.stack(train_y))
    y_test = np.stack(test_y)
    overrides = {"logger": False}
    results: dict[str, Any] = {"train_tiles": len(train_x), "test_tiles": len(test_x),
                               "encode_s": round(encode_s, 1), "methods": {}}
    pixels_present = [int((y_test == k).sum()) for k in range(len(names))]
    results["test_pixels_per_class"] = dict(zip(names, pixels_present, strict=True))
    for method, switches in ABLATIONS.items():
        t = time.perf_counter()
        torch.manual_seed(seed)
        model = OpenVocabSegmenter(encoder, text_encoder.dim, bank.num_prompts,
                                   **{**small, **switches})
        rotations = len(model.rotations)
        task = OpenVocabTask(model, text_seen, lr=cfg["lr"], image_size=(cfg["tile"],) * 2)
        fit_task(task, EncodedDataset(train_enc, y_seen, rotations=rotations), None,
                 work / f"{method}-{seed}", max_epochs=cfg["epochs"], batch_size=cfg["batch"],
                 seed=seed, trainer_overrides=overrides)
        model.eval()
        cm = ConfusionMatrix(len(names))
        with torch.no_grad():
            for start in range(0, len(test_x), 8):
                enc = test_enc.select(slice(start, start + 8)).float()
                enc.dense = enc.dense[:, :rotations]
                logits = model.forward_encoded(enc, text_all, (cfg["tile"],) * 2)
                cm.update(logits.argmax(1).numpy(), y_test[start:start + 8])
        results["methods"][method] = {**_scores(cm, len(seen), len(names)),
                                      "train_s": round(time.perf_counter() - t, 1)}
        print(f"seed {seed} {method}: {results['methods'][method]['h_miou']:.1f} h-mIoU "
              f"({results['methods'][method]['train_s']} s)", flush=True)
    # closed-set bound: all classes supervised
    t = time.perf_counter()
    torch.manual_seed(seed)
    closed = ClosedSetSegmenter(encoder, len(names))
    fit_task(ClosedSetTask(closed, lr=cfg["lr"]), EncodedDataset(train_enc, y_all, rotations=1),
             None, work / f"closed-{seed}", max_epochs=cfg["epochs"], batch_size=cfg["batch"],
             seed=seed, trainer_overrides=overrides)
    closed.eval()
    cm = ConfusionMatrix(len(names))
    with torch.no_grad():
        for start in range(0, len(test_x), 8):
            enc = test_enc.select(slice(start, start + 8)).float()
            logits = closed.forward_features(enc.dense[:, 0], enc.skips[-1:], (cfg["tile"],) * 2)
            cm.update(logits.argmax(1).numpy(), y_test[start:start + 8])
    results["methods"]["closed_set"] = {**_scores(cm, len(seen), len(names)),
                                        "train_s": round(time.perf_counter() - t, 1)}
    results["seen"], results["unseen"] = seen, unseen
    results["split_version"] = str(getattr(split, "version", ""))
    results["split_sha256"] = str(getattr(split, "sha256", ""))
    return results


def _vocabulary() -> dict[str, Any]:
    from eokit.openvocab.data import load_vocabulary

    return dict(load_vocabulary())


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    methods = list(per_seed[0]["methods"])
    out: dict[str, Any] = {}
    for m in methods:
        row: dict[str, Any] = {}
        for key in ("seen_miou", "unseen_miou", "h_miou"):
            values = [s["methods"][m][key] for s in per_seed]
            finite = [v for v in values if math.isfinite(v)]
            row[key] = float(np.mean(finite)) if finite else float("nan")
            row[f"{key}_std"] = float(np.std(finite)) if len(finite) > 1 else 0.0
            row[f"{key}_per_seed"] = values
        out[m] = row
    return out


def verdict(summary: dict[str, Any], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    full, ref, base = summary["full"], summary["no_rotation_no_guidance"], summary["dense_cosine"]
    gain = full["h_miou"] - ref["h_miou"]
    paired = [s["methods"]["full"]["h_miou"] - s["methods"]["no_rotation_no_guidance"]["h_miou"]
              for s in per_seed]
    unseen_gain = full["unseen_miou"] - base["unseen_miou"]
    return {
        "gain_over_no_rotation_no_guidance_h_miou": gain,
        "paired_gain_per_seed": paired,
        "target_gain_h_miou": TARGET_GAIN,
        "gain_target_met": bool(gain >= TARGET_GAIN),
        "unseen_gain_over_dense_cosine": unseen_gain,
        "above_baseline_on_unseen_met": bool(unseen_gain > 0),
    }


def figure(summary: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    keys = [("seen_miou", "seen"), ("unseen_miou", "unseen"), ("h_miou", "h-mIoU")]
    fig, ax = plt.subplots(figsize=(11, 4.2))
    x = np.arange(len(methods))
    width = 0.27
    for i, (key, label) in enumerate(keys):
        means = [summary[m][key] for m in methods]
        stds = [summary[m][f"{key}_std"] for m in methods]
        ax.bar(x + (i - 1) * width, means, width, yerr=stds, capsize=2, label=label)
    ax.set_xticks(x, [m.replace("_", "\n") for m in methods], fontsize=8)
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Open-vocabulary segmentation on the simulator (mean and std over seeds)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (>= 3 for results)")
    args = parser.parse_args(argv)
    import tempfile

    import torch

    torch.set_num_threads(1)
    cfg = _scale(args.quick, args.seeds)
    start = time.perf_counter()
    per_seed = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(cfg["seeds"]):
            per_seed.append(run_seed(args.seed + i, cfg, Path(tmp)))
    summary = summarise(per_seed)
    check = verdict(summary, per_seed)
    first = per_seed[0]
    notes = [f"split: packaged sim split v{first['split_version']} (sha256 "
             f"{first['split_sha256'][:12]}), {len(first['seen'])} seen / "
             f"{len(first['unseen'])} unseen"]
    notes.append(
        f"full vs no_rotation_no_guidance: {check['gain_over_no_rotation_no_guidance_h_miou']:+.1f}"
        f" h-mIoU (target >= +{TARGET_GAIN}: "
        f"{'met' if check['gain_target_met'] else 'missed'})")
    notes.append(
        f"full vs dense_cosine on unseen classes: {check['unseen_gain_over_dense_cosine']:+.1f} "
        f"mIoU (target > 0: {'met' if check['above_baseline_on_unseen_met'] else 'missed'})")
    payload = {"config": cfg, "seeds": [args.seed + i for i in range(cfg["seeds"])],
               "summary": summary, "verdict": check, "notes": notes, "per_seed": per_seed,
               "wall_s": round(time.perf_counter() - start, 1)}
    json_path, _ = write_results(NAME, payload, figure(summary), out_dir=args.out)
    for line in notes:
        print(line)
    print(json_path)


if __name__ == "__main__":
    main()
