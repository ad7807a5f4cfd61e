"""``mmfusion convert``: write a dataset in mmfusion's HDF5 format or as a MulT or MMSA pickle.

What may be written where: the layout follows the output's suffix (a ``.pkl`` names one of two pickle layouts, so
it needs the layout said), the input is never overwritten, and an existing output only with ``overwrite``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmfusion.data import DatasetBundle, data_path, load_data
from mmfusion.errors import ConfigError, MMFusionError


def output_layout(out: str, layout: str | None) -> str:
    """The layout ``out`` is written in (``h5``, ``mult`` or ``mmsa``), refusing a suffix that names another."""
    suffix = Path(out).suffix.lower()
    pickled = suffix in (".pkl", ".pickle")
    if layout is None and pickled:  # MulT's or MMSA's? Both are .pkl
        raise ConfigError("a .pkl output is one of two pickle layouts", source=out, key="--layout",
                          expected="--layout mult or --layout mmsa (or a .h5 file for mmfusion's format)",
                          actual=None)
    layout = layout or "h5"
    suffixes = (".h5", ".hdf5") if layout == "h5" else (".pkl", ".pickle")
    if suffix not in suffixes:  # a file whose name says another format than it holds goes to the wrong reader
        raise ConfigError(f"the {layout} layout is written to a '{suffixes[0]}' (or {suffixes[1]}) file",
                          source=out, key="out", expected="a matching suffix", actual=suffix or "no suffix")
    return layout


def check_output(spec: str, out: str, overwrite: bool) -> None:
    """Refuse to write over the file being read, or over an existing file without ``overwrite``."""
    path, source = Path(out), data_path(spec)
    if source is not None and path.exists() and source.exists() and path.resolve() == source.resolve():
        raise ConfigError("the output is the file being read", source=out, key="out",
                          expected="another file", actual=out)
    if path.exists() and not overwrite:
        raise ConfigError("the output file exists", source=out, key="out",
                          expected="a new file (or --overwrite to replace it)", actual="an existing file")


def convert(spec: str, out: str, layout: str | None = None, data_args: Mapping[str, Any] | None = None, *,
            overwrite: bool = False) -> tuple[DatasetBundle, Path, str]:
    """Read ``spec`` (with reader options ``data_args``) and write it to ``out``; returns the data, the file
    written and its layout."""
    layout = output_layout(out, layout)
    check_output(spec, out, overwrite)
    bundle = load_data(spec, data_args, source="--set")
    if layout != "h5":  # the pickle layouts hold three labelled splits
        for split in ("train", "valid", "test"):
            bundle.split(split)
    if layout == "h5":
        from mmfusion.data.custom import write_custom

        return bundle, Path(write_custom(out, bundle)), layout
    if layout == "mult":
        from mmfusion.data.mult import write_mult

        return bundle, Path(write_mult(out, bundle.splits, emotions=bundle.emotions)), layout
    if bundle.task != "regression":
        raise MMFusionError("the MMSA layout holds sentiment scores only; use --layout mult or h5")
    from mmfusion.data.mmsa import write_mmsa

    return bundle, Path(write_mmsa(out, bundle.splits)), layout
