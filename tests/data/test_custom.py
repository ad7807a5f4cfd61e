import re

import numpy as np
import pytest

from mmfusion.cli.main import main
from mmfusion.data import load_data
from mmfusion.data.synthetic import SyntheticConfig, make_synthetic
from mmfusion.errors import DataError


def test_custom_format_errors(tmp_path):
    import h5py

    with pytest.raises(DataError, match="file not found"):
        load_data(f"h5:{tmp_path / 'none.h5'}")
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as h5:
        h5.attrs["format"] = "other"
    with pytest.raises(DataError, match="not an mmfusion dataset"):
        load_data(str(p))


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
