"""The MSAF authors' released weights (public repository anita-hu/MSAF) as mmfusion models.

``from_reference(name, path)`` reads one of their files (safely: ``torch.load(weights_only=True)``), maps every
tensor to mmfusion's parameter names and returns the model in eval mode, taking mmfusion's usual ``features`` dict.
Names: ``msaf_ravdess`` (``fold_K_msaf_ravdess_best.pth``), ``msaf_ntu`` (``msaf_ntu_epoch12_92.24.checkpoint``,
I3D variant), ``msaf_lstm`` (``msaf_mosei_epoch6.pth``), and the unimodal branches ``resnext50``
(``fold_K_resnext50_best.pth``), ``mfccnet`` (``fold_K_mfccNet_best.pth``), ``i3d``
(``i3d_32frames_85.63.checkpoint``) and ``hcn`` (``skeleton_32frames_85.24.checkpoint``).

Containers recognised: a bare state dict, one under ``state_dict`` or ``model_state_dict`` (the MOSEI script's),
each with or without DataParallel's ``module.`` prefix. Every tensor of the file must map to a parameter or buffer
of the model and every parameter must be given, with its shape; otherwise :class:`~mmfusion.errors.DataError`
names the keys (and the expected shapes). Only BatchNorm's ``num_batches_tracked`` counters, which files written by
old PyTorch versions lack, may be absent. See ``docs/design/msaf-reference.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfusion.errors import ConfigError, DataError
from mmfusion.models.registry import build, non_finite_tensors

REFERENCE_NAMES = ("msaf_ravdess", "msaf_ntu", "msaf_lstm", "resnext50", "mfccnet", "i3d", "hcn")


@dataclass
class Imported:
    """A reference file translated: what :func:`mmfusion.models.build` needs and the mapped state dict."""

    name: str
    feature_dims: dict[str, int]
    output_dim: int
    model_args: dict[str, Any]
    state: dict[str, Tensor]
    task: str = "classification"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a reference file, container and ``module.`` prefix removed (read with weights_only=True)."""
    path = Path(path)
    if not path.exists():
        raise DataError("weights file not found", file=path)
    try:
        import numpy as np

        # the MOSEI script saves its scores as NumPy scalars beside the weights: plain data, allowed explicitly
        allowed: list[Any] = [np.dtype]
        for mod, attr in (("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")):
            try:
                allowed.append(getattr(__import__(mod, fromlist=[attr]), attr))
            except (ImportError, AttributeError):
                pass
        allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")]
        with torch.serialization.safe_globals(allowed):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"not a loadable state dict ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); it is "
                        "read as tensors and plain data only, nothing in it was run", file=path) from None
    state = raw
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(raw.get(key), Mapping):
                state = raw[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise DataError("not a state dict", file=path, expected="a mapping of parameter names to tensors (bare, "
                        "or under 'state_dict' / 'model_state_dict')", actual=type(state).__name__)
    not_tensors = [str(k) for k, v in state.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise DataError("entries that are not tensors in the state dict", file=path, key=not_tensors[0],
                        expected="tensors only", actual=f"{len(not_tensors)} other entries")
    keys = [str(k) for k in state]
    prefixed = all(k.startswith("module.") for k in keys)
    return {(k.removeprefix("module.") if prefixed else k): v for k, v in zip(keys, state.values())}


# --- key maps: reference name -> mmfusion name (None: not a key of this network) ---------------------------------
def _msaf_block(key: str, ref: str, ours: str) -> str | None:
    m = re.fullmatch(rf"{re.escape(ref)}\.blocks\.(\d+)\.(joint_features|dense_group)\.(.+)", key)
    if not m:
        return None
    part = "joint" if m.group(2) == "joint_features" else "excite"
    return f"{ours}.steps.{m.group(1)}.{part}.{m.group(3)}"


_RAVDESS_PARTS = {
    "video_model_blocks.0.0.": "video.conv1.", "video_model_blocks.0.1.": "video.bn1.",
    "video_model_blocks.0.3.": "video.layer1.", "video_model_blocks.0.4.": "video.layer2.",
    "video_model_blocks.0.5.": "video.layer3.", "video_model_blocks.1.0.": "video.layer4.",
    "video_model_blocks.2.2.": "video_fc.",
    "audio_model_blocks.0.0.": "audio.conv1.", "audio_model_blocks.0.2.": "audio.bn1.",
    "audio_model_blocks.0.3.": "audio.conv2.", "audio_model_blocks.1.1.": "audio.bn2.",
    "audio_model_blocks.1.3.": "audio.conv3.", "audio_model_blocks.1.5.": "audio.bn3.",
    "audio_model_blocks.2.2.": "audio_fc.",
}


def _prefix_map(parts: Mapping[str, str]) -> Callable[[str], str | None]:
    def f(key: str) -> str | None:
        for ref, ours in parts.items():
            if key.startswith(ref):
                return ours + key[len(ref):]
        return None

    return f


def _map_ravdess(key: str) -> str | None:
    return (_msaf_block(key, "msaf.0", "msaf1") or _msaf_block(key, "msaf.1", "msaf2")
            or _prefix_map(_RAVDESS_PARTS)(key))


def _map_resnext(key: str) -> str | None:
    if key.startswith("fc."):
        return key
    return "video." + key if re.match(r"(conv1|bn1|layer[1-4])\.", key) else None


def _map_mfccnet(key: str) -> str | None:
    if key.startswith("fc1."):
        return key
    return "audio." + key if re.match(r"(conv[1-3]|bn[1-3])\.", key) else None


_HCN_KEY = r"(conv[1-6]m?|fc7|fc8)(\.\d+)?\.(weight|bias)"


def _map_ntu(key: str) -> str | None:
    if key.startswith("visual.features."):
        return "rgb." + key[len("visual."):]
    if key.startswith("skeleton.") and re.fullmatch(_HCN_KEY, key[len("skeleton."):]):
        return key
    return _msaf_block(key, "msaf1", "msaf1") or _msaf_block(key, "msaf2", "msaf2")


def _map_i3d(key: str) -> str | None:
    return "rgb." + key if key.startswith("features.") else None


def _map_hcn(key: str) -> str | None:
    return "skeleton." + key if re.fullmatch(_HCN_KEY, key) else None


_MOSEI_MODALITIES = {"visual_model": "vision", "audio_model": "audio", "text_model": "text"}


def _map_mosei(key: str) -> str | None:
    m = re.fullmatch(r"(visual_model|audio_model|text_model)\.([01])\.(.+)", key)
    if m:
        return f"lstm{int(m.group(2)) + 1}.{_MOSEI_MODALITIES[m.group(1)]}.lstm.{m.group(3)}"
    if key.startswith("multimodal_classifier.0."):
        return "head." + key[len("multimodal_classifier.0."):]
    return _msaf_block(key, "msaf.0", "msaf.msaf")


def _shape(state: Mapping[str, Tensor], key: str, dim: int, path: Path, what: str) -> int:
    if key not in state:
        raise DataError(f"not a {what} state dict: a key it must have is missing", file=path, key=key,
                        expected=f"{key} (the reference network's)", actual=f"keys like {list(state)[:3]}")
    return int(state[key].shape[dim])


# --- the networks: how each is built, from the file's own shapes -------------------------------------------------
def _spec(name: str, state: Mapping[str, Tensor], path: Path) -> tuple[Callable[[str], str | None],
                                                                      dict[str, int], int, dict[str, Any], str]:
    """(key map, feature_dims, output_dim, model_args, task) for reference network ``name``."""
    if name == "msaf_ravdess":
        return _map_ravdess, {"video": 224, "audio": 212}, _shape(state, "video_model_blocks.2.2.weight", 0, path,
                                                                  name), {}, "classification"
    if name == "resnext50":
        return _map_resnext, {"video": 224}, _shape(state, "fc.weight", 0, path, name), {}, "classification"
    if name == "mfccnet":
        return _map_mfccnet, {"audio": 212}, _shape(state, "fc1.weight", 0, path, name), {}, "classification"
    if name == "msaf_ntu":
        window = _shape(state, "skeleton.conv2.weight", 0, path, name)
        return (_map_ntu, {"rgb": 224, "skeleton": 25}, _shape(state, "visual.features.18.weight", 0, path, name),
                {"skeleton_frames": window}, "classification")
    if name == "i3d":
        return _map_i3d, {"rgb": 224}, _shape(state, "features.18.weight", 0, path, name), {}, "classification"
    if name == "hcn":
        window = _shape(state, "conv2.weight", 0, path, name)
        return (_map_hcn, {"skeleton": 25}, _shape(state, "fc8.weight", 0, path, name),
                {"skeleton_frames": window}, "classification")
    if name == "msaf_lstm":
        dims = {m: _shape(state, f"{ref}.0.weight_ih_l0", 1, path, name) for ref, m in _MOSEI_MODALITIES.items()}
        hidden = {m: _shape(state, f"{ref}.0.weight_hh_l0", 1, path, name) for ref, m in _MOSEI_MODALITIES.items()}
        return (_map_mosei, dims, _shape(state, "multimodal_classifier.0.weight", 0, path, name),
                {"hidden": hidden, "block_size": 16, "reduction": 2, "block_dropout": 0.2, "split_block": 5,
                 "reference_padding": True}, "regression")  # padded steps read as real, as the authors' code does
    raise ConfigError("no reference network of this name", key="name", expected=f"one of {list(REFERENCE_NAMES)}",
                      actual=name)


def _reorder_mosei(mapped: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The reference orders its modalities (visual, audio, text), mmfusion (text, vision, audio): MSAF's per-block
    excitation layers and the head's input columns are permuted accordingly."""
    ref_order, ours = ("vision", "audio", "text"), list(model.modalities)  # type: ignore[attr-defined]
    msaf = model.msaf.msaf  # type: ignore[attr-defined]
    n_blocks = dict(zip(ours, msaf.n_blocks))
    hidden = {m: model.lstm1[m].out_dim for m in ours}  # type: ignore[index]
    ref_start, start = {}, 0
    for m in ref_order:
        ref_start[m], start = start, start + n_blocks[m]
    block_of = {}  # our block index -> reference block index
    start = 0
    for m in ours:
        for j in range(n_blocks[m]):
            block_of[start + j] = ref_start[m] + j
        start += n_blocks[m]
    ours_of = {r: o for o, r in block_of.items()}
    out = {}
    for k, v in mapped.items():
        m = re.fullmatch(r"msaf\.msaf\.steps\.(\d+)\.excite\.(\d+)\.(.+)", k)
        if m:
            k = f"msaf.msaf.steps.{m.group(1)}.excite.{ours_of[int(m.group(2))]}.{m.group(3)}"
        out[k] = v
    if "head.weight" in mapped:
        cols, start = {}, 0
        for m in ref_order:
            cols[m], start = slice(start, start + hidden[m]), start + hidden[m]
        out["head.weight"] = torch.cat([mapped["head.weight"][:, cols[m]] for m in ours], 1)
    return out


def translate(name: str, path: str | Path, state: Mapping[str, Tensor] | None = None) -> Imported:
    """Map reference file ``path`` (or its already-read ``state``) to mmfusion's network ``name``; every tensor
    accounted for, or a :class:`DataError` naming what is not."""
    path = Path(path)
    if name not in REFERENCE_NAMES:
        raise ConfigError("no reference network of this name", key="name",
                          expected=f"one of {list(REFERENCE_NAMES)}", actual=name)
    state = dict(read_state_dict(path) if state is None else state)
    key_map, dims, out_dim, args, task = _spec(name, state, path)
    model = build(name, dims, out_dim, **args)
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    unmapped = []
    for k, v in state.items():
        ours = key_map(k)
        if ours is None or ours not in own:
            unmapped.append(k)
        else:
            mapped[ours] = v
    if unmapped:
        raise DataError(f"{len(unmapped)} tensor(s) of the file have no place in {name}", file=path,
                        key=unmapped[0], expected=f"only {name}'s reference keys",
                        actual=", ".join(f"{k} {tuple(state[k].shape)}" for k in unmapped[:8])
                        + (" ..." if len(unmapped) > 8 else ""))
    if name == "msaf_lstm":
        mapped = _reorder_mosei(mapped, model)
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing:
        raise DataError(f"{len(missing)} tensor(s) of {name} are not in the file", file=path, key=missing[0],
                        expected=", ".join(f"{k} {tuple(own[k].shape)}" for k in missing[:8])
                        + (" ..." if len(missing) > 8 else ""), actual="absent")
    wrong = [k for k, v in mapped.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        inverse = {key_map(k): k for k in state}
        raise DataError(f"{len(wrong)} tensor(s) of the file have the wrong shape for {name}", file=path,
                        key=inverse.get(wrong[0], wrong[0]),
                        expected=", ".join(f"{inverse.get(k, k)} {tuple(own[k].shape)}" for k in wrong[:8]),
                        actual=", ".join(f"{tuple(mapped[k].shape)}" for k in wrong[:8]))
    bad = non_finite_tensors(mapped)
    if bad:
        raise DataError("non-finite weights (NaN or inf)", file=path, key=bad[0], expected="finite values",
                        actual=f"{len(bad)} tensor(s) with NaN or inf")
    for k in own:  # counters absent from files of old PyTorch versions
        if k not in mapped:
            mapped[k] = own[k]
    return Imported(name, dims, out_dim, args, {k: v.to(own[k].dtype) for k, v in mapped.items()}, task)


def from_reference(name: str, path: str | Path) -> nn.Module:
    """The MSAF authors' network ``name`` with the weights of their file ``path``, in eval mode.

    The model takes mmfusion's ``features`` dict (and an optional ``masks`` dict), e.g. for ``msaf_ravdess``
    ``{"video": (B, 3, 30, 224, 224) in [0, 1], "audio": (B, 13, 212)}``, and returns ``{"pred": logits, ...}``.
    """
    imported = translate(name, path)
    model = build(name, imported.feature_dims, imported.output_dim, **imported.model_args)
    model.load_state_dict(imported.state, strict=True)
    return model.eval()


# --- --pretrained: branch initialisation from local files --------------------------------------------------------
_UNIMODAL = {"resnext50": (_map_resnext, "fc.", "video"), "mfccnet": (_map_mfccnet, "fc1.", "audio"),
             "i3d": (_map_i3d, None, "rgb"), "hcn": (_map_hcn, None, "skeleton")}


def _candidates(state: Mapping[str, Tensor], branch: str, model: nn.Module) -> list[tuple[str, dict[str, Tensor]]]:
    """Ways to read a branch file: mmfusion's own branch state dict, or one of the authors' unimodal networks
    (whose classifier initialises the fused network's ``<branch>_fc`` head, as their fusion scripts do)."""
    if branch == "model":  # a whole model: mmfusion's checkpoint (keys under "model.") or a bare state dict
        prefixed = all(k.startswith("model.") for k in state)
        return [("state dict of the model", {(k[len("model."):] if prefixed else k): v for k, v in state.items()})]
    out = [("state dict of the branch", {f"{branch}.{k}": v for k, v in state.items()})]
    has_head = isinstance(getattr(model, f"{branch}_fc", None), nn.Module)
    for name, (key_map, head, modality) in _UNIMODAL.items():
        if modality != branch:
            continue
        mapped = {}
        for k, v in state.items():
            ours = key_map(k)
            if ours is None:
                break
            if head and ours.startswith(head):
                if not has_head:
                    break
                ours = f"{branch}_fc." + ours[len(head):]
            else:
                ours = f"{branch}." + ours.split(".", 1)[1]
            mapped[ours] = v
        else:
            out.append((f"the reference {name} file", mapped))
    return out


def load_pretrained(model: nn.Module, files: Mapping[str, str], partial: bool = False) -> dict[str, dict[str, Any]]:
    """Load local weights into named branches of a model, e.g. ``{"video": "fold_1_resnext50_best.pth"}``.

    A file is mmfusion's state dict of the branch or one of the authors' unimodal files (``resnext50``,
    ``mfccnet``, ``i3d``, ``hcn``; their classifier goes to the ``<branch>_fc`` head where the model has one), in
    any container :func:`read_state_dict` reads. Every tensor of the file must find its parameter (same shape) and
    every tensor of the branch must be given; otherwise a :class:`DataError` names them, unless ``partial`` (then
    what matches is loaded and the rest kept at its initial value). Returns, per branch, how the file was read,
    how many tensors were loaded and the names of the branch's tensors that were kept.
    """
    own = model.state_dict()
    report: dict[str, dict[str, Any]] = {}
    for branch, path in files.items():
        target = model if branch == "model" else getattr(model, branch, None)
        if not isinstance(target, nn.Module):
            names = [n for n, _ in model.named_children()]
            raise ConfigError("unknown branch for pretrained weights", key=branch, expected=f"one of {names}",
                              actual=branch)
        state = read_state_dict(path)

        def fits(mapped: Mapping[str, Tensor]) -> int:
            return sum(1 for k, v in mapped.items() if k in own and own[k].shape == v.shape)

        how, mapped = max(_candidates(state, branch, model), key=lambda c: fits(c[1]))
        usable = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise DataError("no tensor of the file fits the branch", file=path, key=branch,
                            expected=f"keys like {[k.split('.', 1)[1] for k in own if k.startswith(branch + '.')][:3]}",
                            actual=list(state)[:3])
        bad = non_finite_tensors(usable)
        if bad:
            raise DataError("non-finite weights (NaN or inf)", file=path, key=bad[0].removeprefix(branch + "."),
                            expected="finite values", actual=f"{len(bad)} tensor(s) with NaN or inf")
        unused = [k for k in mapped if k not in usable]
        kept = [k for k in own if (branch == "model" or k.startswith(branch + ".")) and k not in usable
                and not k.endswith("num_batches_tracked")]
        if (unused or kept) and not partial:
            detail = []
            if unused:
                detail.append(f"{len(unused)} tensor(s) of the file without a place of the same shape: "
                              + ", ".join(f"{k} {tuple(mapped[k].shape)}"
                                          + (f" (model {tuple(own[k].shape)})" if k in own else "")
                                          for k in unused[:5]))
            if kept:
                detail.append(f"{len(kept)} tensor(s) of the branch not in the file: "
                              + ", ".join(f"{k} {tuple(own[k].shape)}" for k in kept[:5]))
            raise DataError(f"partial match for branch {branch!r}, read as {how} (pass --pretrained-partial to load "
                            "only what matches)", file=path, key=(unused or kept)[0], expected="every tensor mapped",
                            actual="; ".join(detail))
        model.load_state_dict(usable, strict=False)
        report[branch] = {"read_as": how, "loaded": len(usable), "kept": kept, "unused": unused}
    return report
