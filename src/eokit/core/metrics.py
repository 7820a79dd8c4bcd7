"""Evaluation metrics: a global confusion matrix (P/R/F1/IoU/OA/kappa), ranking and regression.

One implementation for the whole toolkit. The confusion matrix is accumulated over a whole split
(every ``update`` adds counts), so the scores are *global* (micro over pixels, macro over
classes), never averages of per-batch scores.

Zero-division policy (documented once, applied everywhere): a per-class score whose denominator
is zero is ``NaN`` ("undefined"), not 0 or 1:

* precision_k = TP / (TP + FP) is NaN when class k is never predicted;
* recall_k = TP / (TP + FN) is NaN when class k never occurs in the reference;
* F1_k = 2TP / (2TP + FP + FN) and IoU_k = TP / (TP + FP + FN) are NaN only when class k is
  absent from both reference and prediction.

Means (``mean_f1``, ``mean_iou``, ...) average over the classes where the score is defined
(``nanmean``). A class absent from the reference but predicted somewhere therefore enters the
F1/IoU means with 0 (its false alarms are penalised), while a class absent from both is left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX, as_numpy

logger = logging.getLogger(__name__)

__all__ = [
    "ConfusionMatrix",
    "binary_ranking_metrics",
    "jsonable",
    "regression_metrics",
    "roc_pr_curves",
]


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio; NaN where the denominator is zero."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean over finite entries; NaN (without a warning) when there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _as_class_ids(array: Any, name: str) -> np.ndarray:
    """Flatten ``array`` to int64 class ids; floats must hold whole numbers."""
    values = as_numpy(array)
    if values.dtype == np.bool_:
        return values.reshape(-1).astype(np.int64)
    if np.issubdtype(values.dtype, np.integer):
        return values.reshape(-1).astype(np.int64, copy=False)
    if np.issubdtype(values.dtype, np.floating):
        flat = values.reshape(-1)
        if not np.all(np.isfinite(flat)) or not np.all(flat == np.round(flat)):
            raise InputError(
                "expected integer class ids, got non-integer values; take argmax of scores first",
                parameter=name,
            )
        return flat.astype(np.int64)
    raise InputError(f"expected class ids, got dtype {values.dtype}", parameter=name)


class ConfusionMatrix:
    """Global confusion matrix over a split, rows = reference (truth), columns = prediction.

    Args:
        num_classes: Number of classes K; class ids are 0..K-1.
        ignore_index: Reference value meaning "no label" (default 255); such pixels are skipped.
        class_names: Optional names used by :meth:`per_class_rows`.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> cm.update([0, 1, 2, 2], [0, 1, 1, 2])
        >>> round(cm.compute()["oa"], 2)
        0.75
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        *,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if int(num_classes) < 1:
            raise InputError(f"must be >= 1, got {num_classes}", parameter="num_classes")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        if class_names is not None and len(class_names) != self.num_classes:
            raise InputError(
                f"has {len(class_names)} names for {self.num_classes} classes",
                parameter="class_names",
            )
        self.class_names = list(class_names) if class_names is not None else None
        self._matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """(K, K) int64 counts, rows = reference class, columns = predicted class (a copy)."""
        return self._matrix.copy()

    @property
    def total(self) -> int:
        """Number of pixels counted so far."""
        return int(self._matrix.sum())

    def reset(self) -> None:
        """Forget all counts."""
        self._matrix[:] = 0

    def update(self, pred: Any, target: Any, valid: Any | None = None) -> None:
        """Add one batch of predictions to the matrix.

        Args:
            pred: Predicted class ids, any shape (numpy array, tensor or sequence).
            target: Reference class ids, same shape; ``ignore_index`` pixels are skipped.
            valid: Optional bool mask of the same shape (or broadcastable to it); False pixels
                are skipped (nodata).

        Raises:
            InputError: on shape mismatch or class ids outside 0..K-1.
        """
        pred_np = as_numpy(pred)
        target_np = as_numpy(target)
        if pred_np.shape != target_np.shape:
            raise InputError(
                f"shape {pred_np.shape} differs from target shape {target_np.shape}",
                parameter="pred",
            )
        pred_ids = _as_class_ids(pred_np, "pred")
        target_ids = _as_class_ids(target_np, "target")
        keep = target_ids != self.ignore_index
        if valid is not None:
            valid_np = as_numpy(valid).astype(bool)
            try:
                valid_np = np.broadcast_to(valid_np, target_np.shape)
            except ValueError:
                raise InputError(
                    f"shape {valid_np.shape} does not fit target shape {target_np.shape}",
                    parameter="valid",
                ) from None
            keep &= valid_np.reshape(-1)
        pred_ids = pred_ids[keep]
        target_ids = target_ids[keep]
        if target_ids.size == 0:
            return
        k = self.num_classes
        if target_ids.min() < 0 or target_ids.max() >= k:
            bad = target_ids[(target_ids < 0) | (target_ids >= k)][0]
            raise InputError(
                f"class id {bad} outside 0..{k - 1} (and not ignore_index {self.ignore_index})",
                parameter="target",
            )
        if pred_ids.min() < 0 or pred_ids.max() >= k:
            bad = pred_ids[(pred_ids < 0) | (pred_ids >= k)][0]
            raise InputError(f"class id {bad} outside 0..{k - 1}", parameter="pred")
        counts = np.bincount(target_ids * k + pred_ids, minlength=k * k)
        self._matrix += counts.reshape(k, k)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (e.g. from another worker) into this matrix; returns self."""
        if other.num_classes != self.num_classes:
            raise InputError(
                f"cannot merge {other.num_classes} classes into {self.num_classes}",
                parameter="other",
            )
        self._matrix += other._matrix
        return self

    def sync(self) -> None:
        """Sum the matrix over all ranks when ``torch.distributed`` is initialised (else no-op)."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            tensor = torch.from_numpy(self._matrix.copy())
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            self._matrix = tensor.numpy().astype(np.int64)

    def compute(self) -> dict[str, Any]:
        """Scores from the accumulated counts.

        Returns:
            Dict with per-class lists ``precision``, ``recall``, ``f1``, ``iou``, ``support``
            (reference pixels per class) and scalars ``mean_precision``, ``mean_recall``,
            ``mean_f1``, ``mean_iou`` (over classes where defined), ``oa`` (overall accuracy),
            ``kappa`` (Cohen's kappa) and ``n`` (pixels counted). Undefined values are NaN.
        """
        m = self._matrix.astype(np.float64)
        tp = np.diag(m)
        support = m.sum(axis=1)  # reference count per class
        predicted = m.sum(axis=0)
        fp = predicted - tp
        fn = support - tp
        total = m.sum()
        if total == 0:
            logger.warning("confusion matrix is empty: every score is NaN")
        precision = _safe_divide(tp, tp + fp)
        recall = _safe_divide(tp, tp + fn)
        f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)
        iou = _safe_divide(tp, tp + fp + fn)
        oa = float(tp.sum() / total) if total else math.nan
        if total:
            expected = float((support * predicted).sum() / (total * total))
            kappa = (oa - expected) / (1.0 - expected) if expected < 1.0 else math.nan
        else:
            kappa = math.nan
        return {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "iou": iou.tolist(),
            "support": [int(s) for s in support],
            "mean_precision": _nanmean(precision),
            "mean_recall": _nanmean(recall),
            "mean_f1": _nanmean(f1),
            "mean_iou": _nanmean(iou),
            "oa": oa,
            "kappa": float(kappa),
            "n": int(total),
        }

    def per_class_rows(self, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per class (name, support, precision, recall, F1, IoU) for report tables/CSV."""
        names = list(class_names) if class_names is not None else self.class_names
        if names is None:
            names = [str(k) for k in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise InputError(
                f"has {len(names)} names for {self.num_classes} classes", parameter="class_names"
            )
        scores = self.compute()
        return [
            {
                "class": names[k],
                "support": scores["support"][k],
                "precision": scores["precision"][k],
                "recall": scores["recall"][k],
                "f1": scores["f1"][k],
                "iou": scores["iou"][k],
            }
            for k in range(self.num_classes)
        ]


def _and_valid(keep: np.ndarray, valid: Any | None, counted: str) -> np.ndarray:
    """Flat ``keep`` mask AND the flattened ``valid`` mask, which must have as many entries.

    ``counted`` names what ``keep`` has one entry per (for the error message).
    """
    if valid is None:
        return keep
    valid_np = as_numpy(valid).astype(bool).reshape(-1)
    if valid_np.shape != keep.shape:
        raise InputError(f"{valid_np.size} entries for {keep.size} {counted}", parameter="valid")
    combined: np.ndarray = keep & valid_np
    return combined


def _binary_inputs(scores: Any, labels: Any, valid: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """Flatten scores/labels, drop ignore/invalid/non-finite entries, check labels are 0/1."""
    score_np = as_numpy(scores).astype(np.float64).reshape(-1)
    label_np = as_numpy(labels).reshape(-1)
    if score_np.shape != label_np.shape:
        raise InputError(f"{score_np.size} scores for {label_np.size} labels", parameter="scores")
    keep = _and_valid((label_np != IGNORE_INDEX) & np.isfinite(score_np), valid, "labels")
    score_np = score_np[keep]
    label_np = label_np[keep]
    if label_np.size and not np.all((label_np == 0) | (label_np == 1)):
        raise InputError(
            f"binary labels must be 0/1 (or {IGNORE_INDEX} = ignore)", parameter="labels"
        )
    return score_np, label_np.astype(np.int64)


def binary_ranking_metrics(
    scores: Any, labels: Any, *, valid: Any | None = None
) -> dict[str, float]:
    """Threshold-free scores for a binary problem (scikit-learn).

    Args:
        scores: Scores or probabilities of the positive class, any shape.
        labels: 0/1 reference of the same shape; ``IGNORE_INDEX`` (255) entries are skipped.
        valid: Optional bool mask; False entries are skipped. Non-finite scores are skipped.

    Returns:
        ``roc_auc`` (area under the ROC curve), ``pr_auc`` (average precision, the step-wise
        area under the precision-recall curve, not the trapezoid), ``n``, ``n_positive``.
        ROC-AUC is NaN when only one class is present; PR-AUC is NaN without positives.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    score_np, label_np = _binary_inputs(scores, labels, valid)
    n_positive = int(label_np.sum())
    n = int(label_np.size)
    roc_auc = math.nan
    pr_auc = math.nan
    if 0 < n_positive < n:
        roc_auc = float(roc_auc_score(label_np, score_np))
    if n_positive > 0:
        pr_auc = float(average_precision_score(label_np, score_np))
    if not 0 < n_positive < n:
        logger.warning(
            "ranking metrics on %d samples with %d positives: undefined -> NaN", n, n_positive
        )
    return {"roc_auc": roc_auc, "pr_auc": pr_auc, "n": n, "n_positive": n_positive}


def roc_pr_curves(scores: Any, labels: Any, *, valid: Any | None = None) -> dict[str, np.ndarray]:
    """ROC and precision-recall curves (scikit-learn) for plotting.

    Returns:
        Dict of 1-D arrays: ``fpr``, ``tpr``, ``roc_thresholds``, ``precision``, ``recall``,
        ``pr_thresholds``. Raises :class:`InputError` when both classes are not present.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    score_np, label_np = _binary_inputs(scores, labels, valid)
    n_positive = int(label_np.sum())
    if not 0 < n_positive < label_np.size:
        raise InputError(
            f"need both classes for curves, got {n_positive} positives of {label_np.size}",
            parameter="labels",
        )
    fpr, tpr, roc_thresholds = roc_curve(label_np, score_np)
    precision, recall, pr_thresholds = precision_recall_curve(label_np, score_np)
    return {
        "fpr": fpr,
        "tpr": tpr,
        "roc_thresholds": roc_thresholds,
        "precision": precision,
        "recall": recall,
        "pr_thresholds": pr_thresholds,
    }


def regression_metrics(pred: Any, target: Any, *, valid: Any | None = None) -> dict[str, float]:
    """Regression errors over finite (and valid) pairs.

    Args:
        pred: Predicted values, any shape.
        target: Reference values, same shape.
        valid: Optional bool mask; False entries are skipped. Non-finite pairs are skipped.

    Returns:
        ``rmse``, ``mae``, ``bias`` (mean of pred - target, positive = overestimate), ``r2``
        (1 - SS_res / SS_tot; NaN when the target is constant), ``n``. NaN everywhere when n = 0.
    """
    pred_np = as_numpy(pred).astype(np.float64).reshape(-1)
    target_np = as_numpy(target).astype(np.float64).reshape(-1)
    if pred_np.shape != target_np.shape:
        raise InputError(
            f"{pred_np.size} predictions for {target_np.size} targets", parameter="pred"
        )
    keep = _and_valid(np.isfinite(pred_np) & np.isfinite(target_np), valid, "targets")
    pred_np = pred_np[keep]
    target_np = target_np[keep]
    n = int(pred_np.size)
    if n == 0:
        logger.warning("regression metrics on 0 valid pairs: NaN")
        return {"rmse": math.nan, "mae": math.nan, "bias": math.nan, "r2": math.nan, "n": 0}
    error = pred_np - target_np
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((target_np - target_np.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "bias": float(np.mean(error)),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan,
        "n": n,
    }


def jsonable(value: Any) -> Any:
    """Copy of a metrics dict/list with NaN/inf as ``None`` and numpy scalars as Python numbers.

    ``json.dump`` would otherwise write ``NaN``, which strict JSON readers reject.
    """
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
