"""Pipelines behind ``pretrain``, ``embed`` and ``probe``: imagette folders in, files out."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import InputError
from eokit.curation.data import Normalisation, list_imagettes, load_imagettes
from eokit.curation.ssl import CurationSchedule

logger = logging.getLogger(__name__)

__all__ = ["embed_folder", "load_backbone", "pretrain_folder", "probe_files", "read_labels"]

BACKBONE_FILE = "backbone.safetensors"


def read_labels(path: str | Path, files: Sequence[Path] | None = None) -> dict[str, np.ndarray]:
    """Columns of a labels CSV (``filename`` first), in ``files`` order when given.

    Numeric columns become float arrays; ``label`` becomes int64.

    Raises:
        InputError: missing file or column, a file without a row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("labels CSV not found", path=path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "filename" not in rows[0]:
        raise InputError("needs a header with a 'filename' column", path=path)
    by_name = {row["filename"]: row for row in rows}
    names = [p.name for p in files] if files is not None else [r["filename"] for r in rows]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(f"no row for {missing[0]} ({len(missing)} files missing)", path=path)
    out: dict[str, np.ndarray] = {"filename": np.array(names)}
    for column in rows[0]:
        if column == "filename":
            continue
        try:
            values = np.array([float(by_name[n][column]) for n in names])
        except ValueError:
            continue
        out[column] = values.astype(np.int64) if column == "label" else values
    return out


def pretrain_folder(images: str | Path, out_dir: str | Path, *, schedule: CurationSchedule,
                    epochs: int, size: int | None = None, normalisation: str = "quicklook",
                    backbone: str = "test_resnet", batch_size: int = 32, seed: int = 0,
                    resume: bool = False, trainer_overrides: dict[str, Any] | None = None,
                    labels: str | Path | None = None, lr: float = 1e-3,
                    command: str | None = None) -> dict[str, Any]:
    """DINO with curation rounds on an imagette folder; writes the teacher backbone and a report.

    Outputs in ``out_dir``: ``backbone.safetensors`` (teacher backbone; metadata: backbone name,
    crop size, normalisation), ``curation_rounds.json``, ``checkpoints/last.ckpt``, ``logs/``,
    ``report.html``.
    """
    from eokit.core.train import save_weights
    from eokit.curation.data import MultiCrop
    from eokit.curation.ssl import pretrain

    paths = list_imagettes(images)
    norm = Normalisation.for_kind(normalisation)
    array = load_imagettes(paths, size, norm)
    side = int(array.shape[-1])
    label_array = None
    if labels is not None:
        table = read_labels(labels, paths)
        label_array = table.get("label")
    crop = MultiCrop(global_size=max(8, side * 3 // 4), local_size=max(4, side * 3 // 8),
                     local_crops=4)
    task, callback, trainer = pretrain(
        array, out_dir, schedule=schedule, epochs=epochs, batch_size=batch_size, seed=seed,
        resume=resume, multicrop=crop, labels=label_array, trainer_overrides=trainer_overrides,
        backbone=backbone, lr=lr)
    out = Path(out_dir)
    metadata = {"backbone": backbone, "size": str(side), "normalisation": norm.to_json(),
                "in_chans": "1", "images_seen": str(task.images_seen)}
    weights = save_weights(task.teacher.backbone, out / BACKBONE_FILE, metadata)
    rounds = [asdict(r) for r in callback.rounds]
    from eokit.core.raster import atomic_write

    with atomic_write(out / "curation_rounds.json") as tmp:
        Path(tmp).write_text(json.dumps({"schedule": asdict(schedule), "rounds": rounds},
                                        indent=1) + "\n", encoding="utf-8")
    summary = {"backbone": str(weights), "images": len(paths), "size": side,
               "epochs": trainer.current_epoch, "images_seen": task.images_seen,
               "rounds": rounds, "final_loss": _metric(trainer, "train/loss_epoch")}
    summary["report"] = str(_pretrain_report(out, summary, schedule, command))
    return summary


def _metric(trainer: Any, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def _pretrain_report(out: Path, summary: dict[str, Any], schedule: CurationSchedule,
                     command: str | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eokit.core.report import Report

    report = Report("eokit curation pretrain", command=command)
    report.section(
        "DINO with dynamic curation",
        f"{summary['images']} imagettes ({summary['size']} px), {summary['epochs']} epochs, "
        f"{summary['images_seen']} images processed. Warm-up {schedule.warmup_epochs} epochs on "
        f"all data, then every {schedule.period_epochs} epochs the teacher embeds "
        f"{100 * schedule.subset_for_embedding:.0f} % of the images and "
        f"{100 * schedule.keep_fraction:.0f} % are kept ({schedule.strategy}, levels "
        f"{list(schedule.levels)}).")
    if summary["rounds"]:
        report.table([{k: v for k, v in r.items() if k != "class_counts"}
                      for r in summary["rounds"]], caption="Curation rounds")
    metrics_path = out / "logs"
    files = sorted(metrics_path.glob("version_*/metrics.csv"))
    if files:
        import pandas as pd

        frame = pd.read_csv(files[-1])
        if "train/loss_epoch" in frame:
            losses = frame[["epoch", "train/loss_epoch"]].dropna()
            fig, ax = plt.subplots(figsize=(5, 3))
            ax.plot(losses["epoch"], losses["train/loss_epoch"], "o-")
            for r in summary["rounds"]:
                ax.axvline(r["epoch"] - 0.5, color="#cc6677", alpha=0.5)
            ax.set_xlabel("epoch")
            ax.set_ylabel("DINO loss")
            ax.grid(True, alpha=0.3)
            report.figure(fig, caption="Training loss; vertical lines: curation rounds")
    report.provenance(config={"schedule": asdict(schedule)})
    return report.write(out / "report.html")


def load_backbone(path: str | Path) -> tuple[Any, dict[str, str]]:
    """The backbone saved by :func:`pretrain_folder` and its metadata.

    Raises:
        InputError: missing file or metadata.
    """
    from safetensors import safe_open

    from eokit.core.train import load_weights
    from eokit.curation.model import build_backbone

    path = Path(path)
    if path.is_dir():
        path = path / BACKBONE_FILE
    if not path.is_file():
        raise InputError("backbone weights not found", path=path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
    except Exception as error:  # safetensors' own format errors
        raise InputError(f"not a safetensors file ({error})", path=path) from None
    if "backbone" not in meta or "normalisation" not in meta:
        raise InputError("no backbone/normalisation metadata (not written by 'eokit curation "
                         "pretrain')", path=path)
    model = build_backbone(meta["backbone"], in_chans=int(meta.get("in_chans", "1")))
    load_weights(model, path)
    model.eval()
    return model, meta


def embed_folder(model_path: str | Path, images: str | Path, output: str | Path, *,
                 size: int | None = None, batch_size: int = 128) -> dict[str, Any]:
    """Embed an imagette folder with a pretrained backbone; write ``.npy`` + row file list.

    The images are read with the normalisation and crop size recorded with the model (``size``
    overrides the crop). ``<output>.files.txt`` lists the image of every row.
    """
    from eokit.core.raster import atomic_write
    from eokit.curation.ssl import embed_images

    model, meta = load_backbone(model_path)
    paths = list_imagettes(images)
    norm = Normalisation.from_json(meta["normalisation"])
    crop = size if size is not None else int(meta["size"])
    array = load_imagettes(paths, crop, norm)
    features = embed_images(model, array, batch_size=batch_size)
    if not np.isfinite(features).all():
        raise InputError("the model produced non-finite embeddings", path=model_path)
    output = Path(output)
    with atomic_write(output) as tmp:
        np.save(tmp, features, allow_pickle=False)
    listing = output.with_name(output.name + ".files.txt")
    with atomic_write(listing) as tmp:
        Path(tmp).write_text("\n".join(str(p.resolve()) for p in paths) + "\n",
                             encoding="utf-8")
    return {"embeddings": str(output), "files": str(listing), "shape": list(features.shape)}


def probe_files(embeddings: str | Path, labels: str | Path, *, files: str | Path | None = None,
                test_fraction: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """Linear/kNN probes of ``label`` and ridge probes of numeric targets on a stratified split.

    Args:
        embeddings: ``(N, D)`` ``.npy``.
        labels: CSV with ``filename`` and ``label`` and/or numeric target columns
            (``wind_speed_m_s``, ``wave_height_m`` ...).
        files: Text file listing the image of every row (default ``<embeddings>.files.txt``;
            without it the CSV rows must be in embedding order).
        test_fraction: Share of rows held out.
        seed: Split seed.
    """
    from sklearn.model_selection import train_test_split

    from eokit.curation.kmeans import EmbeddingSource
    from eokit.curation.probe import classification_probe, regression_probe

    if not 0 < test_fraction < 1:
        raise InputError(f"must lie in (0, 1), got {test_fraction}", parameter="test_fraction")
    source = EmbeddingSource.open(embeddings)
    x = source.read(0, len(source))
    listing = Path(files) if files is not None else \
        Path(str(embeddings) + ".files.txt")
    order = [Path(line) for line in listing.read_text(encoding="utf-8").split()] \
        if listing.is_file() else None
    table = read_labels(labels, order)
    if len(table["filename"]) != len(x):
        raise InputError(f"{len(table['filename'])} label rows for {len(x)} embeddings",
                         path=labels)
    stratify = table.get("label")
    try:
        train, test = train_test_split(np.arange(len(x)), test_size=test_fraction,
                                       random_state=seed, stratify=stratify)
    except ValueError:
        train, test = train_test_split(np.arange(len(x)), test_size=test_fraction,
                                       random_state=seed)
    out: dict[str, Any] = {"rows": len(x), "train": len(train), "test": len(test)}
    if "label" in table:
        y = table["label"]
        out["linear"] = classification_probe(x[train], y[train], x[test], y[test], seed=seed)
        out["knn"] = classification_probe(x[train], y[train], x[test], y[test], method="knn")
    for column, values in table.items():
        if column in ("filename", "label", "duplicate_of") or values.dtype.kind not in "fi":
            continue
        out[f"{column}_ridge"] = regression_probe(x[train], values[train], x[test],
                                                  values[test])
    return out
