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
from collections.abc import Sequence
from typing import Any

import numpy as np

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["cleanlab_issues", "flag_top", "issue_agreement"]


def _find_label_issues() -> Any:
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise InputError('cleanlab is not installed; pip install "eokit[noisy]"',
                         parameter="method") from err
    return find_label_issues


def cleanlab_issues(probs: np.ndarray | Sequence[np.ndarray],
                    labels: np.ndarray | Sequence[np.ndarray], *,
                    ignore_index: int = IGNORE_INDEX) -> Any:
    """Pixels whose label confident learning marks as an issue.

    Every labelled pixel of every image is one example: the per-class confidence thresholds
    are estimated over the whole set, so images of any size can be mixed.

    Args:
        probs: (N, K, H, W) class probabilities, or a list of (K, H_i, W_i) arrays.
        labels: (N, H, W) integer labels in 0..K-1 or ``ignore_index``, or a list of (H_i, W_i).
        ignore_index: Label value that is never scored (never flagged).

    Returns:
        Boolean masks, True where the label is probably wrong: an (N, H, W) array for array
        input, a list of (H_i, W_i) arrays for list input.

    Raises:
        InputError: shapes disagree, probabilities are not probabilities, or a label is out of
            range.
    """
    stacked = isinstance(probs, np.ndarray) and isinstance(labels, np.ndarray)
    prob_list = [np.asarray(p, dtype=np.float32) for p in probs]
    label_list = [np.asarray(lbl) for lbl in labels]
    if not prob_list or len(prob_list) != len(label_list):
        raise InputError(f"{len(prob_list)} probability maps for {len(label_list)} labels",
                         parameter="labels")
    k = prob_list[0].shape[0] if prob_list[0].ndim == 3 else 0
    if k < 2:
        raise InputError("probabilities must be (K, H, W) with at least two classes",
                         parameter="probs")
    flat_probs, flat_labels = [], []
    for index, (prob, label) in enumerate(zip(prob_list, label_list, strict=True)):
        if prob.shape != (k, *label.shape):
            raise InputError(f"image {index}: probabilities {prob.shape} and labels "
                             f"{label.shape} do not match", parameter="labels")
        sums = prob.sum(axis=0)
        if not np.isfinite(prob).all() or prob.min() < 0 or np.abs(sums - 1).max() > 1e-3:
            raise InputError(f"image {index}: class probabilities must be finite, >= 0 and "
                             "sum to 1 per pixel", parameter="probs")
        valid = label != ignore_index
        bad = valid & ((label < 0) | (label >= k))
        if bad.any():
            raise InputError(f"image {index}: label values "
                             f"{sorted(np.unique(label[bad]).tolist())} are outside 0..{k - 1}",
                             parameter="labels")
        flat_probs.append(prob[:, valid].T)
        flat_labels.append(label[valid].astype(np.int64))
    all_labels = np.concatenate(flat_labels)
    flags = np.zeros(all_labels.size, dtype=bool)
    if np.unique(all_labels).size < 2:
        logger.warning("only one class among the labels: confident learning flags nothing")
    else:
        flags = np.asarray(_find_label_issues()(all_labels, np.concatenate(flat_probs),
                                                n_jobs=1), dtype=bool)
    masks, offset = [], 0
    for label in label_list:
        valid = label != ignore_index
        mask = np.zeros(label.shape, dtype=bool)
        mask[valid] = flags[offset:offset + int(valid.sum())]
        offset += int(valid.sum())
        masks.append(mask)
    return np.stack(masks) if stacked else masks


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
