import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    jaccard_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from eokit.core.errors import InputError
from eokit.core.metrics import (
    ConfusionMatrix,
    binary_ranking_metrics,
    jsonable,
    regression_metrics,
    roc_pr_curves,
)


def _pairs_from_matrix(matrix):
    """Build (pred, target) label vectors that produce exactly ``matrix`` (rows = truth)."""
    pred, target = [], []
    for truth, row in enumerate(matrix):
        for guess, count in enumerate(row):
            pred += [guess] * count
            target += [truth] * count
    return np.array(pred), np.array(target)


def test_hand_computed_three_class_example():
    matrix = [[3, 1, 0], [1, 2, 1], [0, 0, 2]]
    pred, target = _pairs_from_matrix(matrix)
    rng = np.random.default_rng(0)
    order = rng.permutation(pred.size)
    cm = ConfusionMatrix(3)
    cm.update(pred[order], target[order])
    np.testing.assert_array_equal(cm.matrix, np.array(matrix))
    scores = cm.compute()
    # From the definitions: TP = (3, 2, 2); reference totals (4, 4, 2); predicted totals (4, 3, 3).
    np.testing.assert_allclose(scores["precision"], [3 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(scores["recall"], [3 / 4, 2 / 4, 2 / 2])
    np.testing.assert_allclose(scores["f1"], [6 / 8, 4 / 7, 4 / 5])
    np.testing.assert_allclose(scores["iou"], [3 / 5, 2 / 5, 2 / 3])
    assert scores["support"] == [4, 4, 2]
    assert scores["oa"] == pytest.approx(7 / 10)
    expected_agreement = (4 * 4 + 4 * 3 + 2 * 3) / 100
    assert scores["kappa"] == pytest.approx((0.7 - expected_agreement) / (1 - expected_agreement))
    assert scores["mean_f1"] == pytest.approx((6 / 8 + 4 / 7 + 4 / 5) / 3)
    assert scores["mean_iou"] == pytest.approx((3 / 5 + 2 / 5 + 2 / 3) / 3)
    assert scores["n"] == 10


def test_absent_class_is_nan_and_left_out_of_means():
    # Class 2 never occurs in reference or prediction; class 3 is predicted but never true.
    matrix = [[2, 0, 0, 1], [0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    pred, target = _pairs_from_matrix(matrix)
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    s = cm.compute()
    assert all(math.isnan(s[key][2]) for key in ("precision", "recall", "f1", "iou"))
    assert math.isnan(s["recall"][3])
    assert s["precision"][3] == 0.0 and s["f1"][3] == 0.0 and s["iou"][3] == 0.0
    # Means over defined classes only: F1 (0.8, 1, 0) and IoU (2/3, 1, 0).
    assert s["mean_f1"] == pytest.approx((4 / 5 + 1.0 + 0.0) / 3)
    assert s["mean_iou"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert s["mean_recall"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_empty_matrix_gives_nan_not_error():
    s = ConfusionMatrix(2).compute()
    assert math.isnan(s["oa"]) and math.isnan(s["kappa"]) and math.isnan(s["mean_f1"])
    assert s["n"] == 0


def test_ignore_index_and_valid_mask_skip_pixels():
    target = np.array([[0, 1, 255], [1, 255, 0]])
    pred = np.array([[0, 0, 1], [1, 1, 1]])
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix, [[1, 1], [1, 1]])

    valid = np.array([[True, True, True], [True, True, False]])
    cm2 = ConfusionMatrix(2)
    cm2.update(pred, target, valid=valid)
    np.testing.assert_array_equal(cm2.matrix, [[1, 0], [1, 1]])

    custom = ConfusionMatrix(2, ignore_index=-1)
    custom.update(np.array([0, 1, 1]), np.array([0, -1, 1]))
    np.testing.assert_array_equal(custom.matrix, [[1, 0], [0, 1]])


def test_accumulation_equals_one_update_on_concatenation():
    rng = np.random.default_rng(1)
    batches = [
        (rng.integers(0, 5, size=(2, 7, 9)), rng.integers(0, 5, size=(2, 7, 9))) for _ in range(4)
    ]
    for _, target in batches:
        target[rng.random(target.shape) < 0.1] = 255
    accumulated = ConfusionMatrix(5)
    for pred, target in batches:
        accumulated.update(torch.from_numpy(pred), torch.from_numpy(target))
    once = ConfusionMatrix(5)
    once.update(np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    np.testing.assert_array_equal(accumulated.matrix, once.matrix)
    assert accumulated.compute() == once.compute()

    merged = ConfusionMatrix(5)
    merged.merge(accumulated)
    np.testing.assert_array_equal(merged.matrix, once.matrix)


def test_agrees_with_scikit_learn_on_random_data():
    rng = np.random.default_rng(2)
    k = 6
    target = rng.integers(0, k, size=5000)
    # Correlated predictions so that the scores are not all near chance.
    pred = np.where(rng.random(5000) < 0.6, target, rng.integers(0, k, size=5000))
    cm = ConfusionMatrix(k)
    cm.update(pred, target)
    s = cm.compute()
    np.testing.assert_array_equal(cm.matrix, confusion_matrix(target, pred, labels=range(k)))
    p, r, f, support = precision_recall_fscore_support(target, pred, labels=range(k))
    np.testing.assert_allclose(s["precision"], p)
    np.testing.assert_allclose(s["recall"], r)
    np.testing.assert_allclose(s["f1"], f)
    np.testing.assert_array_equal(s["support"], support)
    np.testing.assert_allclose(s["iou"], jaccard_score(target, pred, average=None))
    assert s["mean_f1"] == pytest.approx(f.mean())
    assert s["oa"] == pytest.approx(accuracy_score(target, pred))
    assert s["kappa"] == pytest.approx(cohen_kappa_score(target, pred))


def test_bad_inputs_raise_one_line_input_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(InputError, match="target"):
        cm.update(np.array([0, 1]), np.array([0, 7]))
    with pytest.raises(InputError, match="pred"):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(InputError, match="pred"):
        cm.update(np.zeros(3, dtype=int), np.zeros(4, dtype=int))
    with pytest.raises(InputError, match="pred"):
        cm.update(np.array([0.2, 1.0]), np.array([0, 1]))
    with pytest.raises(InputError, match="valid"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 2), int), valid=np.ones(3, bool))
    with pytest.raises(InputError, match="num_classes"):
        ConfusionMatrix(0)
    assert cm.total == 0  # nothing half-added


def test_per_class_rows_and_jsonable():
    cm = ConfusionMatrix(3, class_names=["water", "forest", "urban"])
    cm.update([0, 1, 1], [0, 1, 0])
    rows = cm.per_class_rows()
    assert [row["class"] for row in rows] == ["water", "forest", "urban"]
    assert rows[0]["support"] == 2
    text = json.dumps(jsonable(cm.compute()), allow_nan=False)
    assert json.loads(text)["f1"][2] is None


def test_binary_ranking_hand_example_and_sklearn():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    out = binary_ranking_metrics(scores, labels)
    # 3 of 4 (positive, negative) pairs ranked correctly.
    assert out["roc_auc"] == pytest.approx(3 / 4)
    # Ranked: 0.8 (+) -> P=1 at R=.5; 0.35 (+) -> P=2/3 at R=1.  AP = .5*1 + .5*2/3.
    assert out["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(40, 50))
    s = y * 0.5 + rng.random((40, 50))
    y_masked = y.copy()
    y_masked[:5] = 255
    out = binary_ranking_metrics(torch.from_numpy(s), torch.from_numpy(y_masked))
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y[5:].ravel(), s[5:].ravel()))
    assert out["pr_auc"] == pytest.approx(average_precision_score(y[5:].ravel(), s[5:].ravel()))
    assert out["n"] == 35 * 50

    curves = roc_pr_curves(s, y)
    assert curves["fpr"][0] == 0.0 and curves["tpr"][-1] == 1.0
    assert np.trapezoid(curves["tpr"], curves["fpr"]) == pytest.approx(
        roc_auc_score(y.ravel(), s.ravel())
    )


def test_binary_ranking_single_class_is_nan():
    out = binary_ranking_metrics(np.array([0.2, 0.9]), np.array([1, 1]))
    assert math.isnan(out["roc_auc"]) and out["pr_auc"] == pytest.approx(1.0)
    out = binary_ranking_metrics(np.array([0.2, 0.9]), np.array([0, 0]))
    assert math.isnan(out["roc_auc"]) and math.isnan(out["pr_auc"])
    with pytest.raises(InputError, match="labels"):
        binary_ranking_metrics(np.array([0.2, 0.9]), np.array([0, 2]))
    with pytest.raises(InputError, match="labels"):
        roc_pr_curves(np.array([0.2, 0.9]), np.array([0, 0]))


def test_regression_hand_example():
    out = regression_metrics(np.array([1.0, 2.0, 3.0, 9.0]), np.array([1.0, 1.0, 5.0, np.nan]))
    # errors (0, 1, -2); target mean 7/3; SS_tot = 96/9; SS_res = 5.
    assert out["n"] == 3
    assert out["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert out["mae"] == pytest.approx(1.0)
    assert out["bias"] == pytest.approx(-1 / 3)
    assert out["r2"] == pytest.approx(1 - 5 / (96 / 9))
    masked = regression_metrics([1.0, 2.0, 3.0], [1.0, 1.0, 5.0], valid=[True, False, True])
    assert masked["n"] == 2 and masked["bias"] == pytest.approx(-1.0)
    assert math.isnan(regression_metrics([1.0, 2.0], [3.0, 3.0])["r2"])
    assert regression_metrics([], [])["n"] == 0
