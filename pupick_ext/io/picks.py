"""The one in-memory coordinate table that crosses every boundary.

Coordinates are in unbinned pixels of the original micrograph, x along columns and
y along rows, origin at the first stored pixel (RELION's convention). Each host adapter
converts to its own convention at its edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np


def _as_array(values: Iterable, dtype: type | str) -> np.ndarray:
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=dtype)
    return array.reshape(-1)


@dataclass(frozen=True)
class Picks:
    """A table of picks: ``micrograph`` (name), ``x``, ``y`` (float64 px), ``score`` (float64).

    ``score`` is the log-likelihood ratio (logit) of the classifier for picks made by
    pupick, and NaN for coordinates read from a file that carries no score.
    """

    micrograph: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray = field(default_factory=lambda: np.empty(0))
    score: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "micrograph", _as_array(self.micrograph, object).astype(str).astype(object))
        object.__setattr__(self, "x", _as_array(self.x, np.float64))
        object.__setattr__(self, "y", _as_array(self.y, np.float64))
        score = _as_array(self.score, np.float64)
        if score.size == 0 and self.x.size:
            score = np.full(self.x.size, np.nan)
        object.__setattr__(self, "score", score)
        n = self.micrograph.size
        if not (self.x.size == self.y.size == self.score.size == n):
            raise ValueError("Picks columns must have equal lengths")

    @classmethod
    def empty(cls) -> Picks:
        return cls()

    @classmethod
    def for_one(cls, name: str, x: np.ndarray, y: np.ndarray, score: np.ndarray | None = None) -> Picks:
        """Picks on a single micrograph."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        scores = np.full(x.size, np.nan) if score is None else score
        return cls(np.full(x.size, name, dtype=object), x, y, scores)

    @classmethod
    def concat(cls, tables: Iterable[Picks]) -> Picks:
        tables = list(tables)
        if not tables:
            return cls()
        return cls(
            np.concatenate([t.micrograph for t in tables]),
            np.concatenate([t.x for t in tables]),
            np.concatenate([t.y for t in tables]),
            np.concatenate([t.score for t in tables]),
        )

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def names(self) -> list[str]:
        """Micrograph names in order of first appearance."""
        return list(dict.fromkeys(self.micrograph.tolist()))

    def select(self, mask: np.ndarray) -> Picks:
        return Picks(self.micrograph[mask], self.x[mask], self.y[mask], self.score[mask])

    def for_micrograph(self, name: str) -> Picks:
        return self.select(self.micrograph == name)

    def groups(self) -> Iterator[tuple[str, Picks]]:
        """(name, picks) for each micrograph, in order of first appearance."""
        for name in self.names:
            yield name, self.for_micrograph(name)

    def above(self, threshold: float) -> Picks:
        """Picks whose score is at least ``threshold`` (NaN scores are kept)."""
        return self.select(~(self.score < threshold))

    def scaled(self, factor_x: float, factor_y: float | None = None) -> Picks:
        """Coordinates multiplied by a grid factor (e.g. binned -> unbinned pixels)."""
        factor_y = factor_x if factor_y is None else factor_y
        return Picks(self.micrograph, self.x * factor_x, self.y * factor_y, self.score)

    def renamed(self, mapping: dict[str, str]) -> Picks:
        """Micrograph names replaced through ``mapping`` (names not in it are kept)."""
        names = np.array([mapping.get(n, n) for n in self.micrograph], dtype=object)
        return Picks(names, self.x, self.y, self.score)

    def sorted(self) -> Picks:
        """Stable order: by micrograph name, then score descending."""
        order = np.lexsort((-np.nan_to_num(self.score, nan=-np.inf), self.micrograph.astype(str)))
        return self.select(order)
