"""Parameter-table entries as click options, for the two click front ends (pupick, pupick-cryosparc).

One renderer, so a knob reads the same in both: canonical flag first, old spellings after
it, the settings dataclass's default shown, floats checked finite and within the bounds
the table gives (a bad value is a usage error naming the option).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from .parameters import Parameter, parameter

F = TypeVar("F", bound=Callable[..., Any])


class FiniteFloat(click.ParamType):
    """A float option that must be finite (no nan/inf) and may have bounds.

    A bad value is a usage error naming the option, e.g. ``Invalid value for '--threshold':
    nan is not a finite number``.
    """

    name = "number"

    def __init__(self, low: float | None = None, low_open: bool = False, high: float | None = None,
                 high_open: bool = False) -> None:
        self.low, self.low_open, self.high, self.high_open = low, low_open, high, high_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value} is not a finite number", param, ctx)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            self.fail(f"{value} must be {'>' if self.low_open else '>='} {self.low:g}", param, ctx)
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            self.fail(f"{value} must be {'<' if self.high_open else '<='} {self.high:g}", param, ctx)
        return number


def _click_type(p: Parameter) -> Any:
    if p.choices:
        return click.Choice(list(p.choices))
    if p.kind is float:
        return FiniteFloat(p.low, p.low_open, p.high, p.high_open)
    return p.kind


def click_option(entry: Parameter | str, host: str = "pupick", dest: str | None = None,
                 **overrides: Any) -> Callable[[F], F]:
    """A click option decorator for the table entry ``entry`` (or its name) as ``host`` spells it.

    The parameter arrives under its canonical name (or ``dest``); ``overrides`` replace
    click.option keywords (``required=True``, a command-specific ``help``).
    """
    p = parameter(entry) if isinstance(entry, str) else entry
    flags = p.flags(host)
    if p.kind is bool:
        flags = [f"{p.flag}/--no-{p.flag[2:]}"]
    default = p.default
    if p.choices and default is not None:
        default = str(default)
    kwargs: dict[str, Any] = {"type": None if p.kind is bool else _click_type(p), "default": default,
                              "show_default": default is not None, "help": p.help}
    kwargs.update(overrides)
    return click.option(*flags, dest or p.name, **kwargs)  # type: ignore[return-value]


def click_options(names: Iterable[str | Parameter], host: str = "pupick",
                  overrides: dict[str, dict[str, Any]] | None = None) -> Callable[[F], F]:
    """Decorate with one :func:`click_option` per entry, listed in ``names`` order in --help."""
    entries = [parameter(n) if isinstance(n, str) else n for n in names]
    overrides = overrides or {}

    def decorate(func: F) -> F:
        for p in reversed(entries):
            func = click_option(p, host, **overrides.get(p.name, {}))(func)
        return func

    return decorate
