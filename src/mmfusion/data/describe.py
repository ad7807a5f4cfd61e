"""``mmfusion data``: what a loaded dataset holds, as lines to print and as a JSON-ready record."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmfusion.data.dataset import DatasetBundle


def describe_bundle(bundle: DatasetBundle) -> tuple[dict[str, Any], list[str]]:
    """The record (task, feature sizes, per-split counts, lengths or clip shapes, load report, Bayes ceiling) and
    the lines ``mmfusion data`` prints."""
    info: dict[str, Any] = {"name": bundle.name, "source": bundle.source, "task": bundle.task,
                            "emotions": list(bundle.emotions), "feature_dims": bundle.feature_dims, "splits": {},
                            "report": bundle.report.as_dict(), "bayes": bundle.bayes}
    lines = [bundle.describe()]
    if bundle.feature_set:  # extracted by `mmfusion extract`
        info["feature_set"] = bundle.feature_set
        lines.append(f"  feature set: {bundle.feature_set}")
    for name, s in bundle.splits.items():
        info["splits"][name] = {"n": len(s), "lengths": {}}
        for m in s.modalities:
            lines.append(_modality_line(info["splits"][name], name, m, s))
    lines += [f"  note: {line}" for line in bundle.report.lines()]
    return info, lines


def _modality_line(record: dict[str, Any], name: str, m: str, s: Any) -> str:
    """Describe modality ``m`` of split ``s`` (called ``name``) into ``record``; return its printed line."""
    x = s.features[m]
    if m not in s.lengths:  # clip data: one fixed-size array per clip
        record.setdefault("shapes", {})[m] = list(x.shape[1:])
        return f"  {name:5s} {m:6s} N={len(s):6d} clip shape {'x'.join(map(str, x.shape[1:]))}"
    L = s.lengths[m]
    if len(s) == 0:
        record["lengths"][m] = {"max_frames": int(x.shape[1])}
        return f"  {name:5s} {m:6s} N={0:6d} T={x.shape[1]:4d} d={x.shape[2]:4d} (no clips)"
    record["lengths"][m] = {"max_frames": int(x.shape[1]), "min": int(L.min()), "mean": float(L.mean()),
                            "max": int(L.max())}
    return (f"  {name:5s} {m:6s} N={len(s):6d} T={x.shape[1]:4d} d={x.shape[2]:4d} "
            f"length min/mean/max {L.min()}/{np.mean(L):.1f}/{L.max()}")
