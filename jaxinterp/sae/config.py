"""What an SAE is and how it trains: one frozen `SAEConfig` per member of a sweep, checked where it is built.

Fields split in two: *static* ones fix the compiled program (architecture, widths, batch, schedule lengths), so
members that share them train in one jitted step; *traced* ones (`TRACED`: k, the sparsity coefficient, the
learning rate, the seed) differ per member inside that step.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from jaxinterp.errors import JaxinterpError

__all__ = ["ARCHITECTURES", "BATCH_TOPK", "TRACED", "SAEConfig", "parse_sweep"]

ARCHITECTURES = ("relu", "topk", "batchtopk", "matryoshka", "jumprelu")
"""relu: ReLU with an L1 penalty weighted by decoder norms; topk: the k largest per sample; batchtopk: the k x batch
largest over a batch (a learned global threshold at inference, exported as JumpReLU); matryoshka: BatchTopK whose
loss also asks nested prefixes of the dictionary to reconstruct alone (Bussmann et al. 2025), so the first latents
learn general features and later ones refine them; jumprelu: a learned per-latent threshold trained with a
straight-through estimator and an L0 penalty."""

BATCH_TOPK = ("batchtopk", "matryoshka")
"""The architectures that keep the k x batch largest in training and a global threshold at inference."""

TRACED = ("k", "sparsity_coef", "lr", "seed")
"""Fields that may differ between members of one compiled sweep group."""


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """One sparse autoencoder on ``d_in``-wide activations and how to train it.

    ``k`` is the number of active latents per sample for topk/batchtopk/matryoshka, and the target L0 for jumprelu
    when ``target_l0`` is set (the loss is then ``sparsity_coef * (L0 / k - 1)^2``, dictionary_learning's form).
    ``sparsity_coef`` is the L1 coefficient (relu) or the L0 coefficient (jumprelu); the k-based ones ignore it.
    ``dead_samples``: a latent that has not fired for this many samples is dead (AuxK revives it); counting samples
    rather than steps makes it mean the same at any batch size.
    """

    d_in: int
    width: int = 256
    arch: str = "topk"
    k: int = 8
    sparsity_coef: float = 1.0
    lr: float = 1e-3
    seed: int = 0
    steps: int = 3000
    batch_size: int = 2048
    warmup_steps: int = 200
    decay_fraction: float = 0.2  # the lr falls linearly to zero over this last part of training
    sparsity_warmup_steps: int = 500  # the L1 / L0 coefficient ramps up linearly over these
    max_grad_norm: float = 1.0
    aux_k: int | None = None  # None: d_in // 2 (openai/sparse_autoencoder)
    aux_coef: float = 1 / 32
    dead_samples: int = 1_000_000
    target_l0: bool = True  # jumprelu: penalize the distance to L0 = k rather than L0 itself
    bandwidth: float = 1e-3  # jumprelu: width of the straight-through estimator's rectangle kernel
    threshold_init: float = 1e-3  # jumprelu: the initial threshold on (normalized) pre-activations
    threshold_decay: float = 0.999  # batchtopk, matryoshka: EMA decay of the inference threshold
    # matryoshka: nested dictionaries, the first width / 2^(levels-1) latents, doubling. 3 by measurement: on the
    # shipped agent's last stage (k 8, width 256) the best latents' mean held-out F1 over the object classes was
    # 0.34 at 3 levels, 0.28 at 4, 0.21 at 5 (benchmarks/RESULTS.md).
    matryoshka_levels: int = 3

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise JaxinterpError(
                f"unknown SAE architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        for name in ("d_in", "width", "k", "steps", "batch_size", "matryoshka_levels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise JaxinterpError(f"SAE {name} (={value!r}) must be an int >= 1")
        if self.k > self.width:
            raise JaxinterpError(
                f"SAE k (={self.k}) must be <= width (={self.width}): k latents fire per sample"
            )
        if not 0 <= self.seed < 2**31:
            raise JaxinterpError(f"SAE seed (={self.seed}) must be in [0, 2**31)")
        for name in ("sparsity_coef", "lr", "max_grad_norm", "aux_coef", "bandwidth", "threshold_init"):
            if not getattr(self, name) >= 0:
                raise JaxinterpError(f"SAE {name} (={getattr(self, name)!r}) must be >= 0")
        if not 0 <= self.decay_fraction <= 1:
            raise JaxinterpError(f"SAE decay_fraction (={self.decay_fraction}) must be in [0, 1]")
        if self.arch == "matryoshka" and self.width < 2 ** (self.matryoshka_levels - 1):
            raise JaxinterpError(
                f"SAE matryoshka_levels (={self.matryoshka_levels}) halve the width {self.matryoshka_levels - 1}"
                f" times: width (={self.width}) must be >= {2 ** (self.matryoshka_levels - 1)}"
            )
        if self.aux_k is not None and not 1 <= self.aux_k <= self.width:
            raise JaxinterpError(f"SAE aux_k (={self.aux_k}) must be in [1, width={self.width}]")

    @property
    def k_aux(self) -> int:
        return min(self.aux_k or max(1, self.d_in // 2), self.width)

    @property
    def prefixes(self) -> tuple[int, ...]:
        """matryoshka: the sizes of the nested dictionaries, smallest first, the last the whole width."""
        return tuple(self.width >> (self.matryoshka_levels - 1 - i) for i in range(self.matryoshka_levels))

    def static(self) -> tuple:
        """The fields that fix the compiled program: members with equal ``static()`` share one jitted step."""
        return tuple(
            (f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in TRACED
        )

    def name(self) -> str:
        """A short directory name for this member, e.g. ``topk-w256-k8-lr0.001-s0`` (``-m4``: matryoshka levels)."""
        coef = "" if self.arch in ("topk", *BATCH_TOPK) else f"-c{self.sparsity_coef:g}"
        levels = f"-m{self.matryoshka_levels}" if self.arch == "matryoshka" else ""
        return f"{self.arch}-w{self.width}-k{self.k}{levels}{coef}-lr{self.lr:g}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> SAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise JaxinterpError(f"unknown SAE settings {unknown}; valid ones: {', '.join(sorted(known))}")
        return cls(**fields)


def parse_sweep(text: str | Sequence[str] | None) -> list[dict[str, Any]]:
    """``"k=4,8,16 arch=topk,jumprelu seed=0,1"`` -> the grid's points as dicts (the product over fields)."""
    items = text.split() if isinstance(text, str) else list(text or [])
    axes: dict[str, list[Any]] = {}
    known = {f.name: f for f in dataclasses.fields(SAEConfig)}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise JaxinterpError(f"cannot read sweep item {item!r}; write field=v1,v2 (e.g. k=4,8,16)")
        if name not in known or name == "d_in":
            raise JaxinterpError(
                f"unknown sweep field {name!r}; valid ones: {', '.join(sorted(set(known) - {'d_in'}))}"
            )
        axes[name] = [_convert(known[name], name, v) for v in values.split(",")]
    return [dict(zip(axes, point, strict=True)) for point in itertools.product(*axes.values())]


def _convert(field: dataclasses.Field, name: str, text: str) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("bool"):
            return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
    except (ValueError, KeyError):
        raise JaxinterpError(f"sweep field {name} expects {kind.split()[0]} values, got {text!r}") from None
    return text
