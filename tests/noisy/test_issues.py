"""Confident-learning label-issue baseline (cleanlab) and the equal-count comparison helpers."""

from __future__ import annotations

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX

pytest.importorskip("cleanlab")

from eokit.noisy.issues import cleanlab_issues, flag_top, issue_agreement  # noqa: E402


def _case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confident probabilities of the clean labels, and labels with one flipped square each."""
    rng = np.random.default_rng(seed)
    clean = (rng.random((4, 32, 32)) < 0.3).astype(np.int64)
    p1 = np.clip(np.where(clean == 1, 0.9, 0.1) + rng.normal(0, 0.03, clean.shape), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], 1).astype(np.float32)
    wrong = np.zeros(clean.shape, dtype=bool)
    wrong[:, 5:12, 5:12] = True
    noisy = np.where(wrong, 1 - clean, clean)
    return probs, noisy, wrong


def test_flags_the_flipped_pixels_and_little_else() -> None:
    probs, noisy, wrong = _case()
    scores = issue_agreement(cleanlab_issues(probs, noisy), wrong)
    assert scores["precision"] > 0.9 and scores["recall"] > 0.5
    # with the labels the network agrees with, nothing is an issue
    assert cleanlab_issues(probs, np.where(wrong, 1 - noisy, noisy)).mean() < 0.01


def test_ignored_pixels_are_never_flagged() -> None:
    probs, noisy, wrong = _case(1)
    labels = noisy.copy()
    labels[:, 5:12, 5:8] = IGNORE_INDEX  # part of each wrong square
    flagged = cleanlab_issues(probs, labels)
    assert not flagged[labels == IGNORE_INDEX].any()
    assert flagged[:, 5:12, 8:12].mean() > 0.5  # the rest is still found


@pytest.mark.parametrize("change", ["shape", "range", "not_probabilities"])
def test_bad_input_is_refused(change: str) -> None:
    probs, noisy, _ = _case()
    if change == "shape":
        noisy = noisy[:, :16]
    elif change == "range":
        noisy = noisy.copy()
        noisy[0, 0, 0] = 3
    else:
        probs = probs * 2
    with pytest.raises(InputError):
        cleanlab_issues(probs, noisy)


def test_flag_top_flags_exactly_the_highest() -> None:
    scores = np.array([[0.1, 0.9], [0.5, 0.7]])
    np.testing.assert_array_equal(flag_top(scores, 2), [[False, True], [False, True]])
    assert flag_top(scores, 0).sum() == 0 and flag_top(scores, 10).all()
    assert issue_agreement(flag_top(scores, 2), scores > 0.6) == {
        "flagged": 2.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
