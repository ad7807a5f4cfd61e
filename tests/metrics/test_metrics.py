import numpy as np
import pytest

from mmfusion.metrics import (
    SENTIMENT_KEYS,
    constant_predictions,
    emotion_metrics,
    metric_warnings,
    pearson,
    sentiment_metrics,
)


def test_sentiment_hand_computed():
    y = np.array([2.6, -0.4, 0.0, -3.5, 1.2])
    p = np.array([3.4, 0.2, -0.1, -2.4, 1.6])
    m = sentiment_metrics(p, y)
    assert m["mae"] == pytest.approx(np.mean([0.8, 0.6, 0.1, 1.1, 0.4]))
    # Acc7: round(clip): p -> [3, 0, -0, -2, 2]; y -> [3, -0, 0, -3, 1]: matches at 0, 1, 2
    assert m["acc7"] == pytest.approx(3 / 5)
    # Acc5: clip to [-2, 2]: p -> [2, 0, -0, -2, 2]; y -> [2, -0, 0, -2, 1]: matches at 0, 1, 2, 3
    assert m["acc5"] == pytest.approx(4 / 5)
    # non-zero convention drops y == 0: pairs (T,T) (F,T) (F,F) (T,T) -> 3/4
    assert m["acc2_non0"] == pytest.approx(3 / 4)
    # has-zero: y >= 0 -> [T, F, T, F, T]; p >= 0 -> [T, T, F, F, T] -> 3/5
    assert m["acc2_has0"] == pytest.approx(3 / 5)
    # weighted F1, non-zero: truth [T,F,F,T], pred [T,T,F,T]: F1(T)=2*2/(2*2+1)=0.8 (w .5), F1(F)=2/3 (w .5)
    assert m["f1_non0"] == pytest.approx(0.5 * 0.8 + 0.5 * (2 / 3))
    assert m["corr"] == pytest.approx(np.corrcoef(p, y)[0, 1])


def test_a_subset_of_keys_gives_the_same_values():
    rng = np.random.default_rng(0)
    p, y = rng.normal(size=50), rng.normal(size=50)
    full = sentiment_metrics(p, y)
    assert list(full) == list(SENTIMENT_KEYS)
    assert sentiment_metrics(p, y, keys=["f1_has0", "mae"]) == {"mae": full["mae"], "f1_has0": full["f1_has0"]}
    with pytest.raises(ValueError, match="acc3"):
        sentiment_metrics(p, y, keys=["acc3"])


def test_pearson_constant_is_zero_not_nan():
    assert pearson(np.ones(5), np.arange(5.0)) == 0.0


def test_constant_regression_predictions_are_named():
    assert "one value (0.5) for all 4 samples" in constant_predictions(np.full((4, 1), 0.5), "regression")
    assert constant_predictions(np.array([0.5, 0.5, 0.5 + 1e-6]), "regression") is None
    assert constant_predictions(np.zeros((4, 3)), "classification") is None  # accuracy and F1 stay defined


def test_emotion_hand_computed():
    labels = np.array([[1, 0], [0, 0], [1, 1]])  # 3 samples, 2 emotions
    logits = np.array([[[0, 1], [1, 0]], [[0, 1], [1, 0]], [[0, 1], [0, 1]]], dtype=float)  # pred [[1,0],[1,0],[1,1]]
    m = emotion_metrics(logits.reshape(3, 4), labels, ["happy", "sad"])
    assert m["acc_happy"] == pytest.approx(2 / 3) and m["acc_sad"] == pytest.approx(1.0)
    # happy: truth [1,0,1], pred [1,1,1]: F1(1)=0.8 (w 2/3), F1(0)=0 (w 1/3)
    assert m["f1_happy"] == pytest.approx(2 / 3 * 0.8)
    assert m["acc_mean"] == pytest.approx((2 / 3 + 1) / 2)


def test_constant_labels_are_flagged_like_constant_predictions():
    """Corr is undefined for a constant side either way; a split whose labels are one value says so."""
    varied = np.array([0.1, -0.4, 0.9, 1.5])
    assert metric_warnings(varied, varied[::-1], "regression") == []
    (note,) = metric_warnings(varied, np.full(4, 1.0), "regression")
    assert "labels of this split are one value (1) for all 4 samples" in note
    assert len(metric_warnings(np.zeros(4), np.zeros(4), "regression")) == 2  # both sides
    assert metric_warnings(np.zeros((4, 8)), np.zeros((4, 4)), "emotion") == []  # accuracy and F1 stay defined
