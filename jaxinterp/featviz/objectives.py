"""Feature-visualization objectives: what an image should maximize, composable with ``+ - *`` as in lucid.

An ``Objective`` is a pure function ``fn(acts, images, index) -> (B,)`` giving one score per image (higher is
better), the layers it reads, and a readable description. ``index`` is a *traced* int32 scalar: a family such as
``channel("conv_seqs.2.res_block1")`` picks its channel (or action, or direction row) from it at run time, so one
compiled optimizer serves every channel of a layer; ``channel(layer, 7)`` binds the channel and ignores ``index``.

Regularizers (``total_variation``, ``l1``, ``l2``, ``blur``, ``diversity``) are *penalties*: positive, and meant to
be subtracted, e.g. ``channel("conv4a") - 1e-2 * total_variation() - 1.0 * diversity("conv4a")``. (lucid's own
penalties follow the same convention.) ``parse_objective`` reads the CLI's string form.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError

if TYPE_CHECKING:
    from jaxinterp.models.agent import Agent

__all__ = [
    "FAMILIES",
    "INDEX",
    "LOGITS",
    "VALUE",
    "Objective",
    "action",
    "action_vs_rest",
    "blur",
    "channel",
    "deepdream",
    "direction",
    "direction_neuron",
    "diversity",
    "l1",
    "l2",
    "neuron",
    "parse_objective",
    "read_acts",
    "resolve_layer",
    "spatial_direction",
    "total_variation",
    "value",
]

Acts = Mapping[str, jax.Array]
ScoreFn = Callable[[Acts, jax.Array, jax.Array], jax.Array]

LOGITS = "<logits>"
"""Stands for the agent's action-logits layer (``agent.arch.logits``), which each architecture names differently."""
VALUE = "<value>"
"""Stands for the agent's value-head layer (``agent.arch.value``)."""
INDEX = "i"
"""How descriptions write the traced index of an objective family: ``channel('conv4a', i)``."""

_ALIASES = {LOGITS: "logits", VALUE: "value"}


def resolve_layer(agent: Agent, name: str) -> str:
    """The agent's layer name for ``name``: ``LOGITS``/``VALUE`` become the architecture's head layers."""
    if name == LOGITS:
        return agent.arch.logits
    if name == VALUE:
        return agent.arch.value
    return name


def read_acts(agent: Agent, acts: Acts, layers: tuple[str, ...]) -> dict[str, jax.Array]:
    """``{name: activation}`` for the names an objective reads (aliases resolved); under jit the rest is dead code."""
    return {name: acts[resolve_layer(agent, name)] for name in layers}


def _merge_layers(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for g in groups for n in g))


def _fmt_number(x: float) -> str:
    return f"{x:g}"


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    """A score to maximize: ``fn(acts, images, index) -> (B,)`` for a batch of B images.

    ``acts`` maps each name in ``layers`` to its activation (NHWC, or (B, F) for dense layers), ``images`` are the
    (untransformed) images in [0, 1], (B, 64, 64, 3); ``index`` is an int32 scalar, traced under jit and vmap.
    ``size(agent)`` is how many indices the objective accepts (None: it ignores ``index``); ``check(agent)``
    raises a one-line ``JaxinterpError`` if the objective does not fit the agent.
    """

    fn: ScoreFn
    layers: tuple[str, ...]
    template: str
    """The description with ``{i}`` where the traced index goes."""
    size: Callable[[Agent], int] | None = None
    check: Callable[[Agent], None] | None = None
    precedence: int = 3  # 1: a sum, 2: a product, 3: an atom (for parentheses in descriptions)

    def __call__(self, acts: Acts, images: jax.Array, index: jax.Array | int = 0) -> jax.Array:
        return self.fn(acts, images, jnp.asarray(index, jnp.int32))

    @property
    def description(self) -> str:
        """E.g. ``channel('conv4a', i) - 0.01 * total_variation()``; ``i`` is the traced index."""
        return self.describe(INDEX)

    def describe(self, index: int | str = INDEX) -> str:
        """The description with the index filled in: ``describe(7)`` -> ``channel('conv4a', 7) - ...``."""
        return self.template.replace("{i}", str(index))

    @property
    def uses_index(self) -> bool:
        return self.size is not None

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    # --- checks against an agent -------------------------------------------------------------------------
    def validate(self, agent: Agent) -> Objective:
        """``self``, after checking its layers and parameters against ``agent`` (one-line errors)."""
        agent.check_layers(resolve_layer(agent, n) for n in self.layers)
        if self.check is not None:
            self.check(agent)
        return self

    def num_indices(self, agent: Agent) -> int | None:
        """How many values the traced index may take for ``agent`` (None: the objective ignores it)."""
        return None if self.size is None else int(self.size(agent))

    def check_index(self, agent: Agent, index: int) -> int:
        """``index`` if the objective accepts it, else a one-line error naming the valid range."""
        n = self.num_indices(agent)
        if n is not None and not 0 <= int(index) < n:
            raise JaxinterpError(
                f"index {index} is out of range for {self.description}: valid indices are 0-{n - 1}"
            )
        return int(index)

    # --- algebra ---------------------------------------------------------------------------------------------
    def _wrap(self, level: int) -> str:
        return f"({self.template})" if self.precedence < level else self.template

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return _combine(self, other, 1.0, "+")

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return _combine(self, other, -1.0, "-")

    def __mul__(self, scale: float) -> Objective:
        if isinstance(scale, Objective) or not _is_scalar(scale):
            return NotImplemented
        scale = float(scale)
        fn = self.fn

        def scaled(acts, images, index):
            return scale * fn(acts, images, index)

        return dataclasses.replace(
            self, fn=scaled, template=f"{_fmt_number(scale)} * {self._wrap(2)}", precedence=2
        )

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> Objective:
        if isinstance(scale, Objective) or not _is_scalar(scale):
            return NotImplemented
        return self * (1.0 / float(scale))

    def __neg__(self) -> Objective:
        fn = self.fn
        return dataclasses.replace(
            self, fn=lambda a, im, i: -fn(a, im, i), template=f"-{self._wrap(3)}", precedence=2
        )


def _is_scalar(x) -> bool:
    return (
        isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) and math.isfinite(x)
    )


def _combine(a: Objective, b: Objective, sign: float, op: str) -> Objective:
    fa, fb = a.fn, b.fn

    def fn(acts, images, index):
        return fa(acts, images, index) + sign * fb(acts, images, index)

    sizes = [s for s in (a.size, b.size) if s is not None]
    size = None if not sizes else (lambda agent: min(s(agent) for s in sizes))
    checks = [c for c in (a.check, b.check) if c is not None]

    def check(agent):
        for c in checks:
            c(agent)

    right = b._wrap(2) if op == "+" else b._wrap(3 if b.precedence == 1 else 2)
    return Objective(
        fn,
        _merge_layers(a.layers, b.layers),
        f"{a._wrap(1)} {op} {right}",
        size,
        check if checks else None,
        precedence=1,
    )


# --- helpers ------------------------------------------------------------------------------------------------


def _width(agent: Agent, layer: str) -> int:
    return agent.layer_shapes[resolve_layer(agent, layer)][-1]


def _spatial_mean(x: jax.Array) -> jax.Array:
    """Mean over every axis but the batch: (B, H, W) or (B,) to (B,)."""
    return x.reshape(x.shape[0], -1).mean(axis=1)


def _select(acts: jax.Array, index: jax.Array, n: int) -> jax.Array:
    """``acts[..., index]`` as a product with a one-hot vector: its gradient is a broadcast, not a scatter."""
    return acts @ jax.nn.one_hot(index, n, dtype=acts.dtype)


def _bound(channel_: int | None) -> tuple[str, Callable[[jax.Array], jax.Array] | None]:
    """The description of an index argument and, when bound, a function returning the fixed index."""
    if channel_ is None:
        return "{i}", None
    if not isinstance(channel_, int | np.integer) or isinstance(channel_, bool):
        raise JaxinterpError(f"channel/index must be an int or None (the traced index), got {channel_!r}")
    fixed = int(channel_)
    return str(fixed), lambda _index: jnp.int32(fixed)


def _check_bound(layer: str, fixed: int | None, what: str = "channel") -> Callable[[Agent], None] | None:
    if fixed is None:
        return None

    def check(agent):
        n = _width(agent, layer)
        if not 0 <= fixed < n:
            name = {LOGITS: "the action logits", VALUE: "the value head"}.get(layer, f"layer {layer!r}")
            raise JaxinterpError(f"{what} {fixed} is out of range for {name}: it has {what}s 0-{n - 1}")

    return check


def _index_fn(channel_: int | None):
    text, fixed = _bound(channel_)
    return text, (fixed if fixed is not None else (lambda index: index))


def _family_size(layer: str, channel_: int | None) -> Callable[[Agent], int] | None:
    return (lambda agent: _width(agent, layer)) if channel_ is None else None


# --- activations --------------------------------------------------------------------------------------------


def channel(layer: str, channel: int | None = None) -> Objective:
    """Mean activation of one channel over all positions (a dense layer's unit); ``channel=None``: the family."""
    text, pick = _index_fn(channel)

    def fn(acts, images, index):
        a = acts[layer]
        return _spatial_mean(_select(a, pick(index), a.shape[-1]))

    return Objective(
        fn,
        (layer,),
        f"channel({layer!r}, {text})",
        _family_size(layer, channel),
        _check_bound(layer, None if channel is None else int(channel)),
    )


def _position(agent: Agent, layer: str, x: int | None, y: int | None) -> None:
    shape = agent.layer_shapes[resolve_layer(agent, layer)]
    if len(shape) != 3:
        raise JaxinterpError(
            f"layer {layer!r} has no spatial positions (shape {shape}); use channel() instead"
        )
    h, w, _ = shape
    for name, v, n in (("x", x, w), ("y", y, h)):
        if v is not None and not 0 <= v < n:
            raise JaxinterpError(f"{name}={v} is outside layer {layer!r}, which is {w} wide and {h} high")


def _at(a: jax.Array, x: int | None, y: int | None) -> jax.Array:
    """a[:, y, x] with None meaning the centre (lucid's default position)."""
    h, w = a.shape[1:3]
    return a[:, h // 2 if y is None else y, w // 2 if x is None else x]


def neuron(layer: str, channel: int | None = None, x: int | None = None, y: int | None = None) -> Objective:
    """One channel at one position (column ``x``, row ``y``; default the centre), as lucid's ``neuron``."""
    text, pick = _index_fn(channel)
    fixed = None if channel is None else int(channel)
    bound = _check_bound(layer, fixed)

    def check(agent):
        _position(agent, layer, x, y)
        if bound is not None:
            bound(agent)

    def fn(acts, images, index):
        a = _at(acts[layer], x, y)
        return _select(a, pick(index), a.shape[-1])

    where = "" if x is None and y is None else f", x={x}, y={y}"
    return Objective(fn, (layer,), f"neuron({layer!r}, {text}{where})", _family_size(layer, channel), check)


def _vectors(vectors, name: str) -> np.ndarray:
    v = np.asarray(vectors, np.float32)
    if v.ndim not in (1, 2) or v.size == 0 or not np.isfinite(v).all():
        raise JaxinterpError(f"{name} vectors must be finite with shape (C,) or (F, C), got shape {v.shape}")
    return v


def _rows(layer: str, v: np.ndarray, trailing: tuple[int, ...], what: str):
    """(description of the index, vector picker, size, check) for one vector or a stack of F of them."""
    stacked = v.ndim == len(trailing) + 1
    table = jnp.asarray(v)

    def check(agent):
        shape = tuple(agent.layer_shapes[resolve_layer(agent, layer)])
        want = shape[-len(trailing) :]
        if tuple(v.shape[-len(trailing) :]) != want:
            raise JaxinterpError(
                f"{what} has shape {v.shape[-len(trailing) :]} but layer {layer!r} needs {want} (activation {shape})"
            )

    if stacked:
        return "{i}", (lambda index: table[index]), (lambda agent: v.shape[0]), check
    return f"<{'x'.join(map(str, v.shape))}>", (lambda index: table), None, check


def direction(layer: str, vectors, name: str = "direction") -> Objective:
    """Mean over positions of ``acts @ v`` for a direction ``v`` (C,) in channel space (e.g. an SAE decoder row).

    A stack ``(F, C)`` makes a family: the traced index picks the row, so one compile serves all F directions.
    """
    v = _vectors(vectors, name)
    text, pick, size, check = _rows(layer, v, (v.shape[-1],), name)

    def fn(acts, images, index):
        return _spatial_mean(acts[layer] @ pick(index))

    label = text if v.ndim == 2 else f"{name}{list(v.shape)}"
    return Objective(fn, (layer,), f"direction({layer!r}, {label})", size, check)


def direction_neuron(layer: str, vectors, x: int | None = None, y: int | None = None) -> Objective:
    """``acts[y, x] @ v``: a channel-space direction at one position (default the centre); (F, C) is a family."""
    v = _vectors(vectors, "direction")
    text, pick, size, check_v = _rows(layer, v, (v.shape[-1],), "direction")

    def check(agent):
        _position(agent, layer, x, y)
        check_v(agent)

    def fn(acts, images, index):
        return _at(acts[layer], x, y) @ pick(index)

    label = text if v.ndim == 2 else f"direction{list(v.shape)}"
    where = "" if x is None and y is None else f", x={x}, y={y}"
    return Objective(fn, (layer,), f"direction_neuron({layer!r}, {label}{where})", size, check)


def spatial_direction(layer: str, tensors) -> Objective:
    """``sum(acts * T) / (H W)`` for a direction ``T`` (H, W, C) over the whole activation; (F, H, W, C): a family."""
    t = np.asarray(tensors, np.float32)
    if t.ndim not in (3, 4) or not np.isfinite(t).all():
        raise JaxinterpError(
            f"spatial direction must be finite with shape (H, W, C) or (F, H, W, C), got {t.shape}"
        )
    text, pick, size, check = _rows(layer, t, t.shape[-3:], "spatial direction")

    def fn(acts, images, index):
        a = acts[layer]
        return jnp.einsum("bhwc,hwc->b", a, pick(index)) / (a.shape[1] * a.shape[2])

    label = text if t.ndim == 4 else f"<{'x'.join(map(str, t.shape))}>"
    return Objective(fn, (layer,), f"spatial_direction({layer!r}, {label})", size, check)


def action(index: int | None = None) -> Objective:
    """The logit of one action (``index=None``: the family over actions)."""
    text, pick = _index_fn(index)

    def fn(acts, images, i):
        logits = acts[LOGITS]
        return _select(logits, pick(i), logits.shape[-1])

    return Objective(
        fn,
        (LOGITS,),
        f"action({text})",
        _family_size(LOGITS, index),
        _check_bound(LOGITS, None if index is None else int(index), "action"),
    )


def action_vs_rest(index: int | None = None, rest: str = "logsumexp") -> Objective:
    """An action's logit minus the ``logsumexp`` (its log-probability, up to the own term) or ``mean`` of the others."""
    if rest not in ("logsumexp", "mean"):
        raise JaxinterpError(f"`rest` (={rest!r}) must be 'logsumexp' or 'mean'")
    text, pick = _index_fn(index)

    def fn(acts, images, i):
        logits = acts[LOGITS]
        n = logits.shape[-1]
        hot = jax.nn.one_hot(pick(i), n, dtype=bool)
        own = _select(logits, pick(i), n)
        if rest == "logsumexp":
            others = jax.nn.logsumexp(jnp.where(hot, -jnp.inf, logits), axis=-1)
        else:
            others = (logits.sum(-1) - own) / (n - 1)
        return own - others

    return Objective(
        fn,
        (LOGITS,),
        f"action_vs_rest({text}, {rest!r})",
        _family_size(LOGITS, index),
        _check_bound(LOGITS, None if index is None else int(index), "action"),
    )


def value() -> Objective:
    """The value head's estimate."""
    return Objective(lambda acts, images, index: acts[VALUE][:, 0], (VALUE,), "value()")


def deepdream(layer: str) -> Objective:
    """Mean squared activation of a whole layer (lucid's ``deepdream``)."""
    return Objective(
        lambda acts, images, index: _spatial_mean(acts[layer] ** 2), (layer,), f"deepdream({layer!r})"
    )


# --- penalties on the image (subtract them) -------------------------------------------------------------------


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels (per pixel, so weights do not depend on image size)."""

    def fn(acts, images, index):
        dy = jnp.abs(images[:, 1:] - images[:, :-1]).reshape(images.shape[0], -1).mean(1)
        dx = jnp.abs(images[:, :, 1:] - images[:, :, :-1]).reshape(images.shape[0], -1).mean(1)
        return dy + dx

    return Objective(fn, (), "total_variation()")


def l1(constant: float = 0.5) -> Objective:
    """Mean ``|image - constant|`` (default mid-grey, the colour a fresh sigmoid image starts at)."""
    return Objective(
        lambda acts, images, index: _spatial_mean(jnp.abs(images - constant)),
        (),
        f"l1({_fmt_number(constant)})",
    )


def l2(constant: float = 0.5) -> Objective:
    """Root mean square of ``image - constant``."""
    eps = 1e-12  # sqrt's derivative is infinite at 0: an image exactly at `constant` must not give NaN

    def fn(acts, images, index):
        return jnp.sqrt(_spatial_mean((images - constant) ** 2) + eps)

    return Objective(fn, (), f"l2({_fmt_number(constant)})")


def blur() -> Objective:
    """Half the mean squared difference to a 3×3 box-blurred copy (held constant): lucid's blur_input_each_step."""

    def fn(acts, images, index):
        padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        h, w = images.shape[1:3]
        blurred = sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
        return 0.5 * _spatial_mean((images - jax.lax.stop_gradient(blurred)) ** 2)

    return Objective(fn, (), "blur()")


def diversity(layer: str) -> Objective:
    """lucid's ``diversity``: each image's summed cosine similarity of its ``layer`` Gram matrix to the others'.

    The batch is the K facets of one job (the engine vmaps over channels, not facets), so subtracting this pushes
    a channel's facets apart. Summed over the batch it equals lucid's value; with one facet it is 0.
    """

    def fn(acts, images, index):
        a = acts[layer]
        flat = a.reshape(a.shape[0], -1, a.shape[-1])
        grams = jnp.einsum("bpc,bpd->bcd", flat, flat).reshape(a.shape[0], -1)
        grams = grams / jnp.maximum(jnp.linalg.norm(grams, axis=1, keepdims=True), 1e-10)
        sim = grams @ grams.T
        return (sim.sum(1) - jnp.diagonal(sim)) / a.shape[0]

    return Objective(fn, (layer,), f"diversity({layer!r})")


# --- the string form ------------------------------------------------------------------------------------------

FAMILIES = ("channel", "neuron", "deepdream")
"""Keywords that, given a layer, mean that layer's objective: ``"channel - 1e-3 * tv"`` for each layer of a run."""

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][\w.]*)|(?P<op>[-+*/:@,()]))"
)
_HELP = (
    "use e.g. 'conv_seqs.2.res_block1:7', 'layer:7@3,4', 'action:2', 'action_vs_rest:2', 'value', "
    "'deepdream:layer', 'layer:7 - 0.5*layer:3 - 1e-3*tv'"
)


class _Parser:
    """Recursive descent over ``expr := term (('+'|'-') term)*``, ``term := factor (('*'|'/') factor)*``."""

    def __init__(self, text: str, layer: str | None):
        self.text, self.layer = text, layer
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                self.fail(f"unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def fail(self, what: str):
        raise JaxinterpError(f"cannot parse objective {self.text!r}: {what}; {_HELP}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            want = value or {"num": "a number", "name": "a name", "op": "an operator"}.get(kind or "", "more")
            got = "the end" if tok is None else repr(tok[1])
            self.fail(f"expected {want!r} but found {got}" if value else f"expected {want} but found {got}")
        self.i += 1
        return tok

    def accept(self, value: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] == value:
            self.i += 1
            return True
        return False

    def parse(self):
        if not self.tokens:
            self.fail("it is empty")
        out = self.expr()
        if self.peek() is not None:
            self.fail(f"unexpected {self.peek()[1]!r} at position {self.peek()[2]}")
        return out

    def expr(self):
        out = self.term()
        while (tok := self.peek()) is not None and tok[1] in "+-" and tok[0] == "op":
            self.i += 1
            rhs = self.term()
            if not (isinstance(out, Objective) and isinstance(rhs, Objective)):
                self.fail(f"{tok[1]!r} needs an objective on both sides (numbers only scale with '*')")
            out = (out + rhs) if tok[1] == "+" else (out - rhs)
        return out

    def term(self):
        out = self.factor()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in "*/":
            self.i += 1
            rhs = self.factor()
            if isinstance(out, Objective) and isinstance(rhs, Objective):
                self.fail("two objectives cannot be multiplied; scale one by a number")
            if tok[1] == "/":
                if isinstance(rhs, Objective):
                    self.fail("cannot divide by an objective")
                if rhs == 0:
                    self.fail("division by zero")
                out = out / rhs
            else:
                out = out * rhs
        return out

    def factor(self):
        if self.accept("-"):
            inner = self.factor()
            return -inner
        if self.accept("("):
            inner = self.expr()
            self.take("op", ")")
            return inner
        tok = self.peek()
        if tok is None:
            self.fail("it ends where an objective or number was expected")
        if tok[0] == "num":
            self.i += 1
            return float(tok[1])
        if tok[0] == "name":
            self.i += 1
            return self.atom(tok[1])
        self.fail(f"unexpected {tok[1]!r} at position {tok[2]}")

    def integer(self) -> int:
        _, text, pos = self.take("num")
        if not re.fullmatch(r"\d+", text):
            self.fail(f"expected a whole number at position {pos}, got {text!r}")
        return int(text)

    def layer_arg(self, keyword: str) -> str:
        if self.accept(":"):
            return self.take("name")[1]
        if self.layer is None:
            self.fail(f"{keyword!r} needs a layer: write '{keyword}:LAYER'")
        return self.layer

    def maybe_index(self) -> int | None:
        return self.integer() if self.accept(":") else None

    def position(self) -> tuple[int | None, int | None]:
        if not self.accept("@"):
            return None, None
        x = self.integer()
        self.take("op", ",")
        return x, self.integer()

    def atom(self, name: str) -> Objective:
        simple = {"value": value, "tv": total_variation, "total_variation": total_variation, "blur": blur}
        if name in simple:
            return simple[name]()
        if name in ("l1", "l2"):
            return {"l1": l1, "l2": l2}[name]()
        if name == "action":
            return action(self.maybe_index())
        if name == "action_vs_rest":
            return action_vs_rest(self.maybe_index())
        if name in ("deepdream", "diversity"):
            return {"deepdream": deepdream, "diversity": diversity}[name](self.layer_arg(name))
        if name in ("channel", "neuron") and self.layer is not None:
            index = self.maybe_index()
            x, y = self.position()
            if name == "neuron" or x is not None:
                return neuron(self.layer, index, x, y)
            return channel(self.layer, index)
        # A layer name: 'layer' (channel family), 'layer:7' (channel), 'layer:7@x,y' / 'layer@x,y' (neuron).
        index = self.maybe_index()
        x, y = self.position()
        if x is not None:
            return neuron(name, index, x, y)
        return channel(name, index)


def parse_objective(text: str, layer: str | None = None) -> Objective:
    """An ``Objective`` from its string form (the CLI's), or a one-line ``JaxinterpError``.

    ``"conv_seqs.2.res_block1:7"`` channel 7; ``"layer"`` the channel family; ``"layer:7@3,4"`` channel 7 at column 3,
    row 4; ``"action:2"``, ``"action"`` (family), ``"action_vs_rest:2"``, ``"value"``, ``"deepdream:layer"``,
    penalties ``"tv"``, ``"l1"``, ``"l2"``, ``"blur"``, ``"diversity:layer"``; combined with ``+ - * /`` and
    parentheses: ``"conv4a:7 - 0.5*conv4a:3 - 1e-3*tv"``. With ``layer`` given, ``channel``, ``neuron``
    (``neuron@x,y``), ``deepdream`` and ``diversity`` without ``:LAYER`` refer to it: ``"channel - 1e-3*tv"``.
    """
    if not isinstance(text, str):
        raise JaxinterpError(f"objective must be a string or an Objective, got {type(text).__name__}")
    out = _Parser(text, layer).parse()
    if not isinstance(out, Objective):
        raise JaxinterpError(f"cannot parse objective {text!r}: it is a number, not an objective; {_HELP}")
    return out
