"""ReGLU: representation-guided LoRA initialisation and a representation-orthogonality loss.

Xiao, Mo, Chen, ..., G. Chen 2026 (ACL Findings), arXiv 2604.17396; official code ``sustech-nlp/ReGLU``
(``src/reglu/methods/reglu/rila.py``, ``core.py``).

RILA, per adapted linear layer W0 (d_out x d_in), once before training:

    h        = pooled output of W0 over an item's non-padding tokens (``pool``: sum, as the code, or mean), float64
    C_f, C_r = H^T H / N + eps I over ``rila_samples`` forget / retain items           (uncentred second moments)
    Delta    = (1 - beta) C_f - beta C_r;   Q = top-``rank`` eigenvectors of Delta      (forget-specific directions)
    B = Q,  A = Q^T W0,  W0 <- W0 - s B A   (s = lora_alpha / rank): the effective weight W0 - sBA + sBA is unchanged
    Q_r      = top-``rol_rank`` eigenvectors of C_r                                   (the retain subspace)

Training (only A and B): L = gamma * L_f + alpha * NLL(retain) + rol_weight * sum_layers ||B^T Q_r||_F^2, with L_f the
inverted hinge loss ``ihl`` (TOFU's) or gradient ascent ``gd`` (WMDP's). The ROL term pushes the adapter's output
directions (the column space of B) out of the retain representations; ``rol_targets`` is ``all`` or ``v_proj``.

The adapter is a forward hook adding s * B A x to the layer's output (parameters ``reglu_A``/``reglu_B`` on the
module, so checkpoints carry them); ``finish`` merges it into W and removes it, so the saved model is a plain one.
Differences from the code: pooling uses the attention mask (the code sums padding too); rank and ``rol_rank`` are capped
at the layer's dimensions (ROL with rol_rank >= d_out would just push B to 0: use a small rol_rank on tiny models);
``rila_samples`` takes the first N items (the code samples). Defaults (TOFU config): rank 32, lora_alpha 64, beta 0.7,
rol_weight 0.5, rol_rank 128, 256 RILA samples, eps 1e-4, every linear layer but the output head; lr 1e-4 there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.collate import item_batches
from ..logprobs import forward_logits, nll_mean
from .base import Method, register
from .losses import inverted_hinge_loss, rol_loss
from .shared import linear_modules


@torch.no_grad()
def pooled_outputs(model, tokenizer, items, modules: dict[str, torch.nn.Linear], pool: str = "sum",
                   batch_size: int = 16) -> dict[str, torch.Tensor]:
    """(N, d_out) float64 per module: each item's layer outputs pooled over its non-padding tokens."""
    device = next(model.parameters()).device
    got: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
    state = {}

    def hook(name):
        def fn(module, args, out):
            m = state["mask"].to(out.dtype).unsqueeze(-1)
            s = (out * m).sum(1).double()
            if pool == "mean":
                s = s / m.sum(1).double().clamp(min=1)
            got[name].append(s.cpu())
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        for b in item_batches(tokenizer, items, batch_size, device):
            state["mask"] = b["attention_mask"]
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: torch.cat(v) for n, v in got.items()}


def second_moment(h: torch.Tensor, eps: float) -> torch.Tensor:
    return h.T @ h / h.shape[0] + eps * torch.eye(h.shape[1], dtype=h.dtype)


def top_eigenvectors(m: torch.Tensor, k: int) -> torch.Tensor:
    """The eigenvectors of symmetric ``m`` for its ``k`` largest eigenvalues, largest first (columns)."""
    _, v = torch.linalg.eigh(m)
    return v[:, -k:].flip(-1)


def rila_init(w0: torch.Tensor, h_f: torch.Tensor, h_r: torch.Tensor, rank: int, beta: float, eps: float,
              rol_rank: int) -> dict[str, torch.Tensor]:
    """B, A, the retain basis Q_r and the subspaces' matrices, in float64."""
    c_f, c_r = second_moment(h_f, eps), second_moment(h_r, eps)
    q = top_eigenvectors((1 - beta) * c_f - beta * c_r, rank)
    return {"B": q, "A": q.T @ w0.double().cpu(), "Q_r": top_eigenvectors(c_r, rol_rank)}


@register("ReGLU")
@dataclass
class ReGLU(Method):
    rank: int = 32
    lora_alpha: float = 64.0
    rila_beta: float = 0.7
    rila_samples: int = 256
    rila_eps: float = 1e-4
    pool: str = "sum"
    rol_weight: float = 0.5
    rol_rank: int = 128
    rol_targets: str = "all"
    forget_loss: str = "ihl"
    gamma: float = 1.0
    alpha: float = 1.0
    target: str = ""

    uses_retain = True
    bounds = {"rank": (1, None), "lora_alpha": (0, None), "rila_beta": (0, 1), "rila_samples": (1, None),
              "rila_eps": (0, None), "rol_weight": (0, None), "rol_rank": (1, None), "gamma": (0, None),
              "alpha": (0, None)}
    choices = {"pool": ("sum", "mean"), "rol_targets": ("all", "v_proj"), "forget_loss": ("ihl", "gd")}

    def __post_init__(self):
        self.adapters: dict[str, dict] = {}

    def setup(self, model, tokenizer, data):
        modules = linear_modules(model, self.target, "ReGLU")
        n = self.rila_samples
        h_f = pooled_outputs(model, tokenizer, data["forget"][:n], modules, self.pool)
        h_r = pooled_outputs(model, tokenizer, data["retain"][:n], modules, self.pool)
        self._requires = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        self.adapters = {}
        for name, mod in modules.items():
            w = mod.weight
            d_out, d_in = w.shape
            init = rila_init(w, h_f[name], h_r[name], min(self.rank, d_out, d_in), self.rila_beta, self.rila_eps,
                             min(self.rol_rank, d_out))
            s = self.lora_alpha / init["B"].shape[1]
            with torch.no_grad():
                w.sub_((s * init["B"] @ init["A"]).to(w.device, w.dtype))
            mod.register_parameter("reglu_A", torch.nn.Parameter(init["A"].to(w.device, w.dtype)))
            mod.register_parameter("reglu_B", torch.nn.Parameter(init["B"].to(w.device, w.dtype)))
            handle = mod.register_forward_hook(self._adapter(s))
            self.adapters[name] = {"module": mod, "scale": s, "Q_r": init["Q_r"].float().to(w.device), "hook": handle}
        return data

    @staticmethod
    def _adapter(scale: float):
        def hook(module, args, out):
            return out + scale * F.linear(F.linear(args[0], module.reglu_A), module.reglu_B)
        return hook

    def rol(self) -> torch.Tensor:
        terms = [rol_loss(a["module"].reglu_B, a["Q_r"]) for n, a in self.adapters.items()
                 if self.rol_targets == "all" or n.endswith("v_proj")]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def loss(self, model, batch, ref):
        f, r = batch["forget"], batch["retain"]
        logits = forward_logits(model, f)
        lf = inverted_hinge_loss(logits, f["labels"]) if self.forget_loss == "ihl" else -nll_mean(logits, f["labels"])
        lr = nll_mean(forward_logits(model, r), r["labels"]) if self.alpha else lf * 0
        rol = self.rol().to(lf.device)
        return self.gamma * lf + self.alpha * lr + self.rol_weight * rol, {
            "forget_loss": lf.item(), "retain_loss": lr.item(), "rol_loss": rol.item()}

    @torch.no_grad()
    def finish(self, model):
        """Merge every adapter into its weight (W <- W + s B A) and remove it."""
        for a in self.adapters.values():
            mod = a["module"]
            mod.weight.add_(a["scale"] * mod.reglu_B @ mod.reglu_A)
            a["hook"].remove()
            del mod._parameters["reglu_A"], mod._parameters["reglu_B"]
        self.adapters = {}
        for n, p in model.named_parameters():
            p.requires_grad_(self._requires.get(n, True))
