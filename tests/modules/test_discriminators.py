"""Gradient reversal on a toy problem, the DANN ramp of λ, and the separability probe."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmfusion.engine.diagnostics import probe_accuracy
from mmfusion.models import build
from mmfusion.modules.discriminators import ModalityDiscriminator, grad_reverse, refit_discriminator


def _toy(seed: int, n: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 'modalities' of n clips: 2 dims of a per-clip signal s the task needs, and 6 dims of a modality offset
    plus unit noise (overlapping clusters) it does not need. Returns x (n·3, 8), modality labels, target s_0 + s_1."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, 3, 2, generator=g)
    offsets = 1.5 * torch.randn(3, 6, generator=g)
    x = torch.cat([s, offsets[None].expand(n, 3, 6) + torch.randn(n, 3, 6, generator=g)], -1)
    return x.reshape(-1, 8), torch.arange(3).repeat(n), s.sum(-1).reshape(-1)


def _train(reverse: bool, seed: int, steps: int = 600) -> float:
    """Train an MLP encoder (MEA's encoder shape) + task head + modality discriminator together with Adam; return
    the discriminator's accuracy on the codes, averaged over the last 100 steps (the game oscillates)."""
    torch.manual_seed(seed)
    x, modality, y = _toy(seed)
    enc = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    head, disc = torch.nn.Linear(8, 1), ModalityDiscriminator(8, 3)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters(), *disc.parameters()], lr=1e-2)
    accs = []
    for step in range(steps):
        code = enc(x)
        into_disc = grad_reverse(code, 1.0) if reverse else code
        logits = disc(into_disc)
        loss = F.mse_loss(head(code).squeeze(-1), y) + F.cross_entropy(logits, modality)
        if step >= steps - 100:
            accs.append(float((logits.detach().argmax(-1) == modality).float().mean()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(np.mean(accs))


def test_gradient_reversal_drives_the_discriminator_toward_chance():
    # the encoder can drop the modality offsets (the task does not need them): through the reversed gradient it
    # works against the discriminator, whose accuracy falls toward chance (1/3); without reversal the encoder helps
    # it and it tells the modalities apart. (A fresh classifier fitted on the reversed codes still finds the
    # modality: the game keeps the discriminator wrong more than it removes the information — see
    # docs/results/mea_small_data.md.)
    for seed in (0, 1):
        with_grl, without = _train(True, seed), _train(False, seed)
        assert without > 0.85, seed
        assert with_grl < 0.7 and with_grl < without - 0.2, (seed, with_grl, without)


def _adversarial_codes(reverse: bool, seed: int, refits: int, n: int = 256, steps: int = 400):
    """The toy's three 'modalities' through one shared encoder (as MEA's agnostic encoder reads every modality),
    trained with the task loss plus D_m's cross-entropy, through gradient reversal or not; before each joint step D_m
    gets ``refits`` updates of its own on the detached codes (MEA's ``disc_steps`` = refits + 1). Returns D_m's
    accuracy on held-out codes and a fresh probe's (fitted on the training codes, scored on the held-out ones)."""
    torch.manual_seed(seed)
    x, modality, y = _toy(seed, n)
    fit = len(x) * 2 // 3 // 3 * 3  # whole clips: the first two thirds train, the rest are held out
    enc = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    head, disc = torch.nn.Linear(8, 1), ModalityDiscriminator(8, 3)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters(), *disc.parameters()], lr=1e-2)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    for _ in range(steps):
        code = enc(x[:fit])
        refit_discriminator(disc, disc_opt, code, modality[:fit], refits)
        logits = disc(grad_reverse(code, 1.0) if reverse else code)
        loss = F.mse_loss(head(code).squeeze(-1), y[:fit]) + F.cross_entropy(logits, modality[:fit])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_codes, held_out = enc(x[:fit]), enc(x[fit:])
        disc_acc = float((disc(held_out).argmax(-1) == modality[fit:]).float().mean())
    probe = probe_accuracy(train_codes.reshape(-1, 3, 8).numpy(), held_out.reshape(-1, 3, 8).numpy())
    return disc_acc, probe


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_reversal_against_a_refitted_discriminator_leaves_the_codes_at_chance(seed):
    # Kept near its optimum (nine updates of its own per joint step), the discriminator gives the encoder the
    # gradient that gradient reversal's argument assumes: the encoder drops the modality offsets, and neither the
    # discriminator nor a fresh probe can tell the modalities apart (within 0.1 of chance). The same game without
    # reversal keeps all the modality information the inputs carry (a probe on the raw inputs: the most there is).
    chance = 1 / 3
    disc_acc, probe = _adversarial_codes(True, seed, refits=9)
    assert abs(disc_acc - chance) < 0.1 and abs(probe - chance) < 0.1, (disc_acc, probe)
    x, _, _ = _toy(seed, 256)
    fit = len(x) * 2 // 3 // 3 * 3
    available = probe_accuracy(x[:fit].reshape(-1, 3, 8).numpy(), x[fit:].reshape(-1, 3, 8).numpy())
    assert available > 0.8
    disc_acc, probe = _adversarial_codes(False, seed, refits=9)
    assert disc_acc > available - 0.05 and probe > available - 0.05, (disc_acc, probe, available)


def test_refit_discriminator_trains_only_the_discriminator_and_keeps_pending_gradients():
    torch.manual_seed(0)
    x, modality, _ = _toy(0, 64)
    enc, disc = torch.nn.Linear(8, 8), ModalityDiscriminator(8, 3)
    code = enc(x)
    pending = [torch.full_like(p, 0.5) for p in disc.parameters()]
    for p, g in zip(disc.parameters(), pending):
        p.grad = g.clone()
    before = F.cross_entropy(disc(code), modality).item()
    refit_discriminator(disc, torch.optim.Adam(disc.parameters(), lr=1e-2), code, modality, 50)
    assert F.cross_entropy(disc(code), modality).item() < before - 0.2  # it learned the modalities
    assert enc.weight.grad is None  # the codes were read detached
    assert all(torch.equal(p.grad, g) for p, g in zip(disc.parameters(), pending))
    weight = (modality != 2).float()  # rows of weight 0 are not learned from
    alone = ModalityDiscriminator(8, 3)
    refit_discriminator(alone, torch.optim.Adam(alone.parameters(), lr=1e-2), code, modality, 50, weight)
    assert (alone(code).argmax(-1) == 2).float().mean() < 0.1


def test_grad_reverse_is_identity_forward_and_scales_the_gradient_backward():
    x = torch.randn(5, 3, requires_grad=True)
    out = grad_reverse(x, 0.7)
    assert torch.equal(out, x)
    out.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.7))


def _mea(**overrides):
    return build("mea_tiny", {"text": 5, "vision": 4, "audio": 3}, 1, **overrides)


def test_dann_schedule_ramps_lambda_from_zero_and_constant_keeps_it():
    model = _mea(grl_lambda=2.0, grl_schedule="dann")
    lam = []
    for p in (0.0, 0.1, 0.5, 1.0):
        model.training_progress = p
        lam.append(model.grl_coefficient())
    assert lam[0] == 0.0
    assert lam[1] == pytest.approx(2.0 * (2 / (1 + math.exp(-1.0)) - 1))
    assert lam == sorted(lam) and lam[-1] == pytest.approx(2.0, abs=1e-3)
    const = _mea(grl_lambda=2.0)
    const.training_progress = 0.0
    assert const.grl_coefficient() == 2.0


def test_at_the_start_of_the_ramp_the_agnostic_encoder_gets_no_adversarial_gradient():
    torch.manual_seed(0)
    feats = {m: torch.randn(4, 6, d) for m, d in (("text", 5), ("vision", 4), ("audio", 3))}
    masks = {m: torch.ones(4, 6, dtype=torch.bool) for m in feats}
    model = _mea(grl_schedule="dann")
    for p, zero in ((0.0, True), (0.5, False)):
        model.zero_grad()
        model.training_progress = p
        model(feats, masks)["losses"]["agn"].backward()
        g = model.agnostic_encoder[0].weight.grad
        assert (g is None or torch.count_nonzero(g) == 0) == zero
        assert torch.count_nonzero(model.modality_discriminator[0].weight.grad) > 0  # D_m learns throughout


def test_mea_reports_discriminator_accuracy_and_omega_as_monitors():
    torch.manual_seed(0)
    feats = {m: torch.randn(4, 6, d) for m, d in (("text", 5), ("vision", 4), ("audio", 3))}
    masks = {m: torch.ones(4, 6, dtype=torch.bool) for m in feats}
    model = _mea()
    out = model(feats, masks)
    mon = out["monitor"]
    codes = out["inspect"]["codes"]["agnostic"].reshape(12, -1)
    expected = (model.modality_discriminator(codes).argmax(-1) == torch.arange(3).repeat(4)).float().mean()
    assert float(mon["disc_acc_agnostic"]) == pytest.approx(float(expected))
    assert not any(v.requires_grad for v in mon.values())
    assert set(mon) == {"disc_acc_exclusive", "disc_acc_agnostic", "grl_lambda", "omega"}


def test_the_probe_tells_separable_codes_from_mixed_ones():
    rng = np.random.default_rng(0)
    mixed = rng.normal(size=(600, 3, 4))
    separable = mixed + np.array([0.0, 3.0, -3.0])[None, :, None]
    assert probe_accuracy(separable[:300], separable[300:]) > 0.95
    assert abs(probe_accuracy(mixed[:300], mixed[300:]) - 1 / 3) < 0.08


def test_the_network_probe_reads_what_the_means_do_not():
    """Equal means, different spreads: a linear probe sits at chance, the network probe does not."""
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(900, 3, 4)) * np.array([0.3, 1.0, 3.0])[None, :, None]
    codes -= codes.mean(0, keepdims=True)  # each modality centred exactly, as agnostic_norm does
    assert abs(probe_accuracy(codes[:600], codes[600:]) - 1 / 3) < 0.08
    assert probe_accuracy(codes[:600], codes[600:], kind="mlp") > 0.75
    mixed = rng.normal(size=(900, 3, 4))
    assert abs(probe_accuracy(mixed[:600], mixed[600:], kind="mlp") - 1 / 3) < 0.08
    # a handful of training clips (a tiny dataset) still gets a network probe, fitted without early stopping
    few = codes[:4] + np.array([0.0, 4.0, -4.0])[None, :, None]
    assert probe_accuracy(few, few, kind="mlp") == 1.0


def test_gradient_reversal_negates_and_scales():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(4)
    (grad_reverse(x, 0.7) @ w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * w.expand(3, 4))


def _refit_on_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        disc = ModalityDiscriminator(8, 3)
        x, labels, _ = _toy(seed=3, n=16)
        share = slice(rank * 24, (rank + 1) * 24)  # each process its own half of the 48 codes
        refit_discriminator(disc, torch.optim.Adam(disc.parameters(), lr=0.01), x[share], labels[share], steps=3)
        torch.save(disc.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_refits_under_several_processes_keep_the_replicas_equal_and_match_one_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_refit_on_rank, args=(2, port, str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    torch.manual_seed(0)
    disc = ModalityDiscriminator(8, 3)
    x, labels, _ = _toy(seed=3, n=16)
    start = {k: v.clone() for k, v in disc.state_dict().items()}
    refit_discriminator(disc, torch.optim.Adam(disc.parameters(), lr=0.01), x, labels, steps=3)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)  # the same steps on both replicas
        torch.testing.assert_close(a[k], disc.state_dict()[k], rtol=1e-5, atol=1e-6)  # = one process on all codes
    assert any(not torch.equal(start[k], a[k]) for k in a)
