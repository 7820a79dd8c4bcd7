"""Label-issue detection baseline: confident learning (cleanlab) on a network's probabilities.

cleanlab (Apache-2.0 since 2.x; ``pip install "eokit[noisy]"``) flags the pixels whose given label
disagrees with the class the network is confident about, with per-class confidence thresholds
estimated from the data (Northcutt et al., "Confident Learning", JAIR 2021). It is the baseline a
data curator would reach for; the ``kms`` posterior error map (:func:`eokit.noisy.task.
store_error_map`) is the model's own answer to the same question.

Confident learning expects *out-of-sample* probabilities (from cross-validation). Probabilities of
a network on its own training images are over-confident in the given labels, so it then finds
fewer issues than there are; :func:`flag_top` puts other scores on an equal footing by flagging
the same number of pixels.
"""

from __future__ import annotations

import logging

import numpy as np

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["cleanlab_issues", "flag_top", "issue_agreement"]


def _cleanlab_filter() -> object:
    try:
        from cleanlab.segmentation import filter as cl_filter
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise InputError('cleanlab is not installed; pip install "eokit[noisy]"',
                         parameter="method") from err
    return cl_filter


def cleanlab_issues(probs: np.ndarray, labels: np.ndarray, *,
                    ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixels whose label confident learning marks as an issue.

    Args:
        probs: (N, K, H, W) class probabilities (each pixel sums to 1).
        labels: (N, H, W) integer labels in 0..K-1, or ``ignore_index``.
        ignore_index: Label value that is never scored (never flagged).

    Returns:
        (N, H, W) boolean mask, True where the label is probably wrong.

    Raises:
        InputError: shapes disagree, probabilities are not probabilities, or a label is out of
            range.
    """
    probs = np.asarray(probs, dtype=np.float32)
    labels = np.asarray(labels)
    if probs.ndim != 4 or labels.shape != (probs.shape[0], *probs.shape[2:]):
        raise InputError(f"probabilities {probs.shape} and labels {labels.shape} do not match "
                         "(N, K, H, W) and (N, H, W)", parameter="labels")
    k = probs.shape[1]
    if k < 2:
        raise InputError("needs at least two classes", parameter="probs")
    sums = probs.sum(axis=1)
    if not np.isfinite(probs).all() or probs.min() < 0 or np.abs(sums - 1).max() > 1e-3:
        raise InputError("class probabilities must be finite, >= 0 and sum to 1 per pixel",
                         parameter="probs")
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= k))
    if bad.any():
        raise InputError(f"label values {sorted(np.unique(labels[bad]).tolist())} are outside "
                         f"0..{k - 1}", parameter="labels")
    # cleanlab scores every pixel: ignored ones get the predicted class (never an issue there)
    filled = np.where(valid, labels, probs.argmax(axis=1)).astype(np.int64)
    present = np.unique(filled[valid]) if valid.any() else np.array([], dtype=np.int64)
    if present.size < 2:
        logger.warning("only one class among the labels: confident learning flags nothing")
        return np.zeros(labels.shape, dtype=bool)
    cl_filter = _cleanlab_filter()
    issues = cl_filter.find_label_issues(  # type: ignore[attr-defined]
        filled, probs, n_jobs=1, verbose=False)
    return np.asarray(issues, dtype=bool) & valid


def flag_top(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` highest scores (ties broken by position)."""
    flat = np.asarray(scores, dtype=np.float64).ravel()
    count = int(np.clip(count, 0, flat.size))
    mask = np.zeros(flat.size, dtype=bool)
    if count:
        mask[np.argpartition(-flat, count - 1)[:count]] = True
    return mask.reshape(np.shape(scores))


def issue_agreement(flagged: np.ndarray, wrong: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of flagged pixels against the true label errors."""
    flagged = np.asarray(flagged, dtype=bool)
    wrong = np.asarray(wrong, dtype=bool)
    tp = float((flagged & wrong).sum())
    precision = tp / flagged.sum() if flagged.sum() else float("nan")
    recall = tp / wrong.sum() if wrong.sum() else float("nan")
    f1 = (2 * precision * recall / (precision + recall)
          if np.isfinite(precision) and np.isfinite(recall) and precision + recall > 0 else 0.0)
    return {"flagged": float(flagged.sum()), "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}
