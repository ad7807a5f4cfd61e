"""MEA: modality-exclusive and -agnostic representations for asynchronous multimodal sequences.

Yang, Li, Qu, Yang, Zhai, Wang, Zhang, "Asynchronous Multimodal Video Sequence Fusion via Learning
Modality-Exclusive and -Agnostic Representations", arXiv 2407.04955 (IEEE TCSVT). No official code exists; this
follows our reading in docs/design/mea.md ("§" below).

Figure 1, box by box (shape legend: B batch, T_m frames of modality m, D = ``dim``, d_h = ``rep_dim``, M = 3):

    X_m (B, T_m, d_m)
     └─ front end: Conv1d → positions → Bi-LSTM      ModalityFrontEnd              Z_m (B, T_m, D)        §1
         ├─ exclusive branch: M PSA layers,          PredictiveSelfAttentionLayer  Z^e_m (B, T_m, D)      §2
         │    each followed by WAL                   WeightedAttentionLayer        ψ (B, M) per layer
         └─ agnostic branch: N HCA layers of MRUs    HierarchicalCrossModalAttention Z^a_m (B, T_m, D)    §3
     pool (masked mean) → exclusive encoders E_m / shared agnostic encoder E_a      h^e_m, h^a_m (B, d_h)   §4
     L_dis = mean_m HSIC(h^e_m, h^a_m)                                                                      §4
     double discriminator: D_m on h^e_m (L_exc) and on GRL(h^a_m) weighted by ω from D_i (L_agn)           §4
     Decoupled Graph Fusion over {h^e_m} and over {h^a_m} → concat → head                                  §4
     L = L_task + α·L_dis + β·(L_agn + L_exc)                                                               §5

Deviations (each in docs/design/mea.md): WAL scores masked-mean-pooled sequences instead of a flattened (T·D)² matrix
(§2); PSA mixes logits by default, Eq. 2's literal form is ``mixing="literal"`` (§2); sources of every HCA layer
are the front-end outputs (§3); dropouts and clipping take MulT's values (§6). Everything is masked.
Two options beyond the paper: ``frontend="conv"`` drops the front end's Bi-LSTM (§1), which on the built-in benchmark
delays MEA's learning of cross-modal cue matching after Table I's 3-frame convolution
(docs/results/mea_synthetic_scale.md), and ``frontend="conv_lstm_residual"`` keeps it with a residual connection
around it; the default is the paper's. With ``kernels`` of 1 — the value the benchmark's configs use, Table I having
no column for it — the paper's front end learns the matching as early (docs/results/mea_synthetic_40k.md).
The decoupling has three more, all off by default (§4): a ramp of the reversal coefficient (``grl_schedule``), extra
updates of D_m per step (``disc_steps``) and ``agnostic_norm="modality"``, which standardises each modality's
agnostic codes over the batch so that no per-modality offset is left for D_m to read
(docs/results/mea_small_data.md).

A modality missing from a clip (no real frame; the mask all False) still gets a prediction, always finite: its
stream is zero, WAL gives it weight 0, it is no node of either fusion graph (the clip is fused as the graph of its
present modalities) and it enters no loss term (HSIC runs over the clips that have the modality, the
discriminators' cross-entropies over the present (clip, modality) pairs). What the other modalities carry decides
the prediction; the missing one's feature values are never read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion.batch import MODALITIES, check_modalities
from mmfusion.config import build_model_config, check_bounds
from mmfusion.models.registry import register_model
from mmfusion.modules.attention import Attention, check_attention
from mmfusion.modules.discriminators import (
    ImportanceDiscriminator,
    ModalityDiscriminator,
    grad_reverse,
    refit_discriminator,
)
from mmfusion.modules.dropout import Dropout
from mmfusion.modules.frontend import ModalityFrontEnd
from mmfusion.modules.graph_fusion import DecoupledGraphFusion
from mmfusion.modules.hca import HierarchicalCrossModalAttention
from mmfusion.modules.losses import hsic, orthogonality
from mmfusion.modules.normalization import ModalityStandardizer
from mmfusion.modules.pooling import MaskedPooling
from mmfusion.modules.psa import Factors, PredictiveSelfAttentionLayer
from mmfusion.modules.wal import WeightedAttentionLayer


@dataclass
class MEAConfig:
    """Defaults are the paper's Table I (MOSI column); the rest follows docs/design/mea.md §6."""

    dim: int = 40  # d: front-end and attention width
    rep_dim: int = 64  # d_h: width of the decoupled codes
    num_heads: int = 8  # K
    psa_layers: int = 3  # M
    hca_layers: int = 2  # N
    kernels: dict[str, int] = field(default_factory=lambda: {"text": 3, "vision": 3, "audio": 3})
    # §1; not the paper's: "conv" leaves out the Bi-LSTM, "conv_lstm_residual" adds its input around it
    frontend: Literal["conv_lstm", "conv", "conv_lstm_residual"] = "conv_lstm"
    mu: float = 0.25  # weight of the predicted map in PSA
    mixing: Literal["logits", "literal"] = "logits"  # §2: default mixes logits; "literal" is Eq. 2
    alpha: float = 0.02  # weight of L_dis
    beta: float = 0.03  # weight of L_agn + L_exc
    grl_lambda: float = 1.0  # gradient-reversal coefficient λ (the paper's value: 1, held constant)
    # §4: "constant" keeps λ = grl_lambda throughout (the paper); "dann" ramps it from 0 to grl_lambda as
    # domain-adversarial training does, λ_p = grl_lambda·(2/(1 + exp(-10 p)) - 1) at training progress p ∈ [0, 1]
    grl_schedule: Literal["constant", "dann"] = "constant"
    # §4: updates of the modality discriminator D_m per training step. 1 (the paper's joint training: one Adam step
    # of every weight) lets the agnostic encoder fool a lagging D_m instead of mixing the codes; k > 1 first gives D_m
    # k - 1 updates of its own (Adam, learning rate ``disc_lr``) on the batch's detached codes, keeping it near its
    # optimum as gradient reversal's argument assumes. Several processes average these updates' gradients.
    disc_steps: int = 1
    disc_lr: float = 1e-3  # learning rate of those extra updates (the paper's Adam learning rate, Table I)
    # §4, not the paper's: "modality" standardises each modality's agnostic codes over the batch (in evaluation:
    # statistics of evaluation-mode codes, see ``calibrate``) before D_m and the fusion graph read them, taking away
    # the per-modality offset that the modality-specific front ends and MRUs give the shared encoder's input; "none"
    # (the paper) leaves them
    agnostic_norm: Literal["none", "modality"] = "none"
    pooling: Literal["mean", "last", "attention"] = "mean"
    hsic_normalize: bool = False  # L2-normalise codes before HSIC
    embed_dropout: float = 0.25  # after the front-end conv + positions (MulT's embedding dropout)
    attn_dropout: float = 0.0  # on attention maps; MulT uses 0.1-0.25, but maps are the largest tensors and a CPU
    # spends more time drawing their random masks than attending (32x8x500x500 at MOSI shapes), so it is opt-in
    res_dropout: float = 0.1
    out_dropout: float = 0.1
    # --- Table V ablations, each one switch (see ABLATIONS) ---
    use_exclusive: bool = True  # w/o exclusive branch
    use_agnostic: bool = True  # w/o agnostic branch
    use_psa: bool = True  # w/o PSA: exclusive encoders read Z_m directly
    use_prediction: bool = True  # w/o prediction chain: µ = 0, plain self-attention
    use_wal: bool = True  # w/o WAL
    use_hca: bool = True  # w/o HCA: the agnostic encoder reads Z_m directly
    use_mixed: bool = True  # w/o mixed-grained MRU
    use_coarse: bool = True  # w/o coarse-grained MRU
    use_fine: bool = True  # w/o fine-grained MRUs
    disparity: Literal["hsic", "orthogonal", "none"] = "hsic"  # w/o L_dis; L_dis -> orthogonality loss
    adversarial: bool = True  # w/o adversarial losses (both discriminators, L_agn and L_exc)
    use_omega: bool = True  # w/o ω: L_agn unweighted, no importance discriminator
    fusion: Literal["graph", "concat", "add", "multiply"] = "graph"  # DGF -> concatenation / addition / product
    # how attention runs (PSA and HCA): the same numbers up to float rounding; see mmfusion.modules.attention
    attention: Attention = "auto"

    ABLATIONS: ClassVar[dict[str, dict[str, Any]]] = {
        "no_dis": {"disparity": "none"},
        "dis_orthogonal": {"disparity": "orthogonal"},
        "no_adversarial": {"adversarial": False},
        "no_omega": {"use_omega": False},
        "no_exclusive": {"use_exclusive": False},
        "no_agnostic": {"use_agnostic": False},
        "no_psa": {"use_psa": False},
        "no_prediction": {"use_prediction": False},
        "no_wal": {"use_wal": False},
        "no_hca": {"use_hca": False},
        "no_mixed": {"use_mixed": False},
        "no_coarse": {"use_coarse": False},
        "no_fine": {"use_fine": False},
        "dgf_concat": {"fusion": "concat"},
        "dgf_add": {"fusion": "add"},
        "dgf_multiply": {"fusion": "multiply"},
    }
    ABLATION_NOTES: ClassVar[dict[str, str]] = {  # the paper's Table V row each switch stands for
        "no_dis": "w/o L_dis: no disparity constraint between exclusive and agnostic codes",
        "dis_orthogonal": "L_dis as DSN's orthogonality loss ||H_e^T H_a||_F^2 instead of HSIC (normalised as DSN's "
                          "code does: codes centred and L2-normalised per sample, mean over the entries)",
        "no_adversarial": "w/o the double discriminator: no L_exc, no L_agn, no importance discriminator",
        "no_omega": "w/o the regulatory weight ω: L_agn unweighted, no importance discriminator",
        "no_exclusive": "w/o the exclusive branch (PSA, WAL, exclusive encoders and their graph)",
        "no_agnostic": "w/o the agnostic branch (HCA, agnostic encoder and its graph)",
        "no_psa": "w/o PSA (and the WAL after it): the exclusive encoders read the front-end outputs Z_m",
        "no_prediction": "w/o the prediction chain: µ = 0, plain self-attention in every PSA layer",
        "no_wal": "w/o the Weighted Attention Layers",
        "no_hca": "w/o HCA: the agnostic encoder reads the front-end outputs Z_m",
        "no_mixed": "w/o the mixed-grained MRU of every HCA layer",
        "no_coarse": "w/o the coarse-grained MRU of every HCA layer",
        "no_fine": "w/o the two fine-grained MRUs of every HCA layer",
        "dgf_concat": "DGF replaced by concatenating the modality codes",
        "dgf_add": "DGF replaced by adding the modality codes",
        "dgf_multiply": "DGF replaced by the element-wise product of the modality codes",
    }

    def validate(self, source: str | None = None) -> None:
        from mmfusion.errors import ConfigError

        check_bounds(self, source=source,
                     at_least={"dim": 2, "rep_dim": 1, "num_heads": 1, "psa_layers": 1, "hca_layers": 1, "alpha": 0,
                               "beta": 0, "grl_lambda": 0, "disc_steps": 1, "disc_lr": 0,
                               "embed_dropout": 0, "attn_dropout": 0, "res_dropout": 0,
                               "out_dropout": 0},
                     below={"embed_dropout": 1, "attn_dropout": 1, "res_dropout": 1, "out_dropout": 1})
        for m, k in self.kernels.items():  # (entries and their types are checked where the table is set)
            if k < 1 or k % 2 == 0:
                raise ConfigError("the front end's convolution keeps the length ('same' padding)", source=source,
                                  key=f"kernels.{m}", expected="an odd positive int", actual=k)
        if self.dim % self.num_heads or self.dim % 2:
            raise ConfigError("dim must be even and divisible by num_heads", source=source, key="dim",
                              expected=f"a multiple of {self.num_heads} and of 2", actual=self.dim)
        if not (self.use_exclusive or self.use_agnostic):
            raise ConfigError("at least one branch must stay on", source=source, key="use_exclusive",
                              expected="use_exclusive or use_agnostic true", actual=False)
        if not 0.0 <= self.mu <= 1.0:
            raise ConfigError("out of range", source=source, key="mu", expected="0 <= mu <= 1", actual=self.mu)
        check_attention(self.attention, head_dim=self.dim // self.num_heads, dropout=self.attn_dropout, source=source)


class MEA(nn.Module):
    """MEA (see the module docstring). forward(features {m: (B, T_m, d_m)}, masks {m: (B, T_m)}) ->
    {"pred": (B, output_dim), "losses": {name: weighted scalar}, "inspect": {...}}."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: MEAConfig) -> None:
        super().__init__()
        c = self.config = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        M = len(self.modalities)
        self.frontends = nn.ModuleDict({
            m: ModalityFrontEnd(feature_dims[m], c.dim, c.kernels.get(m, 3), c.embed_dropout,
                                recurrent=c.frontend != "conv", residual=c.frontend == "conv_lstm_residual")
            for m in self.modalities
        })
        drop = {"attn_dropout": c.attn_dropout, "res_dropout": c.res_dropout, "attention": c.attention}
        if c.use_exclusive and c.use_psa:
            self.psa = nn.ModuleDict({m: nn.ModuleList([
                PredictiveSelfAttentionLayer(c.dim, c.num_heads, predict=c.use_prediction and l > 0,
                                             mu=c.mu if c.use_prediction else 0.0, mixing=c.mixing, **drop)
                for l in range(c.psa_layers)]) for m in self.modalities})
            self.psa_norms = nn.ModuleDict({m: nn.LayerNorm(c.dim) for m in self.modalities})
            if c.use_wal:
                self.wal = nn.ModuleList([WeightedAttentionLayer(self.modalities, c.dim, c.rep_dim)
                                          for _ in range(c.psa_layers)])
        if c.use_agnostic and c.use_hca:
            self.hca = HierarchicalCrossModalAttention(self.modalities, c.dim, c.num_heads, c.hca_layers,
                                                       mixed=c.use_mixed, coarse=c.use_coarse, fine=c.use_fine,
                                                       **drop)
        self.pool = MaskedPooling(c.dim, c.pooling)

        def mlp() -> nn.Sequential:
            return nn.Sequential(nn.Linear(c.dim, c.rep_dim), nn.GELU(), nn.Linear(c.rep_dim, c.rep_dim))

        branches = []
        if c.use_exclusive:
            self.exclusive_encoders = nn.ModuleDict({m: mlp() for m in self.modalities})
            branches.append("exclusive")
        if c.use_agnostic:
            self.agnostic_encoder = mlp()
            if c.agnostic_norm == "modality":
                self.agnostic_standardizer = ModalityStandardizer(M, c.rep_dim)
            branches.append("agnostic")
        if c.adversarial:
            self.modality_discriminator = ModalityDiscriminator(c.rep_dim, M)
            if c.use_agnostic and c.use_omega:
                self.importance_discriminator = ImportanceDiscriminator(c.rep_dim, M)
        self._disc_optimizer: torch.optim.Optimizer | None = None  # D_m's own updates (disc_steps > 1), not saved
        self.training_progress = 1.0  # p ∈ [0, 1] for the λ ramp, set by the training loop (1: the full λ)
        self.dgf = DecoupledGraphFusion(c.rep_dim, branches, c.fusion)
        fused = self.dgf.out_dim(c.rep_dim, M)
        self.head = nn.Sequential(nn.Linear(fused, c.rep_dim), nn.GELU(), Dropout(c.out_dropout),
                                  nn.Linear(c.rep_dim, output_dim))

    # ---------------------------------------------------------------------------------------------------------
    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        return self._forward(features, masks, inspect=False)

    @torch.no_grad()
    def explain(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        """Forward pass that also returns every attention map (HCA through the eager path)."""
        return self._forward(features, masks, inspect=True)

    def _forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor], inspect: bool) -> dict[str, Any]:
        check_modalities(features, self.modalities, "mea")
        masks = {m: masks[m] for m in self.modalities}
        z = {m: self.frontends[m](features[m], masks[m]) for m in self.modalities}  # Z_m (B, T_m, D)
        info: dict[str, Any] = {}
        codes: dict[str, Tensor] = {}
        present = torch.stack([masks[m].any(1) for m in self.modalities], 1)  # (B, M): modality has a real frame
        if self.config.use_exclusive:
            ze = self.exclusive_branch(z, masks, info, inspect)  # Z^e_m
            codes["exclusive"] = torch.stack(
                [self.exclusive_encoders[m](self.pool(ze[m], masks[m])) for m in self.modalities], 1)  # (B, M, d_h)
        if self.config.use_agnostic:
            za = self.agnostic_branch(z, masks, info, inspect)  # Z^a_m
            codes["agnostic"] = torch.stack(
                [self.agnostic_encoder(self.pool(za[m], masks[m])) for m in self.modalities], 1)  # (B, M, d_h)
            if self.config.agnostic_norm == "modality":
                codes["agnostic"] = self.agnostic_standardizer(codes["agnostic"], present)
        monitor: dict[str, Tensor] = {}
        losses = self.decoupling_losses(codes, present, monitor)
        fused, xi = self.dgf(codes, present)  # (B, branches·d_h)
        info["dgf"] = xi
        info["codes"] = codes
        return {"pred": self.head(fused), "losses": losses, "monitor": monitor, "inspect": info}

    @torch.no_grad()
    def calibrate(self, batches: Iterable[tuple[Mapping[str, Tensor], Mapping[str, Tensor]]]) -> None:
        """Re-estimate what evaluation needs from training data, in evaluation mode (a no-op unless
        ``agnostic_norm="modality"``): the per-modality statistics of the agnostic codes, from (features, masks)
        ``batches``. The training loop calls it before each validation; the mode is restored."""
        if self.config.agnostic_norm != "modality" or not self.config.use_agnostic:
            return
        was_training = self.training
        self.eval()

        def run() -> None:
            for features, masks in batches:
                self(features, masks)

        try:
            self.agnostic_standardizer.estimate(run)
        finally:
            self.train(was_training)

    def grl_coefficient(self) -> float:
        """λ at the current training progress (``grl_schedule``; docs/design/mea.md §4)."""
        c = self.config
        if c.grl_schedule == "dann":
            p = min(max(float(self.training_progress), 0.0), 1.0)
            return c.grl_lambda * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
        return c.grl_lambda

    # ---------------------------------------------------------------------------------------------------------
    def exclusive_branch(self, z: dict[str, Tensor], masks: dict[str, Tensor], info: dict[str, Any],
                         inspect: bool = False) -> dict[str, Tensor]:
        """M layers of PSA per modality, each followed by WAL across modalities (docs/design/mea.md §2).

        The stack is pre-LN, so its final LayerNorm runs before the last WAL: LN(ψ·h) = LN(h) would divide that
        layer's ψ out, and the exclusive encoders read ψ_M · LN(h). Earlier layers' ψ scale the residual stream
        against the next layer's updates (the next layer's pre-LN sees ψ·h and ψ cancels there, not in the sum).
        """
        if not self.config.use_psa:
            return z
        h: dict[str, Tensor] = dict(z)
        prev: dict[str, Factors | None] = {m: None for m in self.modalities}  # each layer's logits, as factors
        maps: dict[str, list[Tensor]] = {m: [] for m in self.modalities}
        vanilla: dict[str, list[Tensor]] = {m: [] for m in self.modalities}
        psis = []
        last = self.config.psa_layers - 1
        for l in range(self.config.psa_layers):
            for m in self.modalities:
                h[m], prev[m], layer_maps = self.psa[m][l](h[m], masks[m], prev[m], need_maps=inspect)
                if inspect:
                    maps[m].append(layer_maps["psa"])
                    vanilla[m].append(layer_maps["vanilla"])
            if l == last:  # the stack's final norm comes before the last WAL, which would otherwise cancel in it
                h = {m: self.psa_norms[m](h[m]) * masks[m][..., None].to(h[m].dtype) for m in self.modalities}
            if self.config.use_wal:
                h, psi = self.wal[l](h, masks)
                psis.append(psi)
        if inspect:
            info["psa"], info["psa_vanilla"] = maps, vanilla
        if psis:
            info["wal"] = torch.stack(psis, 1)  # (B, layers, M)
        return h

    def agnostic_branch(self, z: dict[str, Tensor], masks: dict[str, Tensor], info: dict[str, Any],
                        inspect: bool) -> dict[str, Tensor]:
        """N layers of hierarchical cross-modal attention (docs/design/mea.md §3)."""
        if not self.config.use_hca:
            return z
        za, maps = self.hca(z, masks, need_weights=inspect)
        if inspect:
            info["hca"] = maps
        return za

    def decoupling_losses(self, codes: dict[str, Tensor], present: Tensor | None = None,
                          monitor: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """α·L_dis, β·L_exc, β·L_agn (ω-weighted, through gradient reversal) and D_i's own loss (§4-5).

        codes {"exclusive"/"agnostic": (B, M, d_h)}; present (B, M) bool, None for all present. A modality missing
        from a clip contributes no code to any term: HSIC (or the orthogonality loss) of modality m runs over the
        clips that have m, and the discriminators' cross-entropies average over the present (clip, modality) pairs.
        ``monitor`` (if given) receives detached diagnostics over the same pairs: D_m's accuracy on the exclusive and
        on the agnostic codes (chance 1/M on agnostic codes that carry no modality), the mean ω and the λ in use.
        """
        c = self.config
        losses: dict[str, Tensor] = {}
        he, ha = codes.get("exclusive"), codes.get("agnostic")
        M = len(self.modalities)
        first = next(iter(codes.values()))
        B = first.shape[0]
        if present is None:
            present = torch.ones(B, M, dtype=torch.bool, device=first.device)
        # masks, not selection: a missing modality's rows weigh 0 (no data-dependent shape or branch to compile)
        if he is not None and ha is not None and c.disparity != "none":
            fn = (lambda x, y, keep: hsic(x, y, c.hsic_normalize, keep)) if c.disparity == "hsic" else orthogonality
            losses["dis"] = c.alpha * sum(fn(he[:, i], ha[:, i], present[:, i]) for i in range(M)) / M
        if not c.adversarial:
            return losses
        target = torch.arange(M, device=first.device).repeat(B)  # (B·M,) labels L=0, V=1, A=2
        weight = present.reshape(B * M).to(first.dtype)
        count = weight.sum().clamp_min(1.0)

        def mean(per_pair: Tensor) -> Tensor:  # over present (clip, modality) pairs
            return (per_pair * weight).sum() / count

        if c.disc_steps > 1 and self.training and torch.is_grad_enabled():
            self.refit_modality_discriminator(codes, target, weight)

        if he is not None:
            logits_e = self.modality_discriminator(he.reshape(B * M, -1))
            losses["exc"] = c.beta * M * mean(F.cross_entropy(logits_e, target, reduction="none"))
            if monitor is not None:
                monitor["disc_acc_exclusive"] = mean((logits_e.detach().argmax(-1) == target).to(first.dtype))
        if ha is not None:
            flat = ha.reshape(B * M, -1)
            lam = self.grl_coefficient()
            logits_a = self.modality_discriminator(grad_reverse(flat, lam))
            ce = F.cross_entropy(logits_a, target, reduction="none")
            if monitor is not None:
                monitor["disc_acc_agnostic"] = mean((logits_a.detach().argmax(-1) == target).to(first.dtype))
                monitor["grl_lambda"] = torch.tensor(lam)
            if c.use_omega:
                imp_logits = self.importance_discriminator(flat.detach())
                losses["importance"] = mean(F.cross_entropy(imp_logits, target, reduction="none"))
                omega = 1.0 - imp_logits.softmax(-1).gather(1, target[:, None]).squeeze(1)  # ω_m, detached input
                ce = ce * omega.detach()
                if monitor is not None:
                    monitor["omega"] = mean(omega.detach())
            losses["agn"] = c.beta * M * mean(ce)  # all present: Σ over modalities of the per-modality mean
        return losses


    def refit_modality_discriminator(self, codes: dict[str, Tensor], target: Tensor, weight: Tensor) -> None:
        """``disc_steps`` - 1 updates of D_m alone on this batch's detached codes, exclusive and agnostic, with the
        labels and present-pair weights of L_exc and L_agn (docs/design/mea.md §4). Under several processes the
        updates average their gradients over them (:func:`refit_discriminator`), so D_m's replicas stay equal."""
        if self._disc_optimizer is None:
            self._disc_optimizer = torch.optim.Adam(self.modality_discriminator.parameters(), lr=self.config.disc_lr)
        flat = [c.reshape(target.shape[0], -1) for c in codes.values()]
        refit_discriminator(self.modality_discriminator, self._disc_optimizer, torch.cat(flat),
                            target.repeat(len(flat)), self.config.disc_steps - 1, weight.repeat(len(flat)))


def _build(name: str, feature_dims: dict[str, int], output_dim: int, defaults: dict[str, Any],
           overrides: dict[str, Any]) -> MEA:
    return MEA(feature_dims, output_dim, build_model_config(MEAConfig, {**defaults, **overrides}, source=name))


@register_model(MEAConfig)
def mea(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MEA:
    """MEA with the paper's Table I MOSI values (configs/mea/*.yaml hold the other datasets')."""
    return _build("mea", feature_dims, output_dim, {}, overrides)


@register_model(MEAConfig)
def mea_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MEA:
    """A small MEA for tests: every module present, narrow widths."""
    return _build("mea_tiny", feature_dims, output_dim,
                  {"dim": 8, "rep_dim": 8, "num_heads": 2, "psa_layers": 2, "hca_layers": 1}, overrides)
