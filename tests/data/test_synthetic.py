import numpy as np
import pytest
from scipy.stats import norm

from mmfusion.data import load_data
from mmfusion.data.synthetic import SyntheticConfig, make_synthetic
from mmfusion.errors import ConfigError


def small(**kw):
    return SyntheticConfig(n_train=64, n_valid=16, n_test=400, **kw)


def test_synthetic_is_deterministic_asynchronous_and_padded():
    a, b = make_synthetic(small(seed=3)), make_synthetic(small(seed=3))
    c = make_synthetic(small(seed=4))
    np.testing.assert_array_equal(a.splits["train"].features["audio"], b.splits["train"].features["audio"])
    assert not np.array_equal(a.splits["train"].features["audio"], c.splits["train"].features["audio"])
    s = a.splits["train"]
    assert len({s.features[m].shape[-1] for m in s.modalities}) == 3  # heterogeneous sizes
    assert len(np.unique(s.lengths["vision"])) > 5  # lengths vary per sample
    # different rates: audio has ~3x the frames of text for the same clip
    ratio = s.lengths["audio"] / s.lengths["text"]
    assert 2.5 < np.median(ratio) < 3.5
    for m in s.modalities:
        T = s.features[m].shape[1]
        pad = np.arange(T)[None, :] >= s.lengths[m][:, None]
        assert not s.features[m][pad].any()


def test_bayes_ceiling_matches_closed_forms():
    cfg = small(noise=0.4)
    bundle = make_synthetic(cfg)
    f = bundle.splits["test"].extras["terms"].sum(1)
    # Acc2 of sign(f) against sign(f + eps): mean Phi(|f| / sigma)
    assert bundle.bayes["acc2_non0"] == pytest.approx(norm.cdf(np.abs(f) / 0.4).mean(), abs=0.01)
    # MAE of the median: E|eps| = sigma sqrt(2/pi), minus a little where clipping at +-3 helps
    assert bundle.bayes["mae"] == pytest.approx(0.4 * np.sqrt(2 / np.pi), abs=0.02)
    # Corr of E[y|x]: sqrt(var f / (var f + sigma^2)) when clipping is rare
    assert bundle.bayes["corr"] == pytest.approx(np.sqrt(f.var() / (f.var() + 0.16)), abs=0.01)


def test_emotion_variant_is_balanced_binary():
    bundle = make_synthetic(small(task="emotion"))
    assert bundle.output_dim == 8 and bundle.splits["train"].labels.shape == (64, 4)
    assert 0.3 < bundle.splits["test"].labels.mean() < 0.7
    assert 0.5 < bundle.bayes["acc_mean"] < 1.0


def test_unknown_synthetic_option_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        load_data("synthetic", {"n_trian": 3})
    assert "n_trian" in str(err.value) and "n_train" in str(err.value)
