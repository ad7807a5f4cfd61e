import re

import numpy as np
import pytest
from scipy.stats import norm

from mmfusion.cli.main import main
from mmfusion.data import load_data
from mmfusion.data.synthetic import SyntheticConfig, make_synthetic
from mmfusion.errors import ConfigError, DataError


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


@pytest.mark.parametrize("layout", ["h5", "mult", "mmsa"])
def test_convert_round_trip(tmp_path, layout):
    out = tmp_path / ("data.h5" if layout == "h5" else "data.pkl")
    assert main(["convert", "synthetic", str(out), "--layout", layout, "--set", "n_train=40", "--set", "n_valid=8",
                 "--set", "n_test=8"]) == 0
    back = load_data({"h5": f"h5:{out}", "mult": f"mult:{out}", "mmsa": f"mmsa:{out}"}[layout])
    ref = make_synthetic(SyntheticConfig(n_train=40, n_valid=8, n_test=8))
    for m in ("text", "vision", "audio"):
        np.testing.assert_array_equal(back.splits["train"].lengths[m], ref.splits["train"].lengths[m])
        np.testing.assert_allclose(back.splits["train"].features[m], ref.splits["train"].features[m], atol=1e-6)
    np.testing.assert_allclose(back.splits["test"].labels, ref.splits["test"].labels, atol=1e-6)
    assert back.splits["valid"].ids == ref.splits["valid"].ids


def test_custom_format_errors(tmp_path):
    import h5py

    with pytest.raises(DataError, match="file not found"):
        load_data(f"h5:{tmp_path / 'none.h5'}")
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as h5:
        h5.attrs["format"] = "other"
    with pytest.raises(DataError, match="not an mmfusion dataset"):
        load_data(str(p))


@pytest.mark.parametrize(("out", "layout", "says"), [
    ("data.pkl", None, "--layout mult or --layout mmsa"),  # .pkl: MulT's or MMSA's layout?
    ("data.h5", "mult", "'.pkl'"),  # a pickle in a file named .h5 would go to the HDF5 reader later
    ("data.pkl", "h5", "'.h5'"),
    ("data", None, "no suffix"),
])
def test_convert_refuses_a_file_name_that_says_another_format(tmp_path, capsys, out, layout, says):
    args = ["convert", "synthetic", str(tmp_path / out), "--set", "n_train=40"]
    assert main(args + (["--layout", layout] if layout else [])) == 2
    err = capsys.readouterr().err
    assert says in err and out in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_convert_keeps_an_existing_file_unless_told_and_never_replaces_its_input(tmp_path, capsys):
    out = tmp_path / "mine.h5"
    out.write_bytes(b"the user's file")
    args = ["convert", "synthetic", str(out), "--set", "n_train=40"]
    assert main(args) == 2
    assert "the output file exists" in capsys.readouterr().err and out.read_bytes() == b"the user's file"
    assert main(args + ["--overwrite"]) == 0
    assert load_data(f"h5:{out}").splits["train"].labels.shape == (40,)
    # the file being read, under another spelling of its path: refused even with --overwrite
    assert main(["convert", f"h5:{out}", str(tmp_path / "." / "mine.h5"), "--overwrite"]) == 2
    assert "the output is the file being read" in capsys.readouterr().err
    assert main(["convert", str(out), str(out), "--overwrite"]) == 2  # a SPEC without its reader's prefix
    assert "the output is the file being read" in capsys.readouterr().err
    assert load_data(f"h5:{out}").splits["train"].labels.shape == (40,)


@pytest.mark.parametrize(("change", "says"), [
    ("feature_size", "feature size differs across splits (split 'valid', key 'vision/features'): expected 12"),
    ("modality", "modalities differ across splits (split 'test', key 'modalities')"),
    ("labels", "wrong regression labels (split 'valid', key 'labels'): expected (8,) numbers, got (8, 2)"),
    ("ids", "number of ids differs from the number of clips (split 'valid', key 'ids'): expected 8 ids, got 7"),
])
def test_splits_that_disagree_are_refused_with_the_split_and_key(tmp_path, change, says):
    """A model is built from the training split's sizes; a split that differs would fail deep inside torch (and
    labels or ids that do not match the clips would be silently cut or misread)."""
    import h5py

    from mmfusion.data.custom import write_custom

    bundle = make_synthetic(SyntheticConfig(n_train=16, n_valid=8, n_test=8))
    path = write_custom(tmp_path / "data.h5", bundle)
    load_data(f"h5:{path}")  # as written, the splits agree
    with h5py.File(path, "a") as h5:
        if change == "feature_size":
            x = h5["valid/vision/features"][:]
            del h5["valid/vision/features"]
            h5["valid/vision/features"] = x[..., :-1]
        elif change == "modality":
            del h5["test/audio"]
        elif change == "ids":
            ids = h5["valid/ids"][:]
            del h5["valid/ids"]
            h5["valid/ids"] = ids[:-1]
        else:
            y = h5["valid/labels"][:]
            del h5["valid/labels"]
            h5["valid/labels"] = np.stack([y, y], 1)
    with pytest.raises(DataError) as err:
        load_data(f"h5:{path}")
    assert str(path) in str(err.value) and says in str(err.value)


def test_emotion_label_shapes_must_agree_across_splits():
    from mmfusion.data.dataset import DatasetBundle

    bundle = make_synthetic(SyntheticConfig(n_train=16, n_valid=8, n_test=8, task="emotion"))
    splits = dict(bundle.splits)
    splits["test"].labels = splits["test"].labels[:, :3]
    with pytest.raises(DataError, match=r"label shape differs across splits \(split 'test', key 'labels'\): "
                                        r"expected \(N, 4\) \(as in split 'train'\), got \(N, 3\)"):
        DatasetBundle(name="x", task="emotion", splits=splits, source="x.pkl", emotions=bundle.emotions)


@pytest.mark.parametrize(("change", "says"), [
    (lambda h5: (h5["valid"].__delitem__("text"), h5["valid"].create_dataset("text", data=np.zeros(3))),
     "expected a group (split 'valid', key 'text')"),
    (lambda h5: (h5["train/audio"].__delitem__("lengths"), h5["train/audio"].create_group("lengths")),
     "expected a dataset (split 'train', key 'audio/lengths')"),
    (lambda h5: h5.attrs.__setitem__("version", 2), "a format version this mmfusion cannot read"),
])
def test_a_file_laid_out_otherwise_is_named_not_a_traceback(tmp_path, change, says):
    import h5py

    from mmfusion.data.custom import write_custom

    path = write_custom(tmp_path / "data.h5", make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=4)))
    with h5py.File(path, "a") as h5:
        change(h5)
    with pytest.raises(DataError, match=re.escape(says)):
        load_data(f"h5:{path}")


def test_an_empty_split_is_shown_by_data_and_refused_where_it_is_used(tmp_path, capsys):
    """A reader may give a split without clips (a CSD folder of three videos has no validation video): `data`
    shows it, and a command that needs the split names it instead of failing inside numpy or Lightning."""
    import h5py

    from mmfusion.data.custom import write_custom

    path = write_custom(tmp_path / "data.h5", make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=4)))
    with h5py.File(path, "a") as h5:
        names = []
        h5["valid"].visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:
            x = h5["valid"][name][()][:0]
            del h5["valid"][name]
            h5["valid"][name] = x
    assert main(["data", f"h5:{path}"]) == 0
    assert "valid text   N=     0" in capsys.readouterr().out
    assert main(["fit", "--model", "lf_lstm_tiny", "--data", f"h5:{path}", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "a split without clips (split 'valid'): expected at least one clip, got N=0" in err, err


def test_repeated_clip_ids_are_noted_in_the_load_report(tmp_path):
    from mmfusion.data.custom import write_custom

    bundle = make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=4))
    bundle.splits["test"].ids = ["a", "b", "a", "a"]
    path = write_custom(tmp_path / "data.h5", bundle)
    (note,) = load_data(f"h5:{path}").report.notes
    assert note.startswith("test: clip ids occur more than once: 1 id(s) in 3 rows (first 'a')")
