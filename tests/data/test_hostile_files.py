"""Hostile and foreign-written data files: each is built here and must load correctly or be refused by name."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from mmfusion.cli.main import main
from mmfusion.data import DatasetBundle, effective_reader_options, load_data
from mmfusion.data import dataset as dataset_module
from mmfusion.data.custom import H5Features, read_custom, write_custom
from mmfusion.data.mmsa import read_mmsa
from mmfusion.data.mult import read_mult
from mmfusion.errors import ConfigError, DataError
from tests.helpers import make_splits, write_mosi_mmsa, write_mosi_mult

SMALL = {"dims": {"text": 6, "audio": 3, "vision": 4}, "lengths": {"text": 5, "audio": 9, "vision": 7}}


def h5_file(path, *, n_emotions: int = 0, sizes=(12, 4, 4), **attrs):
    """A valid small mmfusion HDF5 file; ``attrs`` replace root attributes (None deletes one)."""
    names = ("neutral", "happy", "sad", "angry")[:n_emotions]
    bundle = DatasetBundle("x", "emotion" if n_emotions else "regression", make_splits(SMALL, sizes, n_emotions),
                           source="test", emotions=names)
    write_custom(path, bundle)
    with h5py.File(path, "a") as h5:
        for k, v in attrs.items():
            del h5.attrs[k]
            if v is not None:
                h5.attrs[k] = v
    return bundle


def refused(spec: str, match: str, capsys=None) -> DataError:
    with pytest.raises(DataError, match=match) as err:
        load_data(spec)
    if capsys is not None:  # the command line says it in one line and exits with status 2
        capsys.readouterr()
        assert main(["data", spec]) == 2
        assert match.split("(")[0].split("\\")[0] in capsys.readouterr().err
    return err.value


# --- HDF5 written by other languages -------------------------------------------------------------------------------

@pytest.mark.parametrize("pad", ["S16", "space"])
def test_fixed_length_strings_as_c_and_matlab_write_them_are_read(tmp_path, pad):
    p = tmp_path / "c.h5"
    ref = h5_file(p, n_emotions=4)
    with h5py.File(p, "a") as h5:
        for k, v in (("format", "mmfusion"), ("task", "emotion"), ("emotions", "neutral,happy,sad,angry")):
            del h5.attrs[k]
            if pad == "S16":  # C: a fixed-length, null-padded string of 16 bytes (h5py reads it as bytes)
                h5.attrs.create(k, np.bytes_(v), dtype=f"S{len(v) + 8}")
            else:  # MATLAB: fixed-length, space-padded, in a one-element data space; numbers as doubles
                h5.attrs.create(k, np.array([np.bytes_(v + "   ")]))
        del h5.attrs["version"]
        h5.attrs["version"] = np.float64(1.0)
    assert isinstance(h5py.File(p).attrs["format"], (bytes, np.ndarray))  # stored as bytes, not a str
    bundle = load_data(f"h5:{p}")
    assert bundle.task == "emotion" and bundle.emotions == ("neutral", "happy", "sad", "angry")
    np.testing.assert_array_equal(bundle.splits["train"].labels, ref.splits["train"].labels)


def test_emotions_stored_as_bytes_or_an_array_of_names_are_decoded(tmp_path):
    p = tmp_path / "b.h5"
    h5_file(p, n_emotions=2)
    with h5py.File(p, "a") as h5:
        h5.attrs["emotions"] = np.bytes_(b"neutral,happy")
    assert load_data(f"h5:{p}").emotions == ("neutral", "happy")  # not ("b'neutral", "happy'")
    with h5py.File(p, "a") as h5:
        h5.attrs["emotions"] = np.array([b"calm", b"happy"])
    assert load_data(f"h5:{p}").emotions == ("calm", "happy")


def test_duplicate_emotion_names_are_refused(tmp_path, capsys):
    p = tmp_path / "d.h5"
    h5_file(p, n_emotions=2, emotions="happy,happy")
    err = refused(f"h5:{p}", "emotion named twice", capsys)
    assert err.key == "emotions" and "'happy'" in str(err)


@pytest.mark.parametrize("value", ["", ",", "happy,,sad"])
def test_empty_emotion_names_are_a_named_error(tmp_path, value):
    p = tmp_path / "e.h5"
    h5_file(p, n_emotions=2, emotions=value)
    with pytest.raises(DataError, match="emotion") as err:
        load_data(f"h5:{p}")
    assert err.value.key == "emotions"


def test_an_emotion_file_without_emotion_names_is_refused(tmp_path, capsys):
    p = tmp_path / "n.h5"
    h5_file(p, n_emotions=2, emotions=None)
    refused(f"h5:{p}", "needs the names of its emotions", capsys)


@pytest.mark.parametrize("key", ["format", "task"])
def test_array_valued_string_attributes_are_refused(tmp_path, capsys, key):
    p = tmp_path / "a.h5"
    h5_file(p, **{key: np.array(["mmfusion", "regression"], dtype=h5py.string_dtype())})
    err = refused(f"h5:{p}", "an array where one value belongs", capsys)
    assert err.key == key and "(2,)" in str(err)


def test_non_utf8_ids_are_refused_naming_the_clip(tmp_path, capsys):
    p = tmp_path / "u.h5"
    h5_file(p)
    with h5py.File(p, "a") as h5:
        del h5["valid/ids"]
        h5["valid/ids"] = np.array([b"ok", b"caf\xe9", b"x", b"y"])  # Latin-1, not UTF-8
    err = refused(f"h5:{p}", "an id that is not UTF-8 text", capsys)
    assert err.split == "valid" and "clip 1" in str(err) and "caf" in str(err)


def test_non_utf8_attribute_text_is_refused(tmp_path):
    p = tmp_path / "t.h5"
    h5_file(p, task=np.bytes_(b"regr\xffssion"))
    with pytest.raises(DataError, match="not UTF-8") as err:
        load_data(f"h5:{p}")
    assert err.value.key == "task"


def test_declared_sizes_are_checked_against_the_stored_bytes_before_allocating(tmp_path, capsys):
    p = tmp_path / "bomb.h5"
    h5_file(p, sizes=(40, 4, 4))
    with h5py.File(p, "a") as h5:
        del h5["train/text/features"]  # 40 x 10^7 x 10^6 float32 = 1.6 PB declared, nothing written
        h5["train/text"].create_dataset("features", shape=(40, 10**7, 10**6), dtype=np.float32,
                                        chunks=(1, 100, 1000))
    assert p.stat().st_size < 400_000
    for lazy in (False, True):
        with pytest.raises(DataError, match="declaring far more data than the file stores") as err:
            read_custom(p, lazy=lazy)
        assert err.value.key == "text/features" and "(40, 10000000, 1000000)" in str(err.value)
    refused(f"h5:{p}", "declaring far more data", capsys)


def test_well_compressed_arrays_are_not_mistaken_for_size_bombs(tmp_path):
    p = tmp_path / "zeros.h5"
    with h5py.File(p, "w") as h5:
        h5.attrs["format"] = "mmfusion"
        for split in ("train", "valid", "test"):
            g = h5.create_group(f"{split}/audio")
            g.create_dataset("features", data=np.zeros((64, 400, 74), np.float32), compression="gzip",
                             compression_opts=9)  # 7.6 MB of zeros in a few KB
            g["lengths"] = np.zeros(64, np.int64)
            h5[f"{split}/labels"] = np.zeros(64, np.float32)
    assert len(load_data(f"h5:{p}").splits["train"]) == 64


def test_external_links_are_refused(tmp_path, capsys):
    other = tmp_path / "elsewhere.h5"
    h5_file(other)
    p = tmp_path / "link.h5"
    h5_file(p)
    with h5py.File(p, "a") as h5:
        del h5["train"]
        h5["train"] = h5py.ExternalLink(str(other), "/train")
    err = refused(f"h5:{p}", "external link", capsys)
    assert err.key == "train" and "elsewhere.h5" in str(err)
    with h5py.File(p, "a") as h5:  # deeper down as well
        del h5["train"]
        h5.copy(h5py.File(other)["train"], "train")
        del h5["valid/audio/lengths"]
        h5["valid/audio/lengths"] = h5py.ExternalLink(str(other), "/valid/audio/lengths")
    assert refused(f"h5:{p}", "external link").key == "audio/lengths"


def test_external_storage_and_virtual_datasets_are_refused(tmp_path):
    raw = tmp_path / "secret.bin"
    raw.write_bytes(np.arange(12, dtype=np.float32).tobytes())
    p = tmp_path / "ext.h5"
    h5_file(p)
    with h5py.File(p, "a") as h5:
        del h5["test/labels"]
        h5["test"].create_dataset("labels", shape=(4,), dtype=np.float32, external=[(str(raw), 0, 16)])
    assert refused(f"h5:{p}", "stored in other files").key == "labels"
    with h5py.File(p, "a") as h5:
        del h5["test/labels"]
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "x", shape=(4,))
        h5["test"].create_virtual_dataset("labels", layout, fillvalue=0)
    assert "virtual" in str(refused(f"h5:{p}", "stored in other files"))


def test_extra_modalities_and_keys_are_noted_in_the_load_report(tmp_path, capsys):
    p = tmp_path / "extra.h5"
    h5_file(p)
    with h5py.File(p, "a") as h5:
        for split in ("train", "valid", "test"):
            h5.copy(h5[f"{split}/audio"], f"{split}/pose")
        h5["notes"] = np.zeros(3)
    notes = " ".join(load_data(f"h5:{p}").report.lines())
    assert "train: ignored key 'pose'" in notes and "ignored key 'notes'" in notes
    assert main(["data", f"h5:{p}"]) == 0
    assert "'pose'" in capsys.readouterr().out

    mult = tmp_path / "m.pkl"
    write_mosi_mult(mult)
    raw = pickle.loads(mult.read_bytes())
    raw["train"]["pose"] = raw["train"]["vision"]
    mult.write_bytes(pickle.dumps(raw))
    assert any("ignored key 'pose'" in n for n in read_mult(mult).report.notes)

    mmsa = tmp_path / "unaligned_50.pkl"
    write_mosi_mmsa(mmsa)
    raw = pickle.loads(mmsa.read_bytes())
    raw["valid"]["pose"] = raw["valid"]["vision"]
    raw["valid"]["annotations"] = ["x"] * 8  # a key of the layout: read by nothing, not worth a note
    mmsa.write_bytes(pickle.dumps(raw))
    notes = read_mmsa(mmsa).report.notes
    assert any("valid: ignored key 'pose'" in n for n in notes) and not any("annotations" in n for n in notes)


# --- MMSA masks, MulT labels, magnitudes --------------------------------------------------------------------------

def test_mmsa_attention_mask_with_gaps_is_refused_naming_the_clip(tmp_path, capsys):
    p = tmp_path / "unaligned_50.pkl"
    write_mosi_mmsa(p)
    raw = pickle.loads(p.read_bytes())
    mask = raw["valid"]["text_bert"][:, 1]
    mask[3] = 0
    mask[3, [0, 2, 4]] = 1  # three tokens with gaps: once read as "3 frames", silently cutting the text
    p.write_bytes(pickle.dumps(raw))
    err = refused(f"mmsa:{p}", "attention mask with gaps", capsys)
    assert err.split == "valid" and err.key == "text_bert" and "clip 3 ('valid_3')" in str(err)
    assert "10101" in str(err)


def test_mmsa_prefix_masks_give_the_text_lengths(tmp_path):
    p = tmp_path / "unaligned_50.pkl"
    splits = write_mosi_mmsa(p)
    np.testing.assert_array_equal(read_mmsa(p).splits["test"].lengths["text"], splits["test"].lengths["text"])


def test_scalar_mult_labels_are_reported_against_the_labels_key(tmp_path, capsys):
    p = tmp_path / "mosi.pkl"
    write_mosi_mult(p)
    raw = pickle.loads(p.read_bytes())
    raw["test"]["labels"] = np.float32(1.5)
    p.write_bytes(pickle.dumps(raw))
    err = refused(f"mult:{p}", "labels must be an array", capsys)
    assert err.split == "test" and err.key == "labels" and "N=0" not in str(err) and "'text'" not in str(err)


@pytest.mark.parametrize("where", ["features", "labels"])
def test_absurd_magnitudes_are_a_load_time_warning(tmp_path, capsys, where):
    p = tmp_path / "mosi.pkl"
    write_mosi_mult(p)
    raw = pickle.loads(p.read_bytes())
    key = "audio" if where == "features" else "labels"
    raw["train"][key] = raw["train"][key] * np.float32(1e30)
    p.write_bytes(pickle.dumps(raw))
    report = read_mult(p).report
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith(f"train/{key}: values up to ") and "e+30" in report.warnings[0]
    assert report.max_abs[f"train/{key}"] > 1e29 and report.max_abs["valid/audio"] < 100
    assert main(["data", f"mult:{p}"]) == 0
    assert f"warning: train/{key}: values up to" in capsys.readouterr().out
    clean = tmp_path / "clean.pkl"
    write_mosi_mult(clean)
    assert not read_mult(clean).report.warnings


def test_absurd_magnitudes_in_hdf5_are_warned_of_in_both_read_modes(tmp_path):
    p = tmp_path / "big.h5"
    h5_file(p)
    with h5py.File(p, "a") as h5:
        h5["valid/vision/features"][...] = h5["valid/vision/features"][...] * np.float32(3e29)
    for lazy in (False, True):
        warnings = read_custom(p, lazy=lazy).report.warnings
        assert len(warnings) == 1 and warnings[0].startswith("valid/vision/features: values up to")


# --- lazy reading -------------------------------------------------------------------------------------------------

def hostile_values(path, corruption: str) -> None:
    with h5py.File(path, "a") as h5:
        ds = h5["valid/audio/features"]
        x = ds[...]
        if corruption == "neg_inf":
            x[1, 0, :] = -np.inf
        elif corruption == "nan":
            x[2, 3, 1] = np.nan
        elif corruption == "pos_inf":
            x[0, 0, 0] = np.inf
        elif corruption == "padding":  # non-zero values past each length: the reader zeroes them
            x[...] = 7.0
        ds[...] = x
        if corruption == "float64_overflow":
            del h5["valid/audio/features"]
            y = x.astype(np.float64)
            y[3, 2, 0] = 1e300
            h5["valid/audio"].create_dataset("features", data=y, chunks=(1, 9, 3))


@pytest.mark.parametrize("corruption", ["neg_inf", "padding", "nan", "pos_inf", "float64_overflow"])
def test_lazy_reading_gives_the_same_values_report_and_errors_as_reading_into_memory(tmp_path, corruption):
    p = tmp_path / "x.h5"
    h5_file(p)
    hostile_values(p, corruption)
    outcomes = []
    for lazy in (False, True):
        try:
            outcomes.append(read_custom(p, lazy=lazy))
        except DataError as exc:
            outcomes.append(str(exc))
    eager, lazy_ = outcomes
    if isinstance(eager, str):
        assert eager == lazy_ and "valid" in eager and "audio/features" in eager
        return
    for split, s in eager.splits.items():
        for m, x in s.features.items():
            y = lazy_.splits[split].features[m]
            assert isinstance(y, H5Features) and isinstance(x, np.ndarray)
            np.testing.assert_array_equal(np.asarray(y), x)
            idx = np.array([3, 0, 2])  # a shuffled batch, trimmed to 4 frames, as the collate function reads it
            np.testing.assert_array_equal(y[idx, :4], x[idx, :4])
            np.testing.assert_array_equal(y[1], x[1])
            np.testing.assert_array_equal(y[1:3], x[1:3])
    as_dict = {k: v for k, v in lazy_.report.as_dict().items() if k != "notes"}
    assert as_dict == {k: v for k, v in eager.report.as_dict().items() if k != "notes"}
    if corruption == "neg_inf":
        assert eager.report.neg_inf == {"valid/audio/features": 3}
    if corruption == "padding":
        x = eager.splits["valid"].features["audio"]
        assert (x[0, eager.splits["valid"].lengths["audio"][0]:] == 0).all()


def test_lazy_batches_in_dataloader_workers_equal_the_in_memory_batches(tmp_path):
    from mmfusion.engine.loaders import make_loader

    p = tmp_path / "w.h5"
    h5_file(p, sizes=(24, 4, 4))
    hostile_values(p, "neg_inf")
    eager, lazy = read_custom(p, lazy=False), read_custom(p, lazy=True)
    for batch_e, batch_l in zip(make_loader(eager, "train", 5, False), make_loader(lazy, "train", 5, False, 2)):
        for m in batch_e.features:
            assert torch_equal(batch_e.features[m], batch_l.features[m])
            assert torch_equal(batch_e.masks[m], batch_l.masks[m])
        assert batch_e.ids == batch_l.ids


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_lazy_is_chosen_above_a_size_or_by_the_option(tmp_path, monkeypatch, capsys):
    p = tmp_path / "auto.h5"
    h5_file(p)
    assert isinstance(load_data(f"h5:{p}").splits["train"].features["text"], np.ndarray)
    assert isinstance(load_data(f"h5:{p}", {"lazy": True}).splits["train"].features["text"], H5Features)
    monkeypatch.setattr(dataset_module, "LAZY_ABOVE", 1000)
    bundle = load_data(f"h5:{p}")
    assert isinstance(bundle.splits["test"].features["audio"], H5Features)
    assert any("lazy" in n for n in bundle.report.notes)
    assert isinstance(load_data(f"h5:{p}", {"lazy": False}).splits["train"].features["text"], np.ndarray)
    assert main(["data", f"h5:{p}", "--set", "lazy=false"]) == 0
    assert "lazy" not in capsys.readouterr().out
    with pytest.raises(ConfigError, match="lazy"):
        load_data(f"h5:{p}", {"lazy": "sometimes"})
    # how a file is read is not part of what is read: runs and checkpoints compare equal either way
    assert effective_reader_options(f"h5:{p}", {"lazy": True}) == effective_reader_options(f"h5:{p}") == {}


def test_converting_a_lazily_read_file_writes_the_same_data(tmp_path):
    p, q = tmp_path / "a.h5", tmp_path / "b.h5"
    h5_file(p)
    hostile_values(p, "padding")
    assert main(["convert", f"h5:{p}", str(q), "--set", "lazy=true"]) == 0
    a, b = read_custom(p), read_custom(q)
    for split in a.splits:
        for m in a.splits[split].features:
            np.testing.assert_array_equal(a.splits[split].features[m], b.splits[split].features[m])
    with h5py.File(q) as h5:  # chunked by whole samples, so one sample's read decompresses little else
        assert h5["train/audio/features"].chunks[1:] == (9, 3)


def test_lazy_reading_refuses_chunks_too_large_to_read_by_sample(tmp_path, monkeypatch):
    from mmfusion.data import custom

    p = tmp_path / "c.h5"
    h5_file(p)
    monkeypatch.setattr(custom, "MAX_LAZY_CHUNK_BYTES", 100)
    with pytest.raises(DataError, match="chunks too large") as err:
        read_custom(p, lazy=True)
    assert "h5repack" in str(err.value)
    read_custom(p, lazy=False)  # read whole, the chunking does not matter


@pytest.mark.parametrize("kind", ["mult", "mmsa"])
def test_pickles_stay_in_memory_and_say_how_to_read_lazily(tmp_path, monkeypatch, capsys, kind):
    p = tmp_path / ("mosi.pkl" if kind == "mult" else "unaligned_50.pkl")
    (write_mosi_mult if kind == "mult" else write_mosi_mmsa)(p)
    with pytest.raises(ConfigError, match="always read into memory") as err:
        load_data(f"{kind}:{p}", {"lazy": True})
    assert f"mmfusion convert {kind}:{p}" in str(err.value)
    assert main(["data", f"{kind}:{p}", "--set", "lazy=true"]) == 2
    assert "mmfusion convert" in capsys.readouterr().err
    assert not any("convert" in n for n in load_data(f"{kind}:{p}").report.notes)
    monkeypatch.setattr(dataset_module, "LAZY_ABOVE", 1000)
    assert any(f"mmfusion convert {kind}:{p}" in n for n in load_data(f"{kind}:{p}").report.notes)


def test_num_workers_flag_reaches_the_training_settings():
    from mmfusion.cli.main import _train_flags, build_parser

    args = build_parser().parse_args(["fit", "--num-workers", "3"])
    assert _train_flags(args)[0]["train"]["num_workers"] == 3
    args = build_parser().parse_args(["fit"])
    assert "train" not in _train_flags(args)[0] or "num_workers" not in _train_flags(args)[0]["train"]
