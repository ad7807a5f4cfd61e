"""The MSAF authors' recipes: checkpoint selection on the test split (train.reference_selection) and a constant
learning rate (train.lr_schedule=constant)."""

import csv
import json

import pytest

from mmfusion.cli.main import main
from mmfusion.engine.system import FusionSystem

SMALL = ["--model", "lf_lstm_tiny", "--data", "synthetic", "--max-epochs", "3", "--batch-size", "16", "--no-progress",
         "--threads", "1", "--set", "data_args.n_train=64", "--set", "data_args.n_valid=16",
         "--set", "data_args.n_test=32", "--set", "train.patience=0"]


def _val_and_test(out):
    run = out / "lf_lstm_tiny" / "synthetic" / "seed_1111"
    rows = list(csv.DictReader(open(run / "logs" / "version_0" / "metrics.csv")))
    val = [float(r["val_corr"]) for r in rows if r.get("val_corr")]
    return val, json.loads((run / "metrics.json").read_text())["corr"]


def test_reference_selection_picks_the_epoch_best_on_the_test_split(tmp_path):
    assert main(["fit", *SMALL, "--set", "train.reference_selection=true", "--out", str(tmp_path / "ref")]) == 0
    val, test = _val_and_test(tmp_path / "ref")
    assert len(val) == 3 and test == pytest.approx(max(val), abs=1e-6)  # "validation" was the test split
    assert main(["fit", *SMALL, "--out", str(tmp_path / "honest")]) == 0
    val, test = _val_and_test(tmp_path / "honest")
    assert all(abs(v - test) > 1e-9 for v in val)  # validated on its own split


def test_constant_learning_rate_has_no_scheduler():
    args = ("lf_lstm_tiny", {}, {"text": 8, "vision": 4, "audio": 4}, 1, "regression")
    assert "lr_scheduler" not in FusionSystem(*args, train={"lr_schedule": "constant"}).configure_optimizers()
    assert "lr_scheduler" in FusionSystem(*args, train={}).configure_optimizers()


def test_branch_losses_train_each_ntu_branch_on_its_own_loss():
    import torch

    from mmfusion.batch import Batch

    torch.manual_seed(0)
    args = ("msaf_ntu_tiny", {}, {"rgb": 32, "skeleton": 25}, 60, "classification")
    system = FusionSystem(*args, train={"branch_losses": True})
    system.log = lambda *a, **k: None  # outside a Trainer
    batch = Batch({"rgb": torch.rand(2, 3, 8, 32, 32), "skeleton": torch.randn(2, 2, 3, 16, 25)}, {},
                  torch.tensor([3, 7]), ["a", "b"])
    system.eval()  # no dropout: the same forward twice
    total, _ = system._step(batch, "train")
    out = system(batch)
    ce = torch.nn.functional.cross_entropy
    want = ce(out["branches"]["rgb"], batch.labels) + ce(out["branches"]["skeleton"], batch.labels)
    torch.testing.assert_close(total, want)
    assert not torch.allclose(total, ce(out["pred"], batch.labels))


def _tiny_ntu_batches(n, seed):
    import torch

    from mmfusion.batch import Batch

    g = torch.Generator().manual_seed(seed)
    return [Batch({"rgb": torch.rand(2, 3, 8, 32, 32, generator=g),
                   "skeleton": torch.randn(2, 2, 3, 16, 25, generator=g)}, {},
                  torch.randint(0, 60, (2,), generator=g), ["a", "b"]) for _ in range(n)]


def test_ntu_config_trains_with_the_authors_optimisers_steps_and_schedule(tmp_path):
    """configs/msaf/ntu.yaml: one Adam per branch over the branch and the MSAF blocks, stepped in turn each on its
    own branch's loss after its own forward pass, rates x 0.1 before the milestone epochs: the weights after a
    Lightning fit equal those of the authors' loop (ntu_rgb_d/main_msaf.py) written out by hand."""
    import copy

    import lightning as L
    import torch

    from mmfusion.engine.config import resolve_config

    cfg = resolve_config("configs/msaf/ntu.yaml").train
    assert (cfg.lr_schedule, cfg.lr_milestones, cfg.lr_factor) == ("multistep", [5, 20], 0.1)
    assert cfg.branch_optimizers and cfg.branch_losses and (cfg.lr, cfg.weight_decay) == (1e-4, 1e-4)
    torch.manual_seed(0)
    train = {**cfg.__dict__, "lr": 1e-3, "lr_milestones": [1, 3], "max_epochs": 4}
    system = FusionSystem("msaf_ntu_tiny", {}, {"rgb": 32, "skeleton": 25}, 60, "classification", train=train)
    for m in system.modules():  # no dropout: both loops see the same function
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    model = copy.deepcopy(system.model)
    start = {k: p.detach().clone() for k, p in model.named_parameters()}

    names = {id(p): k for k, p in system.model.named_parameters()}
    rgb_opt, sk_opt = (c["optimizer"] for c in system.configure_optimizers())
    for opt, own, other in ((rgb_opt, "rgb.", "skeleton."), (sk_opt, "skeleton.", "rgb.")):
        keys = {names[id(p)] for g in opt.param_groups for p in g["params"]}
        assert {k for k in names.values() if k.startswith(("msaf1.", "msaf2.", own))} == keys
        assert not any(k.startswith(other) for k in keys)

    lrs = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            lrs.append([g["lr"] for o in trainer.optimizers for g in o.param_groups])

    batches = _tiny_ntu_batches(2, seed=1)

    def loader(items):
        return torch.utils.data.DataLoader(items, batch_size=None, collate_fn=lambda b: b)

    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[Record()])
    trainer.fit(system, loader(batches), loader(_tiny_ntu_batches(1, seed=2)))
    for epoch, want in enumerate([1e-3, 1e-4, 1e-4, 1e-5]):  # x 0.1 before epochs 1 and 3, every group
        assert lrs[epoch] == pytest.approx([want] * len(lrs[epoch]), rel=1e-9)

    # the authors' loop: two optimisers sharing the MSAF blocks, update_lr at the milestones, step(0) then step(1)
    shared = [p for k, p in model.named_parameters() if k.startswith(("msaf1.", "msaf2."))]
    opts = [torch.optim.Adam([p for k, p in model.named_parameters() if k.startswith(b)] + shared, lr=1e-3,
                             weight_decay=1e-4, fused=True) for b in ("rgb.", "skeleton.")]
    model.train()
    ce = torch.nn.functional.cross_entropy
    for epoch in range(4):
        if epoch in (1, 3):
            for opt in opts:
                for g in opt.param_groups:
                    g["lr"] *= 0.1
        for batch in batches:
            for branch, opt in zip(("rgb", "skeleton"), opts):
                loss = ce(model(batch.features, batch.masks)["branches"][branch], batch.labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
    ours = dict(system.model.named_parameters())
    for k, p in model.named_parameters():
        torch.testing.assert_close(ours[k], p, rtol=0, atol=1e-5, msg=k)
    moved = {k: float((p.detach() - start[k]).abs().max()) for k, p in ours.items()}
    assert min(moved.values()) > 0 and max(v for k, v in moved.items() if k.startswith("msaf")) > 1e-3

def test_invalid_milestones_and_branch_optimisers_are_clear_config_errors():
    from mmfusion.engine.config import resolve_config
    from mmfusion.errors import ConfigError

    for sets, words in ((["train.lr_schedule=multistep"], "needs its milestone epochs"),
                        (["train.lr_schedule=multistep", "train.lr_milestones=[20, 5]"], "increasing"),
                        (["train.lr_schedule=multistep", "train.lr_milestones=[0, 5]"], "at least 1"),
                        (["train.lr_milestones=[5]"], "only to the multistep schedule"),
                        (["train.branch_optimizers=true"], "branch_losses: true")):
        with pytest.raises(ConfigError, match=words) as err:
            resolve_config(None, None, sets)
        assert err.value.key in ("lr_milestones", "branch_optimizers")
    # the milestones of the config file overridden alone: checked once every source is merged
    cfg = resolve_config("configs/msaf/ntu.yaml", None, ["train.lr_milestones=[10, 30]"])
    assert cfg.train.lr_milestones == [10, 30]
    with pytest.raises(ConfigError, match="branch per modality"):
        FusionSystem("lf_lstm_tiny", {}, {"text": 8, "vision": 4, "audio": 4}, 1, "regression",
                     train={"branch_losses": True, "branch_optimizers": True})


def test_multistep_schedule_with_one_optimiser_through_fit(tmp_path):
    import torch

    assert main(["fit", *SMALL, "--lr", "0.01", "--set", "train.lr_schedule=multistep", "--set",
                 "train.lr_milestones=[1, 2]", "--set", "train.lr_factor=0.5", "--out", str(tmp_path)]) == 0
    last = torch.load(tmp_path / "lf_lstm_tiny" / "synthetic" / "seed_1111" / "checkpoints" / "last.ckpt",
                      weights_only=True)
    (opt,) = last["optimizer_states"]
    assert [g["lr"] for g in opt["param_groups"]] == pytest.approx([0.01 * 0.5 * 0.5])  # halved before epochs 1, 2
    assert last["lr_schedulers"][0]["last_epoch"] == 3
