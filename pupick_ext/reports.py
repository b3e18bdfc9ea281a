"""PNG pictures a person would rather look at than read: picks, PR curves, training, thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io.fsio import atomic_path  # noqa: E402
from .io.micrograph import read_micrograph  # noqa: E402
from .io.picks import Picks  # noqa: E402
from .prep.downsample import downsample  # noqa: E402
from .training.thresholds import threshold_columns  # noqa: E402

#: longest side of the micrograph shown in a picks picture
DISPLAY_SIZE = 1024
#: the most a picks picture's height may differ from its width (either way)
MAX_ASPECT = 4.0


def _save(fig: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_picks(micrograph_path: str | Path, picks: Picks, out_png: str | Path, radius_px: float,
               reference: Picks | None = None, title: str | None = None) -> Path:
    """The micrograph (low-passed for display) with a circle per pick, coloured by score."""
    image = read_micrograph(micrograph_path).data
    factor = max(1.0, max(image.shape) / DISPLAY_SIZE)
    small, (sx, sy) = downsample(image, factor)
    lo, hi = np.percentile(small, [1, 99])
    # a sliver of a micrograph (512 x 1) must not ask for a 4096-inch figure: the aspect is bounded
    aspect = min(MAX_ASPECT, max(1 / MAX_ASPECT, small.shape[0] / small.shape[1]))
    fig, ax = plt.subplots(figsize=(8, 8 * aspect))
    clamped = aspect != small.shape[0] / small.shape[1]
    ax.imshow(small, cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear",
              aspect="auto" if clamped else "equal")
    from matplotlib.collections import PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    handles = []
    if reference is not None and len(reference):
        rings = [Circle((x / sx, y / sy), radius_px / sx * 1.08)
                 for x, y in zip(reference.x, reference.y, strict=True)]
        ring = PatchCollection(rings, facecolors="none", edgecolors="#33ff33", linewidths=0.9,
                               linestyles="--")
        ax.add_collection(ring)
        handles.append(Line2D([], [], color="#33ff33", ls="--", label=f"reference ({len(reference)})"))
    if len(picks):
        scores = np.nan_to_num(picks.score, nan=0.0)
        norm = matplotlib.colors.Normalize(vmin=float(scores.min()),
                                           vmax=float(max(scores.max(), scores.min() + 1e-6)))
        circles = PatchCollection([Circle((x / sx, y / sy), radius_px / sx)
                                   for x, y in zip(picks.x, picks.y, strict=True)],
                                  facecolors="none", linewidths=1.3, cmap="autumn", norm=norm)
        circles.set_edgecolor(matplotlib.colormaps["autumn"](norm(scores)))
        ax.add_collection(circles)
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap="autumn")
        fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04, label="score (log-likelihood ratio)")
        handles.append(Line2D([], [], color="orange", label=f"picks ({len(picks)})"))
    ax.set_xlim(-0.5, small.shape[1] - 0.5)
    ax.set_ylim(small.shape[0] - 0.5, -0.5)
    ax.set_title(title or Path(micrograph_path).name)
    ax.set_axis_off()
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8)
    return _save(fig, out_png)


def plot_pr_curve(evaluation: Any, out_png: str | Path, label: str = "pupick",
                  others: Sequence[tuple[str, Any]] = ()) -> Path:
    """Precision against recall, with AP in the legend (``others`` adds more curves)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, ev in [(label, evaluation), *others]:
        curve = ev.curve
        ax.plot(np.asarray(curve.recall), np.asarray(curve.precision),
                label=f"{name} (AP {ev.average_precision:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title("precision-recall")
    return _save(fig, out_png)


def plot_training(history: Sequence[dict], out_png: str | Path) -> Path:
    """Loss and held-out AP / precision / recall per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(epochs, [h["loss"] for h in history], "o-")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss")
    a1.grid(alpha=0.3)
    for key in ("ap", "precision", "recall"):
        if history and key in history[0]:
            a2.plot(epochs, [h[key] for h in history], "o-", label=f"held-out {key}")
    a2.set_xlabel("epoch")
    a2.set_ylim(0, 1.02)
    a2.grid(alpha=0.3)
    if history and "ap" in history[0]:
        a2.legend()
    else:
        a2.text(0.5, 0.5, "no held-out micrographs", ha="center", transform=a2.transAxes)
    fig.suptitle("training")
    return _save(fig, out_png)


def plot_score_histogram(picks: Picks, out_png: str | Path, threshold: float | None = None) -> Path:
    """Distribution of pick scores, with the threshold marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    scores = picks.score[np.isfinite(picks.score)]
    ax.hist(scores, bins=60, color="#4477aa")
    if threshold is not None:
        ax.axvline(threshold, color="red", ls="--", label=f"threshold {threshold:g}")
        ax.legend()
    ax.set_xlabel("score (log-likelihood ratio)")
    ax.set_ylabel("picks")
    ax.set_title(f"{len(scores)} picks")
    return _save(fig, out_png)


def plot_threshold_table(table: Sequence[tuple[float, float, float]], out_png: str | Path,
                         recommended: float | None = None) -> Path:
    """Particles per micrograph and held-out recall against threshold."""
    columns = threshold_columns(table)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(columns.threshold, columns.per_micrograph, "o-", color="#4477aa")
    ax.set_xlabel("threshold (log-likelihood ratio)")
    ax.set_ylabel("particles per micrograph", color="#4477aa")
    ax.set_yscale("symlog")
    ax2 = ax.twinx()
    ax2.plot(columns.threshold, columns.recall, "s-", color="#cc6677")
    ax2.set_ylabel("held-out recall", color="#cc6677")
    ax2.set_ylim(0, 1.02)
    if recommended is not None:
        ax.axvline(recommended, color="k", ls="--", label=f"recommended {recommended:g}")
        ax.legend(loc="upper right")
    ax.set_title("choosing a threshold")
    return _save(fig, out_png)
