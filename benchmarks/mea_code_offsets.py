"""What separates a trained MEA's agnostic codes by modality, and how large the reversed gradient is.

    .venv/bin/python benchmarks/mea_code_offsets.py CKPT [--n-train 1500] [--batches 10] [--out FILE.json]

On the checkpoint's agnostic codes (and the pooled HCA outputs the shared agnostic encoder reads), training clips
(first 1,000) against validation clips: a fresh logistic-regression probe on the codes, on their directions alone
(L2-normalised), on their norms alone; the distances between the modalities' mean codes next to the spread within a
modality. Then, on ``--batches`` training batches in training mode, the gradient norm over every weight but the
discriminators' of the task loss, of β·L_agn as trained (ω-weighted) and of β·L_agn without ω, with the mean ω and
D_m's accuracy on those batches (docs/design/mea.md §4; docs/results/mea_small_data.md).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from mmfusion.data import FusionDataset, load_data
from mmfusion.engine.checkpoints import load_system
from mmfusion.engine.diagnostics import probe_accuracy
from mmfusion.io import atomic_write_json


def codes_and_inputs(model, ds: FusionDataset, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Agnostic codes (n, M, d_h) and the pooled HCA outputs the agnostic encoder reads (n, M, D)."""
    inputs: list[np.ndarray] = []
    hook = model.agnostic_encoder.register_forward_hook(lambda mod, i, o: inputs.append(i[0].detach().numpy()))
    codes = []
    model.eval()
    with torch.no_grad():
        for s in range(0, n, 64):
            b = ds.collate(range(s, min(n, s + 64)))
            codes.append(model(b.features, b.masks)["inspect"]["codes"]["agnostic"].numpy())
    hook.remove()
    M = len(model.modalities)
    pooled = np.concatenate([np.stack(inputs[i:i + M], 1) for i in range(0, len(inputs), M)])
    return np.concatenate(codes), pooled


def offsets(train: np.ndarray, valid: np.ndarray) -> dict[str, object]:
    norm_t, norm_v = np.linalg.norm(train, axis=-1), np.linalg.norm(valid, axis=-1)
    mu = valid.mean(0)
    return {"probe": probe_accuracy(train, valid),
            "probe_direction_only": probe_accuracy(train / norm_t[..., None], valid / norm_v[..., None]),
            "probe_norm_only": probe_accuracy(norm_t[..., None], norm_v[..., None]),
            "mean_distance_LV_LA_VA": [float(np.linalg.norm(mu[a] - mu[b])) for a, b in ((0, 1), (0, 2), (1, 2))],
            "within_std_per_dim": valid.std(0).mean(1).tolist()}


def gradients(model, ds: FusionDataset, batches: int, batch_size: int = 32) -> dict[str, float]:
    model.train()
    params = [p for n, p in model.named_parameters()
              if not n.startswith(("modality_discriminator", "importance_discriminator"))]
    rows: dict[str, list[float]] = {"task": [], "agn": [], "agn_without_omega": [], "omega": [], "disc_acc": []}

    def norm(loss: torch.Tensor) -> float:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))

    for i in range(batches):
        b = ds.collate(range(i * batch_size, (i + 1) * batch_size))
        out = model(b.features, b.masks)
        ha = out["inspect"]["codes"]["agnostic"]
        B, M = ha.shape[:2]
        plain = F.cross_entropy(model.modality_discriminator(ha.reshape(B * M, -1)), torch.arange(M).repeat(B))
        rows["task"].append(norm(F.mse_loss(out["pred"].reshape(-1), b.labels.float())))
        rows["agn"].append(norm(out["losses"]["agn"]))
        rows["agn_without_omega"].append(norm(model.config.beta * M * plain))
        rows["omega"].append(float(out["monitor"]["omega"]))
        rows["disc_acc"].append(float(out["monitor"]["disc_acc_agnostic"]))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", help="a trained MEA checkpoint (regression, built-in benchmark)")
    ap.add_argument("--n-train", type=int, default=1500, help="the benchmark draw's training size (default 1500)")
    ap.add_argument("--batches", type=int, default=10, help="training batches for the gradient norms (default 10)")
    ap.add_argument("--out", help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_system(args.ckpt).model
    bundle = load_data("synthetic", {"n_train": args.n_train}, source="data_args")
    train_ds = FusionDataset(bundle.split("train", labeled=True))
    valid_ds = FusionDataset(bundle.split("valid", labeled=True))
    (ct, pt), (cv, pv) = codes_and_inputs(model, train_ds, 1000), codes_and_inputs(model, valid_ds, len(valid_ds))
    result = {"codes": offsets(ct, cv), "encoder_inputs": offsets(pt, pv), "gradients": gradients(model, train_ds,
                                                                                                  args.batches)}
    print(json.dumps(result, indent=1))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
