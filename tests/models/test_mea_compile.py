"""torch.compile: the compiled attention kernel and PSA's prediction product stay inside the compiled graph, and the
compiled model computes what the eager one does."""

import pytest
import torch

from mmfusion.models import build
from mmfusion.modules import psa
from mmfusion.runtime import compile_model
from tests.models.test_mea import DIMS, _batch


def _no_eager_kernels(monkeypatch):
    """Make the eager-only prediction product fail: a compiled graph must trace its traceable form instead."""
    def fail(*args):
        raise AssertionError("an eager-only autograd function ran inside the compiled model")

    monkeypatch.setattr(psa._ConvOfProduct, "apply", fail)


@pytest.fixture
def factored(monkeypatch):
    """These clips are short enough for PSA's prediction to convolve the logit map itself; take the factored
    product instead, the one whose traceable form compiled graphs must use."""
    monkeypatch.setattr(psa, "DIRECT_MAX_T", 0)


def _grads(run, model, feats, masks):
    out = run(feats, masks)
    loss = out["pred"].square().sum() + sum(out["losses"].values())
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: g for n, g in zip(params, grads) if g is not None}


def test_compiled_mea_matches_eager(ext, monkeypatch, factored):
    """Inference and one training step's gradients, with padded clips. (Graphs are captured by dynamo and
    AOTAutograd as with the default backend; generating C++ for them is left out to keep the test short — that
    step is PyTorch's, and benchmarks/speed.py --compile runs it.)"""
    torch.manual_seed(0)
    model = build("mea", DIMS, 1, psa_layers=2, hca_layers=1, embed_dropout=0.0, res_dropout=0.0,
                  out_dropout=0.0)
    feats, masks = _batch()
    model.eval()
    with torch.inference_mode():
        want = model(feats, masks)["pred"]
    model.train()
    want_grads = _grads(model, model, feats, masks)

    compiled = compile_model(model, backend="aot_eager", dynamic=False)
    _no_eager_kernels(monkeypatch)
    model.eval()
    torch._dynamo.utils.counters.clear()
    with torch.inference_mode():
        got = compiled(feats, masks)["pred"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the only splits are at the LSTMs (dynamo cannot trace them), none at the attention kernel
    breaks = list(torch._dynamo.utils.counters["graph_break"])
    assert breaks and all("LSTM" in reason for reason in breaks), breaks
    model.train()
    got_grads = _grads(compiled, model, feats, masks)
    assert got_grads.keys() == want_grads.keys()
    for name, g in got_grads.items():
        torch.testing.assert_close(g, want_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_one_compiled_graph_serves_every_length(ext):
    """No length is pinned inside the graph: clips of four padded lengths run through the one graph compiled for
    the first (PSA's shifted rows once used unfold(-1, T, 1), which pinned T and recompiled on every length).

    The lengths differ from every feature size and from the batch size: dynamo gives equal sizes one symbol, and
    a feature size is fixed by its layer's weights, so a length equal to one would be fixed with it until a first
    recompile. The inputs are made outside inference mode, as a data loader makes them (an inference tensor has
    other dispatch keys, which is a recompile of its own)."""
    torch.manual_seed(0)
    model = build("mea", DIMS, 1, psa_layers=2, hca_layers=1, frontend="conv").eval()
    compiled = compile_model(model, backend="aot_eager", dynamic=True)
    feats, masks = _batch(lens={"text": 9, "vision": 18, "audio": 27})
    clips = [({m: x[:, :x.shape[1] - cut].clone() for m, x in feats.items()},
              {m: x[:, :x.shape[1] - cut].clone() for m, x in masks.items()}) for cut in range(4)]
    torch._dynamo.utils.counters.clear()
    graphs = []
    with torch.inference_mode():
        for f, k in clips:
            torch.testing.assert_close(compiled(f, k)["pred"], model(f, k)["pred"], atol=1e-5, rtol=1e-5)
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert not torch._dynamo.utils.counters["graph_break"]  # without the Bi-LSTM, one graph for the whole model
    assert graphs == [1, 1, 1, 1], graphs
