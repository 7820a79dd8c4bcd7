"""Frozen-embedding probes: linear and kNN classification, linear regression (wind, wave height)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["classification_probe", "regression_probe"]


def _check(train: np.ndarray, test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray) -> None:
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise InputError(f"embeddings must be (N, D) with the same D, got {train.shape} and "
                         f"{test.shape}", parameter="embeddings")
    if len(train) != len(y_train) or len(test) != len(y_test):
        raise InputError("one target per embedding row required", parameter="targets")
    if not (np.isfinite(train).all() and np.isfinite(test).all()):
        raise InputError("embeddings hold NaN or infinite values", parameter="embeddings")


def classification_probe(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
                         y_test: np.ndarray, *, method: str = "linear", neighbours: int = 10,
                         rare_classes: Sequence[int] | None = None,
                         seed: int = 0) -> dict[str, Any]:
    """Fit a probe on frozen embeddings; score balanced, per-class and rare-class accuracy.

    Args:
        train: ``(N, D)`` training embeddings.
        y_train: ``(N,)`` class indices.
        test: ``(M, D)`` test embeddings.
        y_test: ``(M,)`` class indices.
        method: ``linear`` (standardised multinomial logistic regression) or ``knn`` (cosine
            k-nearest neighbours).
        neighbours: k of the kNN probe.
        rare_classes: Classes whose mean accuracy is reported as ``rare_class_accuracy``.
        seed: Seed of the solver.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``per_class_accuracy`` (list), and
        ``rare_class_accuracy`` when ``rare_classes`` is given.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    _check(train, test, y_train, y_test)
    if method == "linear":
        model: Any = make_pipeline(StandardScaler(), LogisticRegression(
            max_iter=2000, C=0.5, random_state=seed))
    elif method == "knn":
        model = KNeighborsClassifier(n_neighbors=min(neighbours, len(train)), metric="cosine")
    else:
        raise InputError(f"must be linear or knn, got {method!r}", parameter="method")
    model.fit(train, y_train)
    predicted = model.predict(test)
    classes = np.unique(y_test)
    per_class = {int(c): float((predicted[y_test == c] == c).mean()) for c in classes}
    out: dict[str, Any] = {
        "method": method,
        "accuracy": float((predicted == y_test).mean()),
        "balanced_accuracy": float(np.mean(list(per_class.values()))),
        "per_class_accuracy": per_class,
    }
    if rare_classes is not None:
        rare = [per_class[c] for c in rare_classes if c in per_class]
        out["rare_class_accuracy"] = float(np.mean(rare)) if rare else float("nan")
    return out


def regression_probe(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
                     y_test: np.ndarray) -> dict[str, float]:
    """Ridge regression (penalty by cross-validation) on standardised frozen embeddings.

    Returns:
        ``rmse``, ``bias`` and ``target_std`` (the RMSE of predicting the mean) on the test set.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    _check(train, test, y_train, y_test)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    model.fit(train, np.asarray(y_train, np.float64))
    error = model.predict(test) - np.asarray(y_test, np.float64)
    return {"rmse": float(np.sqrt(np.mean(error ** 2))), "bias": float(error.mean()),
            "target_std": float(np.std(y_test))}
