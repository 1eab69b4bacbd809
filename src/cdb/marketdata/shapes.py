"""Market shapes injected into a synthetic market: what they are and when one is valid."""

from __future__ import annotations

from typing import Literal

import msgspec

from cdb.errors import InputError

ShapeKind = Literal["flash_crash", "spike", "gap", "flat", "stale"]


class Shape(msgspec.Struct, frozen=True, kw_only=True):
    """A market shape injected at ``at_s`` seconds after the start.

    ``symbol`` may be ``"*"`` for every symbol. Kinds and what ``duration_s`` and
    ``magnitude_pct`` mean for them:

    - ``flash_crash``: falls ``magnitude_pct`` over ``duration_s``, holds the bottom
      briefly, then recovers half the drop over twice ``duration_s``. The bottom is at
      least ``magnitude_pct`` below the last price before the crash.
    - ``spike``: rises ``magnitude_pct`` over ``duration_s``, holds briefly, falls back
      over ``duration_s``. The top is at least ``magnitude_pct`` above.
    - ``gap``: no trades for ``duration_s``, then the price has jumped by
      ``magnitude_pct`` (signed).
    - ``flat``: trades continue at one constant price for ``duration_s``.
    - ``stale``: no trades at all for ``duration_s``; the price resumes where it was.
    """

    kind: ShapeKind
    symbol: str
    at_s: float
    duration_s: float
    magnitude_pct: float = 0.0


def flash_crash(symbol: str, at: float, drop_pct: float, over_s: float) -> Shape:
    """A fall of ``drop_pct`` % over ``over_s`` seconds from ``at``, then a partial recovery."""
    return Shape(
        kind="flash_crash", symbol=symbol, at_s=at, duration_s=over_s, magnitude_pct=drop_pct
    )


def spike(symbol: str, at: float, rise_pct: float, over_s: float) -> Shape:
    """A rise of ``rise_pct`` % over ``over_s`` seconds from ``at``, then back."""
    return Shape(kind="spike", symbol=symbol, at_s=at, duration_s=over_s, magnitude_pct=rise_pct)


def gap(symbol: str, at: float, duration_s: float, jump_pct: float) -> Shape:
    """No trades for ``duration_s`` seconds from ``at``, then a jump of ``jump_pct`` %."""
    return Shape(kind="gap", symbol=symbol, at_s=at, duration_s=duration_s, magnitude_pct=jump_pct)


def flat(symbol: str, at: float, duration_s: float) -> Shape:
    """A constant price for ``duration_s`` seconds from ``at`` (trades continue)."""
    return Shape(kind="flat", symbol=symbol, at_s=at, duration_s=duration_s)


def stale(symbol: str, at: float, duration_s: float) -> Shape:
    """No trades at all for ``duration_s`` seconds from ``at``."""
    return Shape(kind="stale", symbol=symbol, at_s=at, duration_s=duration_s)


def check_shape(shape: Shape, symbols: list[str], duration_s: float) -> None:
    """Refuse a shape on an unknown symbol, outside the run, or of an impossible size."""
    problem = ""
    if shape.symbol != "*" and shape.symbol not in symbols:
        problem = f"symbol {shape.symbol!r} is not one of {symbols} (or '*')"
    elif shape.at_s < 0 or shape.duration_s <= 0:
        problem = "at_s must be >= 0 and duration_s > 0"
    elif shape.kind == "flash_crash" and not 0 < shape.magnitude_pct < 100:
        problem = "a flash crash drops between 0 and 100 %"
    elif shape.kind == "spike" and shape.magnitude_pct <= 0:
        problem = "a spike rises by more than 0 %"
    elif shape.kind == "gap" and shape.magnitude_pct <= -100:
        problem = "a gap cannot jump down 100 % or more"
    if problem:
        raise InputError(f"invalid shape {shape}: {problem}")
