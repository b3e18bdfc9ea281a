"""From micrograph files to normalized working images: read, downsample, normalize, cache."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.fsio import atomic_path
from ..io.micrograph import read_header, read_micrograph, validate_pixels
from ..settings import MicrographEntry, PreprocessSettings, Progress
from .downsample import downsample
from .normalize import (
    GMMParams,
    fit_gain,
    fit_gmm,
    gmm_normalize,
    robust_standardize,
    sample_pixels,
    standardize,
)

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PreparedMicrograph:
    """A normalized working image and how it maps back to the original micrograph."""

    name: str
    image: np.ndarray
    scale: tuple[float, float]
    original_shape: tuple[int, int]
    working_pixel_size: float | None

    def to_original(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Working-grid (col, row) -> original-pixel (x, y)."""
        return np.asarray(cols, float) * self.scale[0], np.asarray(rows, float) * self.scale[1]

    def to_working(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Original-pixel (x, y) -> working-grid (col, row)."""
        return np.asarray(x, float) / self.scale[0], np.asarray(y, float) / self.scale[1]


def original_pixel_size(entry: MicrographEntry) -> float | None:
    """The entry's pixel size, else the MRC header's."""
    if entry.pixel_size is not None:
        return entry.pixel_size
    return read_header(entry.path)[1]


def downsampling_factor(entry: MicrographEntry, settings: PreprocessSettings,
                        particle_diameter: float | None) -> float:
    """The factor that takes this micrograph to the working grid."""
    if settings.downsample is not None:
        return float(settings.downsample)
    psize = original_pixel_size(entry)
    if psize is None:
        if settings.pixel_size is not None or particle_diameter is not None:
            raise InputError("pixel size unknown (not in the header or the micrograph list); "
                             "give a downsampling factor instead", entry.path)
        return 1.0
    return settings.factor_for(psize, particle_diameter)


def _cache_key(entry: MicrographEntry, factor: float) -> str:
    stat = entry.path.stat()
    ident = {"path": str(entry.path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns,
             "factor": round(factor, 6), "v": 2}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def load_working_image(
    entry: MicrographEntry, factor: float, cache_dir: Path | None = None,
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """The downsampled image less its mean level (not yet normalized), its (x, y) scale, the original shape.

    With ``cache_dir``, the result is kept as .npy keyed by the file identity and the factor.
    """
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{entry.name}.{_cache_key(entry, factor)}.npz"
        if cached.exists():
            try:
                with np.load(cached) as data:
                    return data["image"], tuple(data["scale"]), tuple(int(v) for v in data["shape"])  # type: ignore[return-value]
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable cache file %s", cached)
    micrograph = read_micrograph(entry.path)
    # The image's mean level carries no information (every normalization removes it) but in
    # float32 Fourier arithmetic its rounding error grows with it: take it out first (the mean
    # summed in float64), so that x and a*x + b give the same working image to float32
    # precision. One float32 copy, whatever the stored type: a 6000^2 micrograph is 137 MiB.
    level = float(np.mean(micrograph.data, dtype=np.float64))
    centred = np.subtract(micrograph.data, level, dtype=np.float32)
    shape = micrograph.shape
    del micrograph  # release the file's pages (or array) before the Fourier transform needs its own
    image, scale = downsample(centred, factor)
    del centred
    validate_pixels(image, entry.path)
    if cached is not None:
        with atomic_path(cached) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, image=image, scale=np.array(scale), shape=np.array(shape))
    return image, scale, shape


def normalize_image(image: np.ndarray, normalization: str, gmm: GMMParams | None,
                    seed: int = 0) -> np.ndarray:
    """Normalize one working image with the given method (GMM needs shared params).

    Every method first removes the image's own offset and scale, so the result is the same
    for x and a*x + b (a > 0): micrographs of other doses, ice thickness, gain references or
    background subtraction reach the network on one scale. "gmm" then applies the shared
    two-component mixture's gain to what remains (the shape of the intensity histogram).
    """
    if normalization == "standard":
        return standardize(image)
    centred = robust_standardize(image)
    if normalization == "robust" or gmm is None:
        return centred
    rng = np.random.default_rng(seed)
    gain = fit_gain(sample_pixels(centred, rng), gmm)
    return gmm_normalize(centred, gmm, gain)


def fit_normalization(images: Sequence[np.ndarray], seed: int = 0) -> GMMParams:
    """Fit the shared GMM on a pixel subsample of every image (deterministic with ``seed``)."""
    rng = np.random.default_rng(seed)
    n = min(min(img.size for img in images), 65536)
    samples = np.stack([sample_pixels(robust_standardize(img), rng, n) for img in images])
    params, _ = fit_gmm(samples)
    return params


def prepare_micrographs(
    entries: Sequence[MicrographEntry], settings: PreprocessSettings,
    particle_diameter: float | None = None, gmm: GMMParams | None = None,
    progress: Progress | None = None,
) -> tuple[list[PreparedMicrograph], GMMParams | None]:
    """Read, downsample and normalize ``entries``; fits the GMM when it is needed and not given."""
    raw = []
    for i, entry in enumerate(entries):
        factor = downsampling_factor(entry, settings, particle_diameter)
        image, scale, shape = load_working_image(entry, factor, settings.cache_dir)
        psize = original_pixel_size(entry)
        raw.append((entry, image, scale, shape, None if psize is None else psize * factor))
        if progress:
            progress(i + 1, len(entries), f"preprocessed {entry.name}")
    if settings.normalization == "gmm" and gmm is None and raw:
        gmm = fit_normalization([r[1] for r in raw], settings.seed)
    prepared = [PreparedMicrograph(entry.name,
                                   normalize_image(image, settings.normalization, gmm, settings.seed),
                                   scale, shape, wpsize)
                for entry, image, scale, shape, wpsize in raw]
    return prepared, gmm


def prepare_one(entry: MicrographEntry, settings: PreprocessSettings, particle_diameter: float | None,
                gmm: GMMParams | None) -> PreparedMicrograph:
    """One micrograph with fixed normalization parameters (used when picking)."""
    factor = downsampling_factor(entry, settings, particle_diameter)
    image, scale, shape = load_working_image(entry, factor, settings.cache_dir)
    psize = original_pixel_size(entry)
    return PreparedMicrograph(entry.name, normalize_image(image, settings.normalization, gmm, settings.seed),
                              scale, shape, None if psize is None else psize * factor)



