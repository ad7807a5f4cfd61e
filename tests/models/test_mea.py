"""MEA: ablation switches, the adversarial gradients, inspection, and learning."""

import pytest
import torch

from mmfusion.models import build
from mmfusion.models.mea import MEAConfig

DIMS = {"text": 13, "vision": 5, "audio": 20}


def _batch(B=4, seed=0, lens=None):
    g = torch.Generator().manual_seed(seed)
    lens = lens or {"text": 7, "vision": 11, "audio": 5}
    feats = {m: torch.randn(B, lens[m], d, generator=g) for m, d in DIMS.items()}
    masks = {m: torch.ones(B, lens[m], dtype=torch.bool) for m in DIMS}
    masks["vision"][1, 6:] = False
    feats["vision"][1, 6:] = 0
    return feats, masks


def _names(model):
    return {n for n, _ in model.named_parameters()}


# which parameter-name prefixes each ablation removes (nothing else may change)
REMOVES = {
    "no_dis": set(), "dis_orthogonal": set(), "no_adversarial": {"modality_discriminator", "importance_discriminator"},
    "no_omega": {"importance_discriminator"},
    "no_exclusive": {"psa", "psa_norms", "wal", "exclusive_encoders", "dgf.graphs.exclusive"},
    "no_agnostic": {"hca", "agnostic_encoder", "importance_discriminator", "dgf.graphs.agnostic"},
    "no_psa": {"psa", "psa_norms", "wal"}, "no_prediction": {"predictor"}, "no_wal": {"wal"}, "no_hca": {"hca"},
    "no_mixed": {"mixed"}, "no_coarse": {"coarse"}, "no_fine": {"fine"},
    "dgf_concat": {"dgf"}, "dgf_add": {"dgf"}, "dgf_multiply": {"dgf"},
}
LOSSES = {"no_dis": {"exc", "agn", "importance"}, "no_adversarial": {"dis"}, "no_omega": {"dis", "exc", "agn"},
          "no_exclusive": {"agn", "importance"}, "no_agnostic": {"exc"}}


# the paper's Table I per dataset config: (batch, epochs, lr, d, d_h, heads, kernels L/V/A, µ, α, β)
TABLE_I = {
    "mosi": (32, 60, 1e-3, 40, 64, 8, (3, 3, 3), 0.25, 0.02, 0.03),
    "mosei": (64, 100, 2e-3, 40, 64, 10, (3, 3, 3), 0.15, 0.03, 0.05),
    "iemocap": (32, 60, 1e-3, 40, 64, 8, (3, 3, 5), 0.2, 0.01, 0.02),
}
# what the paper leaves open, from MulT's published settings per dataset (Tsai et al. 2019, Table 5, and its code):
# attention-map, embedding, output dropout, gradient clipping; plateau factor 0.1 after 20 epochs, no early stopping
MULT = {"mosi": (0.2, 0.2, 0.1, 0.8), "mosei": (0.1, 0.3, 0.1, 1.0), "iemocap": (0.25, 0.3, 0.1, 0.8)}


@pytest.mark.parametrize("dataset", sorted(TABLE_I))
def test_paper_configs_pin_table_i_and_mults_settings(dataset):
    from pathlib import Path

    from mmfusion.engine.config import resolve_config

    cfg = resolve_config(str(Path(__file__).resolve().parents[2] / "configs" / "mea" / f"{dataset}.yaml"))
    model = build(cfg.model, {"text": 300, "vision": 35, "audio": 74}, 8 if dataset == "iemocap" else 1,
                  **cfg.model_args)
    c, t = model.config, cfg.train
    kernels = tuple(model.frontends[m].conv.kernel_size[0] for m in ("text", "vision", "audio"))
    assert (t.batch_size, t.max_epochs, t.lr, c.dim, c.rep_dim, c.num_heads, kernels, c.mu, c.alpha,
            c.beta) == TABLE_I[dataset]
    assert model.psa["text"][0].num_heads == TABLE_I[dataset][5]  # the layers are built with them
    assert (c.attn_dropout, c.embed_dropout, c.out_dropout, t.grad_clip) == MULT[dataset]
    assert (c.res_dropout, t.lr_factor, t.lr_patience, t.patience) == (0.1, 0.1, 20, 0)
    assert (c.psa_layers, c.hca_layers, c.mixing, c.pooling) == (3, 2, "logits", "mean")


@pytest.mark.parametrize("ablation", sorted(MEAConfig.ABLATIONS))
def test_ablation_builds_trains_and_removes_exactly_its_parts(ablation):
    full = build("mea_tiny", DIMS, 1)
    model = build("mea_tiny", DIMS, 1, **MEAConfig.ABLATIONS[ablation])
    gone = _names(full) - _names(model)
    added = _names(model) - _names(full)
    parts = REMOVES[ablation]

    def hit(name):
        return any(p in name.split(".") or name.startswith(p + ".") for p in parts)

    assert gone == {n for n in _names(full) if hit(n)}, sorted(gone ^ {n for n in _names(full) if hit(n)})
    if parts:
        assert gone, "the ablation removed nothing"
    assert not added
    if ablation in ("dgf_concat",):
        assert model.head[0].in_features == 3 * full.head[0].in_features
    feats, masks = _batch()
    out = model(feats, masks)
    assert set(out["losses"]) == LOSSES.get(ablation, {"dis", "exc", "agn", "importance"})
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    (out["pred"].square().mean() + sum(out["losses"].values())).backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the switch changes what the model computes: with the weights it shares with the full model, its prediction
    # or one of its losses differs
    torch.manual_seed(0)
    full, model = build("mea_tiny", DIMS, 1).eval(), model.eval()
    shared = {k: v for k, v in full.state_dict().items()
              if k in model.state_dict() and model.state_dict()[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    with torch.no_grad():
        a, b = full(feats, masks), model(feats, masks)
    same_losses = set(a["losses"]) == set(b["losses"]) and all(
        torch.allclose(a["losses"][k], b["losses"][k]) for k in a["losses"])
    assert not (torch.allclose(a["pred"], b["pred"]) and same_losses)


def test_agnostic_encoder_gets_reversed_scaled_discriminator_gradient():
    feats, masks = _batch()
    grads = {}
    for lam in (1.0, 2.5):
        torch.manual_seed(0)
        model = build("mea_tiny", DIMS, 1, grl_lambda=lam, use_omega=False).eval()
        model(feats, masks)["losses"]["agn"].backward()
        grads[lam] = torch.cat([p.grad.flatten() for p in model.agnostic_encoder.parameters()])
        disc = torch.cat([p.grad.flatten() for p in model.modality_discriminator.parameters()])
        if lam == 1.0:
            disc_1 = disc
    torch.testing.assert_close(grads[2.5], 2.5 * grads[1.0])
    torch.testing.assert_close(disc, disc_1)  # the discriminator itself is trained normally, whatever λ
    # sign: the reversed gradient is the negative of the plain one
    torch.manual_seed(0)
    model = build("mea_tiny", DIMS, 1, use_omega=False).eval()
    out = model(feats, masks)
    codes = out["inspect"]["codes"]["agnostic"]
    B, M, _ = codes.shape
    target = torch.arange(M).repeat(B)
    plain = torch.nn.functional.cross_entropy(model.modality_discriminator(codes.reshape(B * M, -1)), target)
    plain_grad = torch.autograd.grad(model.config.beta * M * plain, list(model.agnostic_encoder.parameters()))
    torch.testing.assert_close(torch.cat([g.flatten() for g in plain_grad]), -grads[1.0])


def test_importance_discriminator_trains_on_its_own_loss_and_omega_is_detached():
    feats, masks = _batch()
    model = build("mea_tiny", DIMS, 1)
    losses = model(feats, masks)["losses"]
    losses["importance"].backward(retain_graph=True)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.importance_discriminator.parameters())
    assert all(p.grad is None for p in model.agnostic_encoder.parameters())  # its input is detached
    model.zero_grad()
    losses["agn"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.importance_discriminator.parameters())


def test_explain_returns_every_map():
    feats, masks = _batch()
    model = build("mea_tiny", DIMS, 1).eval()
    info = model.explain(feats, masks)["inspect"]
    assert len(info["psa"]["vision"]) == 2 and info["psa"]["vision"][0].shape == (4, 2, 11, 11)
    assert info["wal"].shape == (4, 2, 3)
    hca = info["hca"]["text"][0]
    assert set(hca) == {"mixed", "coarse", "fine_vision", "fine_audio"}
    assert hca["mixed"].shape == (4, 2, 7, 7 + 11 + 5)
    assert (hca["mixed"][1, :, :, 7 + 6:7 + 11] == 0).all()  # padded vision frames get no attention
    assert info["dgf"]["exclusive"].shape == (4, 3, 3)
    # the maps do not change the prediction
    torch.testing.assert_close(model.explain(feats, masks)["pred"], model(feats, masks)["pred"])


def test_conv_frontend_leaves_out_exactly_the_lstms_and_keeps_padding_invariance():
    from tests.models.test_contract import DIMS as CDIMS
    from tests.models.test_contract import _inputs, _more_garbage_padding

    full = build("mea_tiny", DIMS, 1)
    model = build("mea_tiny", DIMS, 1, frontend="conv")
    gone = _names(full) - _names(model)
    assert gone and gone == {n for n in _names(full) if n.startswith("frontends.") and ".lstm." in n}
    assert _names(model) < _names(full)

    model = build("mea_tiny", CDIMS, 1, frontend="conv").eval()
    feats, masks = _inputs()
    z = model.frontends["vision"](feats["vision"], masks["vision"])
    assert (z[~masks["vision"]] == 0).all()  # padded frames stay zero without the recurrence
    with torch.no_grad():
        ref = model(feats, masks)["pred"]
        padded = model(*_more_garbage_padding(feats, masks))["pred"]
    torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)
    # the front end's output at a frame depends only on its kernel neighbourhood (no recurrence)
    x = feats["text"][:1].clone()
    mask = torch.ones(1, x.shape[1], dtype=torch.bool)
    base = model.frontends["text"](x, mask)
    x[0, -1] += 1.0
    moved = model.frontends["text"](x, mask)
    assert torch.equal(base[0, :-2], moved[0, :-2]) and not torch.equal(base[0, -2:], moved[0, -2:])


def test_residual_frontend_adds_the_convolution_around_the_lstm_and_keeps_padding_invariance():
    from tests.models.test_contract import DIMS as CDIMS
    from tests.models.test_contract import _inputs, _more_garbage_padding

    assert _names(build("mea_tiny", DIMS, 1, frontend="conv_lstm_residual")) == _names(build("mea_tiny", DIMS, 1))
    torch.manual_seed(0)
    model = build("mea_tiny", CDIMS, 1, frontend="conv_lstm_residual").eval()
    paper = build("mea_tiny", CDIMS, 1).eval()
    conv = build("mea_tiny", CDIMS, 1, frontend="conv").eval()
    paper.load_state_dict(model.state_dict())
    conv.load_state_dict(model.state_dict(), strict=False)  # the same weights without the LSTMs
    feats, masks = _inputs()
    with torch.no_grad():
        for m in CDIMS:
            z = model.frontends[m](feats[m], masks[m])
            # Z_m = H + BiLSTM(H): the paper's output plus the positioned convolution, zero at padding
            expected = paper.frontends[m](feats[m], masks[m]) + conv.frontends[m](feats[m], masks[m])
            torch.testing.assert_close(z, expected)
            assert (z[~masks[m]] == 0).all()
        ref = model(feats, masks)["pred"]
        padded = model(*_more_garbage_padding(feats, masks))["pred"]
    torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ref, paper(feats, masks)["pred"])  # the option changes the model's function


def test_frontend_rejects_a_residual_without_the_lstm_and_an_even_kernel():
    from mmfusion.modules.frontend import ModalityFrontEnd

    with pytest.raises(ValueError, match="residual=True .* needs recurrent=True"):
        ModalityFrontEnd(5, 8, recurrent=False, residual=True)
    with pytest.raises(ValueError, match="kernel_size must be odd .* got 4"):
        ModalityFrontEnd(5, 8, kernel_size=4)
    assert ModalityFrontEnd(5, 8, recurrent=True, residual=True).lstm is not None


def _pred_with_psi(model, feats, masks, layer, psi_row):
    """The prediction with layer ``layer``'s WAL weights forced to ``psi_row`` for every sample."""

    def force(module, inputs, output):
        z, _ = inputs
        psi = torch.tensor(psi_row).expand(next(iter(z.values())).shape[0], -1)
        return {m: z[m] * psi[:, i, None, None] for i, m in enumerate(module.modalities)}, psi

    handle = model.wal[layer].register_forward_hook(force)
    try:
        with torch.no_grad():
            return model(feats, masks)["pred"]
    finally:
        handle.remove()


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_every_wal_weighs_what_the_exclusive_encoders_read(layer):
    """Moving one layer's ψ from text-heavy to audio-heavy moves the prediction by more than 0.2 % of its size, the
    last layer's by more than 2 % (it scales the encoders' input directly). With the stack's final LayerNorm after
    the last WAL that layer's ψ cancels: it moved the prediction by 0.03 % (LayerNorm's epsilon only)."""
    torch.manual_seed(0)
    model = build("mea_tiny", DIMS, 4, psa_layers=3).eval()
    feats, masks = _batch(B=8)
    a = _pred_with_psi(model, feats, masks, layer, [0.8, 0.1, 0.1])
    b = _pred_with_psi(model, feats, masks, layer, [0.1, 0.1, 0.8])
    change = ((a - b).norm() / a.norm()).item()
    margin = 0.02 if layer == 2 else 0.002
    assert change > margin, f"layer {layer}: ψ moved the prediction by {change:.4f} of its size"


def test_exclusive_branch_hands_the_encoders_the_last_psi_times_normalised_streams():
    torch.manual_seed(0)
    model = build("mea_tiny", DIMS, 1).eval()  # LayerNorms at their initial weight 1, bias 0
    feats, masks = _batch()
    info = {}
    with torch.no_grad():
        z = {m: model.frontends[m](feats[m], masks[m]) for m in model.modalities}
        ze = model.exclusive_branch(z, masks, info)
    psi = info["wal"][:, -1]  # (B, M): the last layer's weights
    for i, m in enumerate(model.modalities):
        h = ze[m][masks[m]] / psi[:, i, None, None].expand_as(ze[m])[masks[m]]  # real frames, ψ divided out
        torch.testing.assert_close(h.mean(-1), torch.zeros(h.shape[0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(h.var(-1, unbiased=False), torch.ones(h.shape[0]), atol=1e-3, rtol=0)
        assert (ze[m][~masks[m]] == 0).all()


def _missing_vision_batch():
    feats, masks = _batch(B=5)
    masks["vision"][2] = False  # clip 2 has no vision frame (length 0)
    feats["vision"][2] = 0
    return feats, masks


@pytest.mark.parametrize("disparity", ["hsic", "orthogonal"])
def test_a_missing_modality_enters_no_loss_term(disparity):
    torch.manual_seed(0)
    model = build("mea_tiny", DIMS, 1, disparity=disparity).eval()
    feats, masks = _missing_vision_batch()
    with torch.no_grad():
        out = model(feats, masks)
    codes, losses = out["inspect"]["codes"], out["losses"]
    present = torch.ones(5, 3, dtype=torch.bool)
    present[2, 1] = False
    # the same terms whatever the missing modality's codes are
    moved = {k: v.clone() for k, v in codes.items()}
    for v in moved.values():
        v[2, 1] = 100 * torch.randn(v.shape[-1])
    with torch.no_grad():
        again = model.decoupling_losses(moved, present)
    for k in losses:
        torch.testing.assert_close(again[k], losses[k])
    # and the terms written out over what is present: vision's disparity over the 4 clips that have it, the
    # cross-entropies averaged over the 14 present (clip, modality) pairs
    from mmfusion.modules.losses import hsic, orthogonality

    fn = hsic if disparity == "hsic" else orthogonality
    he, ha = codes["exclusive"], codes["agnostic"]
    keep = torch.tensor([0, 1, 3, 4])
    dis = (fn(he[:, 0], ha[:, 0]) + fn(he[keep, 1], ha[keep, 1]) + fn(he[:, 2], ha[:, 2])) / 3
    torch.testing.assert_close(losses["dis"], model.config.alpha * dis)
    pairs_e, pairs_a = he[present], ha[present]  # (14, d_h), in (clip, modality) order
    labels = torch.arange(3).repeat(5)[present.flatten()]
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        exc = ce(model.modality_discriminator(pairs_e), labels)
        imp = model.importance_discriminator(pairs_a)
        omega = 1 - imp.softmax(-1).gather(1, labels[:, None]).squeeze(1)
        agn = (ce(model.modality_discriminator(pairs_a), labels, reduction="none") * omega).mean()
    torch.testing.assert_close(losses["exc"], model.config.beta * 3 * exc)
    torch.testing.assert_close(losses["importance"], ce(imp, labels))
    torch.testing.assert_close(losses["agn"], model.config.beta * 3 * agn)
    assert (out["inspect"]["dgf"]["exclusive"][2, :, 1] == 0).all()  # no neighbour in the fusion graphs
    assert out["inspect"]["wal"][2, :, 1].eq(0).all()  # and no WAL weight


def test_a_clip_with_a_missing_modality_gets_a_finite_prediction_that_ignores_its_frames():
    torch.manual_seed(0)
    model = build("mea_tiny", DIMS, 1).eval()
    feats, masks = _missing_vision_batch()
    with torch.no_grad():
        pred = model(feats, masks)["pred"]
        feats["vision"][2] = 50 * torch.randn_like(feats["vision"][2])  # garbage in the missing modality's frames
        again = model(feats, masks)["pred"]
    assert torch.isfinite(pred).all()
    torch.testing.assert_close(again, pred)
    # a clip with only one modality present is fused too
    masks["audio"][2] = False
    with torch.no_grad():
        assert torch.isfinite(model(feats, masks)["pred"]).all()


def test_attention_is_one_model_arg_recorded_and_checked(monkeypatch):
    """model_args.attention reaches every attention module, is part of the full config a checkpoint records, gives
    the same predictions and gradients under eager and sdpa, and a bad value is one ConfigError naming it."""
    from mmfusion.engine.model_plan import plan_model
    from mmfusion.errors import ConfigError

    monkeypatch.setenv("MMFUSION_KERNELS", "0")
    feats, masks = _batch()
    results = {}
    for setting in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = build("mea_tiny", DIMS, 1, attention=setting).eval()
        settings = {m.attention for m in model.modules() if hasattr(m, "attention") and isinstance(m.attention, str)}
        assert settings == {setting}
        out = model(feats, masks)
        loss = out["pred"].square().sum() + sum(out["losses"].values())
        results[setting] = out["pred"], torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(results["sdpa"][0], results["eager"][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(results["sdpa"][1], results["eager"][1]):
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert plan_model("mea_tiny", {}, DIMS, 1, source="t")[0]["attention"] == "auto"
    assert plan_model("mea_tiny", {"attention": "sdpa"}, DIMS, 1, source="t")[0]["attention"] == "sdpa"
    with pytest.raises(ConfigError, match=r"mea_tiny: unknown value \(key 'attention'\): expected one of "
                                          r"\['auto', 'eager', 'sdpa', 'kernel'\], got 'flash'"):
        build("mea_tiny", DIMS, 1, attention="flash")
    with pytest.raises(ConfigError, match=r"mult: the compiled attention kernel is unavailable here \(disabled by "
                                          r"MMFUSION_KERNELS\) \(key 'attention'\)"):
        build("mult", DIMS, 1, attention="kernel")
    with pytest.raises(ConfigError, match=r"misa: the compiled kernel serves heads of width <= 8; these are 32"):
        build("misa", DIMS, 1, attention="kernel")


def test_disc_steps_refits_only_the_modality_discriminator_on_the_batch_codes_while_training():
    import copy

    from mmfusion.modules.discriminators import refit_discriminator

    torch.manual_seed(0)
    codes = {"exclusive": torch.randn(5, 3, 8), "agnostic": torch.randn(5, 3, 8, requires_grad=True)}
    present = torch.ones(5, 3, dtype=torch.bool)
    present[2, 1] = False
    model = build("mea_tiny", DIMS, 1, disc_steps=4, disc_lr=0.01)
    reference = copy.deepcopy(model.modality_discriminator)
    others = {n: p.clone() for n, p in model.named_parameters() if not n.startswith("modality_discriminator")}
    losses = model.decoupling_losses(codes, present)
    # by hand: three Adam updates of D_m alone on both code kinds, missing pairs weighted 0
    labels, weight = torch.arange(3).repeat(5), present.reshape(-1).float()
    refit_discriminator(reference, torch.optim.Adam(reference.parameters(), lr=0.01),
                        torch.cat([codes["exclusive"].reshape(15, 8), codes["agnostic"].reshape(15, 8)]),
                        labels.repeat(2), 3, weight.repeat(2))
    for p, q in zip(model.modality_discriminator.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    assert all(torch.equal(p, others[n]) for n, p in model.named_parameters() if n in others)
    with torch.no_grad():  # the losses read the refitted D_m, and the codes still get the reversed gradient
        exc = torch.nn.functional.cross_entropy(reference(codes["exclusive"].reshape(15, 8)[weight > 0]),
                                                labels[weight > 0])
    torch.testing.assert_close(losses["exc"], model.config.beta * 3 * exc)
    losses["agn"].backward()
    assert codes["agnostic"].grad.abs().sum() > 0
    # not in evaluation, and not with the paper's one joint step
    for m in (model.eval(), build("mea_tiny", DIMS, 1)):
        before = [p.clone() for p in m.modality_discriminator.parameters()]
        m.decoupling_losses(codes, present)
        assert all(torch.equal(p, q) for p, q in zip(m.modality_discriminator.parameters(), before))


def test_agnostic_norm_standardises_each_modalitys_agnostic_codes_and_nothing_else():
    torch.manual_seed(0)
    paper = build("mea_tiny", DIMS, 1)
    model = build("mea_tiny", DIMS, 1, agnostic_norm="modality")
    assert {n for n, _ in model.named_buffers()} - {n for n, _ in paper.named_buffers()} == {
        "agnostic_standardizer.running_mean", "agnostic_standardizer.running_var"}
    assert _names(model) == _names(paper)  # no parameter added
    model.load_state_dict(paper.state_dict(), strict=False)
    feats, masks = _missing_vision_batch()
    model.train(), paper.train()
    torch.manual_seed(1)
    raw = paper(feats, masks)["inspect"]["codes"]
    torch.manual_seed(1)
    codes = model(feats, masks)["inspect"]["codes"]  # the same dropout draws
    torch.testing.assert_close(codes["exclusive"], raw["exclusive"])
    present = torch.ones(5, 3, dtype=torch.bool)
    present[2, 1] = False
    for m in range(3):
        rows = codes["agnostic"][present[:, m], m]
        torch.testing.assert_close(rows.mean(0), torch.zeros(rows.shape[1]), atol=1e-5, rtol=0)
    assert codes["agnostic"][2, 1].eq(0).all()
    with pytest.raises(Exception, match="agnostic_norm"):
        build("mea_tiny", DIMS, 1, agnostic_norm="batch")


def test_calibrate_centres_the_evaluation_mode_agnostic_codes_of_the_batches_it_reads():
    torch.manual_seed(0)
    model = build("mea_tiny", DIMS, 1, agnostic_norm="modality").train()
    batches = [_batch(B=6, seed=s) for s in range(3)]
    for feats, masks in batches:  # running values from training mode (dropout on) first
        model(feats, masks)
    model.calibrate(batches)
    assert model.training  # the mode is given back
    model.eval()
    with torch.no_grad():
        codes = torch.cat([model(f, m)["inspect"]["codes"]["agnostic"] for f, m in batches])
    torch.testing.assert_close(codes.mean(0), torch.zeros_like(codes[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(codes.var(0), torch.ones_like(codes[0]), atol=0.05, rtol=0)  # var/(var + eps)
    paper = build("mea_tiny", DIMS, 1)
    before = {k: v.clone() for k, v in paper.state_dict().items()}
    paper.calibrate(batches)  # the paper's model has nothing to calibrate
    assert all(torch.equal(v, before[k]) for k, v in paper.state_dict().items())
