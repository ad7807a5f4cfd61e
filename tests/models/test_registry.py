"""``build()`` checks a model's values as the command line does: every builder makes its config through
``mmfusion.config.build_model_config``, so a count, a width or a dropout out of range is one ConfigError naming the
key, the expected range and the value, before anything is built."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mmfusion.errors import ConfigError
from mmfusion.models import build, config_class, list_models

DIMS = {"text": 5, "vision": 4, "audio": 3}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def out_of_range(name: str) -> list[tuple[str, str, Any]]:
    """``(field, key the error names, bad value)`` for model ``name``: its first count or width (0), its first table
    of widths per modality (one entry 0) and its first dropout (-0.1), where it has them."""
    fields = dataclasses.fields(config_class(name))
    cases = []
    count = next((f for f in fields if _positive_int(f.default)), None)
    if count is not None:
        cases.append((count.name, count.name, 0))
    tables = [(f, f.default_factory()) for f in fields if f.default_factory is not dataclasses.MISSING]
    table = next(((f, d) for f, d in tables if isinstance(d, dict) and any(map(_positive_int, d.values()))), None)
    if table is not None:
        entry = next(k for k, v in table[1].items() if _positive_int(v))
        cases.append((table[0].name, f"{table[0].name}.{entry}", {entry: 0}))
    dropout = next((f for f in fields if f.name.endswith("dropout") and isinstance(f.default, float)), None)
    if dropout is not None:
        cases.append((dropout.name, dropout.name, -0.1))
    return cases


def build_error(name: str, field: str, value: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        build(name, DIMS, 2, **{field: value})
    return err.value


@pytest.mark.parametrize("name", list_models())
def test_build_refuses_a_value_out_of_range_naming_key_range_and_value(name):
    cases = out_of_range(name)
    assert cases, f"{name} has no count, width or dropout to check"
    for field, key, value in cases:
        err = build_error(name, field, value)
        bad = value[key.split(".")[1]] if isinstance(value, dict) else value
        assert (err.key, err.actual) == (key, bad) and err.expected is not None
        assert err.source == name and repr(bad) in str(err) and repr(key) in str(err)


def test_build_refuses_what_torch_would_build_or_fail_on_later():
    """Values that torch builds silently (a width of 0) or fails on with its own message (a dropout of 1.5)."""
    assert str(build_error("misa", "hidden", 0)) == "misa: out of range (key 'hidden'): expected >= 1, got 0"
    assert str(build_error("lf_lstm", "dropout", 1.5)) == "lf_lstm: out of range (key 'dropout'): expected < 1, got 1.5"
    assert str(build_error("mea", "num_heads", 0)) == "mea: out of range (key 'num_heads'): expected >= 1, got 0"
    assert str(build_error("msaf_lstm_tiny", "hidden", {"text": 0})) == (
        "msaf_lstm_tiny: out of range (key 'hidden.text'): expected >= 1, got 0")
