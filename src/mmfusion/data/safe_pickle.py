"""A restricted unpickler for the public benchmark pickles.

A pickle is a program: ``pickle.load`` imports and calls whatever the file names. The MulT and MMSA files need
only numpy arrays, numpy scalars and dtypes, and builtin containers and scalars, so this unpickler admits exactly
those globals and refuses everything else *before* it is imported or called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from mmfusion.errors import DataError

# (module, name) pairs a benchmark pickle may reference. Everything here only builds data.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [(mod, "_reconstruct") for mod in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(mod, "scalar") for mod in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("numpy.dtypes", n) for n in ("Float32DType", "Float64DType", "Float16DType", "Int64DType", "Int32DType",
                                      "Int16DType", "Int8DType", "UInt8DType", "BoolDType", "StrDType",
                                      "BytesDType", "ObjectDType")]
    + [("builtins", n) for n in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "complex",
                                  "int", "float", "str", "bytes", "bool", "slice")]
    + [("collections", "OrderedDict")]
    # Python-2 era pickles store byte strings through codecs.encode(str, "latin1"); it only re-encodes text.
    + [("_codecs", "encode")]
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only the globals in ``_ALLOWED``."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if (module, name) not in _ALLOWED:
            raise DataError(
                "refused to load: the pickle references a global that is not plain data "
                "(numpy arrays and builtin containers only), so it could run code",
                file=self.source, expected="numpy/builtin data", actual=f"{module}.{name}",
            )
        return super().find_class(module, name)


def safe_load(path: str | Path) -> Any:
    """Load a pickle file, refusing anything that is not plain data. Errors name the file."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=path)
    if path.is_dir():
        raise DataError("expected a pickle file, found a directory", file=path)
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"not a readable pickle ({type(exc).__name__}: {exc})", file=path) from None
