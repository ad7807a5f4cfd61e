"""Data readers. :func:`load_data` turns a data SPEC into a :class:`DatasetBundle`.

SPEC is ``synthetic`` (the built-in benchmark; ``synthetic:emotion`` for its 4-emotion variant), ``mult:PATH``,
``mmsa:PATH``, ``csd:DIR`` or ``h5:PATH`` (mmfusion's own format); raw clips for MSAF's networks are
``ravdess:DIR`` and ``ntu:DIR``. A bare path is recognised by its form.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmfusion.config import build_checked
from mmfusion.data.dataset import DatasetBundle, FusionDataset, LoadReport, SplitData
from mmfusion.errors import ConfigError, DataError, did_you_mean

__all__ = ["DatasetBundle", "FusionDataset", "LoadReport", "SplitData", "load_data", "DATA_KINDS", "data_kind",
           "effective_reader_options", "data_path"]

DATA_KINDS = ("synthetic", "mult", "mmsa", "csd", "h5", "ravdess", "ntu", "ntu120")


def _kind_of(spec: str) -> tuple[str, str]:
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return "synthetic", spec.partition(":")[2]
    kind, sep, rest = spec.partition(":")
    if sep and kind in DATA_KINDS:
        return kind, rest
    p = Path(spec)
    if p.is_dir():
        return "csd", spec
    if p.suffix in (".h5", ".hdf5"):
        return "h5", spec
    if p.suffix == ".pkl":
        return ("mmsa" if p.name.startswith(("unaligned_", "aligned_")) else "mult"), spec
    raise DataError("cannot tell the data format", file=spec,
                    expected="synthetic, mult:PATH, mmsa:PATH, csd:DIR, h5:PATH, ravdess:DIR, ntu:DIR or ntu120:DIR",
                    actual=spec)


def data_kind(spec: str) -> str:
    """The reader a data SPEC goes to (one of :data:`DATA_KINDS`)."""
    return _kind_of(spec)[0]


def data_path(spec: str) -> Path | None:
    """The file or folder a data SPEC reads (``mult:x.pkl`` and ``x.pkl`` alike), None for the built-in benchmark."""
    kind, where = _kind_of(spec)
    return None if kind == "synthetic" else Path(where)


def _option_reader(kind: str) -> Any:
    """The reader function of a kind that takes options as keyword arguments (csd, h5, ravdess, ntu), else None."""
    if kind == "csd":
        from mmfusion.data.csd import read_csd

        return read_csd
    if kind == "h5":
        from mmfusion.data.custom import read_custom

        return read_custom
    if kind in ("ravdess", "ntu", "ntu120"):
        from mmfusion.data.clips import read_ntu, read_ntu120, read_ravdess

        return {"ravdess": read_ravdess, "ntu": read_ntu, "ntu120": read_ntu120}[kind]
    return None


def _reader_defaults(reader: Any) -> dict[str, Any]:
    """A reader's options (its keyword-only parameters) and their defaults."""
    return {k: p.default for k, p in inspect.signature(reader).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def effective_reader_options(spec: str, data_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every reader option ``load_data(spec, data_args)`` runs with, the reader's defaults filled in, less those
    that change only how the data is read (:data:`HOW_READ`: ``lazy``).

    Two sets of options that read the same data compare equal here even when one spells out a default.
    """
    kind, rest = _kind_of(spec)
    args = dict(data_args or {})
    if kind == "synthetic":
        from mmfusion.data.synthetic import SyntheticConfig

        if rest == "emotion":
            args.setdefault("task", "emotion")
        return dataclasses.asdict(build_checked(SyntheticConfig, args, source="data_args"))
    reader = _option_reader(kind)
    out = args if reader is None else _reader_defaults(reader) | args
    return {k: v for k, v in out.items() if k not in HOW_READ}


HOW_READ = frozenset({"lazy"})
"""Reader options that change how a file is read, not what is read (the values are the same either way)."""


def load_data(spec: str, data_args: Mapping[str, Any] | None = None, *, source: str | None = None) -> DatasetBundle:
    """Load a dataset from its SPEC; ``data_args`` are reader options (for ``synthetic``: SyntheticConfig)."""
    kind, rest = _kind_of(spec)
    args = dict(data_args or {})
    if kind == "synthetic":
        from mmfusion.data.synthetic import SyntheticConfig, make_synthetic

        if rest == "emotion":
            args.setdefault("task", "emotion")
        elif rest:
            raise DataError("unknown synthetic variant", file=spec, expected="synthetic or synthetic:emotion",
                            actual=rest)
        return make_synthetic(build_checked(SyntheticConfig, args, source=source or "data_args"))
    reader = _option_reader(kind)
    allowed = set(_reader_defaults(reader)) if reader is not None else set()
    unknown = set(args) - allowed
    if kind in ("mult", "mmsa") and "lazy" in unknown:
        raise ConfigError(f"a {kind} pickle is always read into memory (a pickle cannot be read in parts)",
                          source=source or "data_args", key="lazy", expected="no lazy option for this file",
                          actual=args["lazy"], hint=f"`mmfusion convert {spec} NAME.h5` writes it to mmfusion's "
                                                    "HDF5 format, which --set data_args.lazy=true reads lazily")
    if unknown:
        first = sorted(unknown)[0]
        raise ConfigError(f"unknown option for {kind} data", source=source or "data_args", key=first,
                          expected=f"one of {sorted(allowed)}" if allowed else "none (this reader takes no options)",
                          actual=first, hint=did_you_mean(first, allowed))
    if reader is not None:
        try:
            return reader(rest, **args)
        except ConfigError as exc:  # a reader option's value: name where the user set it
            if source and exc.source == "data_args":
                raise exc.with_source(source) from None
            raise
    if kind in ("mult", "mmsa"):
        from mmfusion.data.mmsa import read_mmsa
        from mmfusion.data.mult import read_mult
        from mmfusion.data.releases import identify_pickle

        bundle = (read_mult if kind == "mult" else read_mmsa)(rest)
        bundle.report.release = identify_pickle(Path(rest), kind, bundle)  # which public release this file is
        return bundle
    raise AssertionError(f"no reader for {kind}")  # pragma: no cover - every kind is handled above
