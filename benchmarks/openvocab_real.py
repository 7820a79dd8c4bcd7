"""Open-vocabulary segmentation across datasets: hold one real set out, score it by its own names.

The real labelled samples in ``../shared/data/segmentation`` (LoveDA, ISPRS Potsdam/Vaihingen,
iSAID; see their PROVENANCE.md) are read by ``eokit.openvocab.data.read_folder`` with their own
class tables. For each held-out set, a model trains on the two other sets plus simulated scenes
(``core.synth.vocab``), each tile labelled in the union of the training sets' class *names*.
It is then asked for the held-out set's class names and scored on all of its tiles. Names are
matched by text only: a held-out class counts as *seen* when a training set has a class of
exactly that name (case-insensitive), else *unseen*; no hand-written mapping is used.

Per held-out set and seed, two models on one locked encoder pair (ImageNet EfficientNet-Lite0
+ all-MiniLM-L6-v2): ``full`` (rotation ensemble, guidance, class refinement, back-projection)
and ``dense_cosine`` (the projected-feature cosine baseline). The seed draws the training tiles
(at most ``max_tiles`` per real set), the simulated scenes and the initialisation.

The samples are tiny (2-3 images per set): the numbers show what transfers between these
images, not dataset-level accuracy. Skips cleanly (exit 0, a message) without the data.

    python benchmarks/openvocab_real.py [--quick] [--seeds 3] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, seed_all, write_results  # noqa: E402

NAME = "openvocab_real"
SETS = {
    "loveda": ("segmentation/loveda", "loveda"),
    "isprs": ("segmentation/isprs_potsdam_vaihingen", "isprs"),
    "isaid": ("segmentation/isaid", "isaid"),
}
METHODS: dict[str, dict[str, Any]] = {
    "full": {},
    "dense_cosine": {"head": "cosine", "rotations": (0,)},
}


def _scale(quick: bool, seeds: int) -> dict[str, Any]:
    if quick:
        return {"quick": True, "seeds": 1, "tile": 128, "max_tiles": 8, "sim_scenes": 1,
                "epochs": 1, "batch": 8, "lr": 3e-3, "holdouts": ["isprs"]}
    return {"quick": False, "seeds": seeds, "tile": 128, "max_tiles": 48, "sim_scenes": 4,
            "epochs": 8, "batch": 8, "lr": 3e-3, "holdouts": list(SETS)}


def read_sets(root: Path, tile: int) -> dict[str, dict[str, Any]]:
    """Tiles and class names of every real set (labels in each set's own class ids)."""
    from eokit.openvocab.data import read_folder
    from eokit.openvocab.pipeline import tiles_of

    out = {}
    for key, (rel, layout) in SETS.items():
        data = read_folder(root / rel, layout=layout)
        images, labels = [], []
        for image, label in data:
            for img, lab in tiles_of(image[:3], label, tile):
                images.append(img)
                labels.append(lab)
        out[key] = {"names": list(data.classes.names), "images": images, "labels": labels,
                    "files": len(data), "pixels": data.class_pixels()}
    return out


def _union(name_lists: list[list[str]]) -> list[str]:
    seen: dict[str, str] = {}
    for names in name_lists:
        for n in names:
            seen.setdefault(n.lower(), n)
    return list(seen.values())


def run_holdout(holdout: str | None, sets: dict[str, dict[str, Any]], seed: int,
                cfg: dict[str, Any], work: Path, keep: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Train on every set but ``holdout`` (None: all sets, no scores) and score the holdout.

    ``keep`` receives the trained ``full`` model and the text bank, for the qualitative maps.
    """
    import torch

    from eokit.core.encoders import build_image_encoder, build_text_encoder
    from eokit.core.metrics import ConfusionMatrix
    from eokit.core.types import IGNORE_INDEX
    from eokit.openvocab.data import load_vocabulary
    from eokit.openvocab.model import OpenVocabSegmenter, seen_unseen_scores
    from eokit.openvocab.pipeline import SIZES, index_map, scene_items, simulated_scenes
    from eokit.openvocab.prompts import PromptBank, class_texts
    from eokit.openvocab.task import (
        EncodedDataset,
        OpenVocabTask,
        encode_dataset,
        fit_task,
        remap_labels,
    )

    seed_all(seed)
    rng = np.random.default_rng(seed)
    sources = [k for k in sets if k != holdout]
    scenes = simulated_scenes(cfg["sim_scenes"], 256, 7000 + 100 * seed)
    sim_names = list(scenes[0].class_names)
    train_names = _union([*(sets[k]["names"] for k in sources), sim_names])
    train_x, train_y = scene_items(scenes, train_names, cfg["tile"])
    drawn = {"sim": len(train_x)}
    for k in sources:
        idx = rng.permutation(len(sets[k]["images"]))[: cfg["max_tiles"]]
        mapping = index_map(sets[k]["names"], train_names, k)
        train_x += [sets[k]["images"][i] for i in idx]
        train_y += [remap_labels(sets[k]["labels"][i], mapping) for i in idx]
        drawn[k] = len(idx)
    if holdout is None:
        test_names, test_x, test_y = train_names, train_x[:1], np.stack(train_y[:1])
    else:
        test_names = sets[holdout]["names"]
        test_x, test_y = sets[holdout]["images"], np.stack(sets[holdout]["labels"])
    known = {n.lower() for n in train_names}
    seen_ids = [i for i, n in enumerate(test_names) if n.lower() in known]
    unseen_ids = [i for i, n in enumerate(test_names) if n.lower() not in known]

    encoder = build_image_encoder("efficientnet_lite0", pretrained=True, frozen_bn=True)
    text_encoder = build_text_encoder("minilm_l6").requires_grad_(False).eval()
    bank = PromptBank(text_encoder.encode)
    vocab = dict(load_vocabulary())
    text_train = bank(class_texts(train_names, vocab))
    text_test = bank(class_texts(test_names, vocab))
    small = dict(SIZES["small"])
    probe = OpenVocabSegmenter(encoder, text_encoder.dim, bank.num_prompts, **small)
    t0 = time.perf_counter()
    train_enc = encode_dataset(probe, train_x)
    test_enc = encode_dataset(probe, test_x)
    encode_s = time.perf_counter() - t0
    y_train = torch.from_numpy(np.stack(train_y))
    result: dict[str, Any] = {
        "holdout": holdout, "seed": seed, "train_sets": sources, "train_tiles": drawn,
        "test_tiles": len(test_x), "train_names": train_names, "test_names": test_names,
        "seen": [test_names[i] for i in seen_ids], "unseen": [test_names[i] for i in unseen_ids],
        "encode_s": round(encode_s, 1), "methods": {}}
    size = (cfg["tile"],) * 2
    for method, switches in METHODS.items():
        if holdout is None and method != "full":
            continue
        t = time.perf_counter()
        torch.manual_seed(seed)
        model = OpenVocabSegmenter(encoder, text_encoder.dim, bank.num_prompts,
                                   **{**small, **switches})
        rotations = len(model.rotations)
        task = OpenVocabTask(model, text_train, lr=cfg["lr"], image_size=size)
        fit_task(task, EncodedDataset(train_enc, y_train, rotations=rotations), None,
                 work / f"{holdout}-{method}-{seed}", max_epochs=cfg["epochs"],
                 batch_size=cfg["batch"], seed=seed, trainer_overrides={"logger": False})
        model.eval()
        if keep is not None and method == "full":
            keep.update(model=model, bank=bank, vocab=vocab, train_names=train_names)
        if holdout is None:
            continue
        cm = ConfusionMatrix(len(test_names), class_names=test_names)
        with torch.no_grad():
            for start in range(0, len(test_x), 8):
                enc = test_enc.select(slice(start, start + 8)).float()
                enc.dense = enc.dense[:, :rotations]
                logits = model.forward_encoded(enc, text_test, size)
                cm.update(logits.argmax(1).numpy(), test_y[start:start + 8])
        sc = seen_unseen_scores(cm, seen_ids, unseen_ids)
        s, u, h = (100 * float(sc[k]) for k in ("seen_miou", "unseen_miou", "h_miou"))
        iou = [float(v) for v in sc["iou"]]
        present = set(np.unique(test_y[test_y != IGNORE_INDEX]).tolist())
        sp = seen_unseen_scores(cm, [i for i in seen_ids if i in present],
                                [i for i in unseen_ids if i in present])
        result["methods"][method] = {
            "seen_miou": s, "unseen_miou": u, "h_miou": h,
            "present_classes_only": {k: 100 * float(sp[k]) for k in
                                     ("seen_miou", "unseen_miou", "h_miou", "miou")},
            "miou": 100 * float(sc["miou"]),
            "per_class_iou": {n: (None if np.isnan(v) else 100 * v)
                              for n, v in zip(test_names, iou, strict=True)},
            "train_s": round(time.perf_counter() - t, 1)}
        print(f"holdout {holdout} seed {seed} {method}: seen {s:.1f} unseen {u:.1f} "
              f"h {h:.1f} ({result['methods'][method]['train_s']} s)", flush=True)
    result["test_pixels"] = {n: int((test_y == i).sum()) for i, n in enumerate(test_names)}
    result["ignored_pixels"] = int((test_y == IGNORE_INDEX).sum())
    return result


#: OpenEarthMap class names (as the SegEarth-OV demo asks for them) for the unlabelled tiles.
OEM_NAMES = ["background", "bareland", "grass", "pavement", "road", "tree", "water", "cropland",
             "building"]


def qualitative(data_root: Path, keep: dict[str, Any], out_png: Path) -> dict[str, Any]:
    """Class maps of the unlabelled OpenEarthMap tiles from a model trained on all sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from eokit.core.raster import read_image, to_unit
    from eokit.core.tiling import predict_array
    from eokit.openvocab.pipeline import class_colours
    from eokit.openvocab.prompts import class_texts

    folder = data_root / "grounding" / "openearthmap_rgb_sample"
    files = sorted(folder.glob("*.tif"))
    if not files:
        return {}
    model = keep["model"]
    text = keep["bank"](class_texts(OEM_NAMES, keep["vocab"]))
    colours = class_colours(OEM_NAMES)
    fig, axes = plt.subplots(2, len(files), figsize=(5 * len(files), 9.5), squeeze=False)
    fractions = {}
    for k, path in enumerate(files):
        image = to_unit(read_image(path).data[:3], path)

        def net(x: Any) -> Any:
            return torch.softmax(model(x, text), 1)

        with torch.no_grad():
            probs = predict_array(net, [image], out_channels=len(OEM_NAMES), tile=256,
                                  overlap=32, align=model.align)
        labels = np.nan_to_num(probs).argmax(0)
        counts = np.bincount(labels.ravel(), minlength=len(OEM_NAMES)) / labels.size
        fractions[path.name] = {n: round(float(c), 4) for n, c in zip(OEM_NAMES, counts,
                                                                       strict=True)}
        rgb = np.clip(np.moveaxis(image, 0, -1), 0, 1)
        axes[0][k].imshow(rgb)
        axes[0][k].set_title(path.name, fontsize=9)
        axes[1][k].imshow(labels, cmap=ListedColormap(colours), vmin=0,
                          vmax=len(OEM_NAMES) - 1, interpolation="nearest")
        for ax in (axes[0][k], axes[1][k]):
            ax.set_axis_off()
    fig.legend(handles=[Patch(color=c, label=n) for n, c in zip(OEM_NAMES, colours,
                                                                 strict=True)],
               loc="lower center", ncol=5, fontsize=8)
    fig.suptitle("OpenEarthMap tiles (no labels), asked for the SegEarth-OV demo classes by a "
                 "model trained on LoveDA + ISPRS + iSAID + simulator", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return {"figure": out_png.name, "classes": OEM_NAMES, "predicted_fractions": fractions}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for holdout in dict.fromkeys(r["holdout"] for r in runs):
        sel = [r for r in runs if r["holdout"] == holdout]
        row: dict[str, Any] = {"seen": sel[0]["seen"], "unseen": sel[0]["unseen"]}
        for method in METHODS:
            m: dict[str, Any] = {}
            for key in ("seen_miou", "unseen_miou", "h_miou", "miou"):
                for prefix, get in (("", lambda r, k: r[k]),
                                    ("present_", lambda r, k: r["present_classes_only"][k])):
                    vals = [get(r["methods"][method], key) for r in sel]
                    fin = [v for v in vals if np.isfinite(v)]
                    m[prefix + key] = float(np.mean(fin)) if fin else float("nan")
                    m[f"{prefix}{key}_std"] = float(np.std(fin)) if len(fin) > 1 else 0.0
            per_class = {}
            for name in sel[0]["test_names"]:
                vals = [r["methods"][method]["per_class_iou"][name] for r in sel]
                vals = [v for v in vals if v is not None]
                per_class[name] = float(np.mean(vals)) if vals else None
            m["per_class_iou"] = per_class
            row[method] = m
        out[holdout] = row
    return out


def figure(summary: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    holdouts = list(summary)
    fig, axes = plt.subplots(1, len(holdouts), figsize=(5.2 * len(holdouts), 4.2), squeeze=False)
    for ax, holdout in zip(axes[0], holdouts, strict=True):
        row = summary[holdout]
        names = list(row["full"]["per_class_iou"])
        x = np.arange(len(names))
        for k, method in enumerate(METHODS):
            vals = [row[method]["per_class_iou"][n] for n in names]
            ax.bar(x + (k - 0.5) * 0.4, [np.nan if v is None else v for v in vals], 0.4,
                   label=method)
        unseen = set(row["unseen"])
        ax.set_xticks(x, [f"{n}{' *' if n in unseen else ''}" for n in names], rotation=60,
                      ha="right", fontsize=7)
        ax.set_title(f"held out: {holdout} (* = unseen name)", fontsize=9)
        ax.set_ylabel("IoU (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Cross-dataset open-vocabulary segmentation (mean over seeds; classes absent "
                 "from the held-out images have no bar)", fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (>= 3 for results)")
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared" / "data",
                        help="folder holding segmentation/{loveda,isprs_potsdam_vaihingen,isaid}")
    args = parser.parse_args(argv)
    missing = [rel for rel, _ in SETS.values() if not (args.data / rel).is_dir()]
    if missing:
        print(f"{NAME}: skipped, sample data not found under {args.data} ({', '.join(missing)})")
        return
    import tempfile

    import torch

    torch.set_num_threads(1)
    cfg = _scale(args.quick, args.seeds)
    start = time.perf_counter()
    sets = read_sets(args.data, cfg["tile"])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for holdout in cfg["holdouts"]:
            for i in range(cfg["seeds"]):
                runs.append(run_holdout(holdout, sets, args.seed + i, cfg, Path(tmp)))
        keep: dict[str, Any] = {}
        run_holdout(None, sets, args.seed, cfg, Path(tmp), keep=keep)
        maps = qualitative(args.data, keep, args.out / "quick" / f"{NAME}_oem.png"
                           if cfg["quick"] else args.out / f"{NAME}_oem.png")
    summary = summarise(runs)
    notes = [
        "tiny samples: 3 LoveDA, 2 ISPRS (1 Potsdam RGB, 1 Vaihingen IR-R-G read as RGB) and 3 "
        "iSAID images; every held-out tile is scored, so seeds differ only in training",
        "a class absent from the held-out images but predicted scores IoU 0 and counts in the "
        "means (one dataset-level confusion matrix); present_* scores keep only the classes "
        "present in the held-out labels",
        "seen/unseen is decided by exact class-name match with a training set; names such as "
        "'tree' vs 'forest' or 'car' vs 'small vehicle' count as unseen and must transfer "
        "through the text encoder",
    ]
    for holdout, row in summary.items():
        f, b = row["full"], row["dense_cosine"]
        notes.append(
            f"held out {holdout}: full seen {f['seen_miou']:.1f} / unseen {f['unseen_miou']:.1f}"
            f" / h {f['h_miou']:.1f}; dense_cosine seen {b['seen_miou']:.1f} / unseen "
            f"{b['unseen_miou']:.1f} / h {b['h_miou']:.1f} (mIoU %); present classes only: "
            f"full h {f['present_h_miou']:.1f}, dense_cosine h {b['present_h_miou']:.1f}")
    payload = {"config": cfg, "seeds": [args.seed + i for i in range(cfg["seeds"])],
               "sets": {k: {"names": v["names"], "files": v["files"], "tiles": len(v["images"]),
                            "pixels": v["pixels"]} for k, v in sets.items()},
               "summary": summary, "notes": notes, "runs": runs, "qualitative": maps,
               "wall_s": round(time.perf_counter() - start, 1)}
    json_path, _ = write_results(NAME, payload, figure(summary), out_dir=args.out)
    for line in notes:
        print(line)
    print(json_path)


if __name__ == "__main__":
    main()
