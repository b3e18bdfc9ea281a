"""Synthetic cryo-EM micrographs with known particle positions (the built-in demo data).

Image model, per micrograph (rendered on a padded grid so that the CTF does not wrap around):
- one fixed, asymmetric 3-D particle built from Gaussian "atoms" (a body, an elongated lobe and a
  knob); every copy gets a uniform random rotation (random unit quaternion) and is projected along
  z analytically, since the projection of a 3-D Gaussian is a 2-D Gaussian;
- dense contaminant blobs (irregular ice / ethane balls about one to two particle sizes across) and,
  on some micrographs, a textured carbon film beyond a curved hole edge add potential and absorb;
- on medium and hard, protein aggregates (clumps of 4-9 overlapping copies of the particle) and
  fragments (the atoms of one particle nearest a random atom, 20-50% of it) add potential with
  the particle's own contrast and texture; they are not labelled, so only shape and size tell
  them from particles;
- the potential, plus white "structural" ice noise, is turned into phase contrast by the CTF in
  Fourier space (300 kV, Cs 2.7 mm, 10% amplitude contrast, per-micrograph defocus 1-3 um with a
  little astigmatism, B-factor envelope), with the sign that makes particles dark (underfocus);
- expected counts = dose x transmission (ice-thickness gradient, contaminants, carbon) x
  (1 + phase contrast); the micrograph is a Poisson draw from it (float32 counts). The particle
  contrast is scaled so that the per-pixel SNR inside particle disks matches the preset;
- the dose differs from micrograph to micrograph (x0.6-1.5 on medium), and on medium and hard
  about half the micrographs are stored as ``gain * counts + offset`` (gain 0.25-4, offset
  down to below zero), as gain-normalized, dark- or background-subtracted micrographs from
  other programs are: a picker that keys on absolute intensity fails on them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from ..errors import SettingsError
from ..io.picks import Picks
from ..settings import MicrographEntry

__all__ = ["PRESETS", "DemoData", "Difficulty", "generate_demo_data"]

# --- fixed acquisition and specimen parameters -------------------------------------------------
PIXEL_SIZE = 1.5  #: A/px
PARTICLE_DIAMETER = 150.0  #: A
VOLTAGE_KV = 300.0
CS_MM = 2.7
AMPLITUDE_CONTRAST = 0.1
DEFOCUS_RANGE_A = (10000.0, 30000.0)  #: mean defocus (underfocus, A)
ASTIGMATISM_RANGE_A = (50.0, 600.0)  #: |DefocusU - DefocusV| (A)
B_FACTOR_RANGE = (60.0, 120.0)  #: envelope exp(-B k^2 / 4) (A^2)
DOSE_E_PER_A2 = 40.0  #: total dose of the (motion-corrected, summed) micrograph
PARTICLE_SEED = 20240917  #: the particle's shape is the same in every data set
MIN_SEPARATION = 0.85  #: minimum centre distance, in particle diameters
TOUCH_DISTANCE = (0.88, 1.0)  #: centre distance of a touching pair, in particle diameters
REFERENCE_SIDE = 1024  #: the per-micrograph counts in PRESETS are for REFERENCE_SIDE^2 pixels
REFERENCE_AREA = REFERENCE_SIDE**2


@dataclass(frozen=True)
class Difficulty:
    """One preset's knobs; counts are per 1024x1024 pixels and scale with the image area."""

    snr: float  #: per-pixel SNR: particle signal power in particle disks / noise variance
    particles: tuple[int, int]  #: range of particles per micrograph (hole area, no clutter)
    touching: float  #: chance that a placed particle gets a touching neighbour
    contaminants: tuple[int, int]  #: range of contaminant blobs per micrograph
    carbon_probability: float  #: chance that a micrograph shows a carbon edge
    ice_gradient: float  #: relative change of the background across the field
    structural_noise: float  #: CTF-filtered ice noise variance, relative to shot noise
    dose_spread: tuple[float, float] = (0.9, 1.1)  #: per-micrograph dose factor range
    rescaled: float = 0.0  #: chance that a micrograph is stored as gain * counts + offset
    aggregates: tuple[int, int] = (0, 0)  #: range of protein aggregates (clumps of 4-9 particles)
    fragments: tuple[int, int] = (0, 0)  #: range of protein fragments (a part of one particle)


#: The presets, easiest first: they differ mainly in SNR and in clutter.
PRESETS: dict[str, Difficulty] = {
    "easy": Difficulty(snr=0.15, particles=(38, 46), touching=0.10, contaminants=(1, 3),
                       carbon_probability=0.25, ice_gradient=0.05, structural_noise=0.15),
    "medium": Difficulty(snr=0.07, particles=(45, 55), touching=0.15, contaminants=(5, 9),
                         carbon_probability=0.5, ice_gradient=0.10, structural_noise=0.25,
                         dose_spread=(0.6, 1.5), rescaled=0.5, aggregates=(0, 2), fragments=(3, 6)),
    "hard": Difficulty(snr=0.035, particles=(50, 60), touching=0.25, contaminants=(8, 12),
                       carbon_probability=0.6, ice_gradient=0.15, structural_noise=0.35,
                       dose_spread=(0.5, 1.6), rescaled=0.6, aggregates=(1, 3), fragments=(6, 10)),
}


@dataclass(frozen=True)
class DemoData:
    """What :func:`generate_demo_data` wrote: the micrograph list, STAR file and ground truth."""

    outdir: Path
    micrographs_star: Path
    micrographs: list[MicrographEntry]
    truth: Picks
    truth_file: Path
    particle_diameter: float
    pixel_size: float
    preset: str


@dataclass(frozen=True)
class _Synthetic:
    """One rendered micrograph; ``clean``/``particle_signal``/``clutter`` only when asked for."""

    image: np.ndarray
    x: np.ndarray
    y: np.ndarray
    defocus_u: float
    defocus_v: float
    defocus_angle: float
    figure_of_merit: float
    max_resolution: float
    snr_target: float
    clean: np.ndarray | None = None
    particle_signal: np.ndarray | None = None
    clutter: np.ndarray | None = None


# --- the particle --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _particle_model(particle_seed: int = PARTICLE_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atom centres (m, 3) px about the centre of mass, widths (m,) px, projected peak amplitudes.

    The default seed gives the demo's particle (a body, an elongated lobe and a knob); any
    other seed gives another particle of the same size made of 2-4 random domains, so a test
    can check that a picker learns the particle it is shown, not the demo's.
    """
    rng = np.random.default_rng(particle_seed)
    radius = PARTICLE_DIAMETER / 2 / PIXEL_SIZE

    def ellipsoid(n: int, centre: tuple[float, float, float], axes: tuple[float, float, float]) -> np.ndarray:
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return np.asarray(centre) + d * rng.random((n, 1)) ** (1 / 3) * np.asarray(axes)

    if particle_seed == PARTICLE_SEED:
        body = ellipsoid(18, (-0.15, -0.05, 0.0), (0.62, 0.52, 0.45))
        t = np.linspace(0.0, 1.0, 6)[:, None]
        lobe = (np.array([0.30, 0.10, 0.05]) + t * np.array([0.55, 0.25, 0.05])
                + rng.normal(scale=0.04, size=(6, 3)))
        knob = ellipsoid(3, (-0.20, 0.55, 0.40), (0.10, 0.10, 0.10))
        pos = np.concatenate([body, lobe, knob]) * radius
        sigma = np.concatenate([rng.uniform(0.13, 0.20, 18), rng.uniform(0.09, 0.13, 6),
                                rng.uniform(0.10, 0.13, 3)]) * radius
        density = np.concatenate([rng.uniform(0.8, 1.2, 18), rng.uniform(0.7, 1.0, 6), np.full(3, 1.0)])
    else:
        domains = []
        for _ in range(int(rng.integers(2, 5))):
            centre = tuple(rng.uniform(-0.45, 0.45, 3))
            axes = tuple(rng.uniform(0.2, 0.55, 3))
            domains.append(ellipsoid(int(rng.integers(5, 14)), centre, axes))  # type: ignore[arg-type]
        pos = np.concatenate(domains) * radius
        sigma = rng.uniform(0.09, 0.2, len(pos)) * radius
        density = rng.uniform(0.7, 1.2, len(pos))
    mass = density * sigma**3
    pos -= (mass[:, None] * pos).sum(0) / mass.sum()
    # Scale about the centre of mass so that the outer extent (centre + 1.2 sigma) is the radius.
    pos *= np.min((radius - 1.2 * sigma) / np.linalg.norm(pos, axis=1))
    return pos, sigma, density * np.sqrt(2 * np.pi) * sigma


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly distributed rotation matrices (n, 3, 3), from random unit quaternions."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def _render_particles(grid: tuple[int, int], xs: np.ndarray, ys: np.ndarray,
                      rotations: np.ndarray, particle_seed: int = PARTICLE_SEED) -> np.ndarray:
    """Projected potential of the rotated particles at (xs, ys) on a grid of ``grid`` pixels."""
    return _render_atoms(grid, xs, ys, rotations, _particle_model(particle_seed))


def _render_atoms(grid: tuple[int, int], xs: np.ndarray, ys: np.ndarray, rotations: np.ndarray,
                  model: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Projected potential of one Gaussian-atom model (centres, widths, amplitudes) at each (x, y)."""
    pos, sigma, amp = model
    out = np.zeros(grid)
    if xs.size == 0:
        return out
    half = int(np.ceil(PARTICLE_DIAMETER / 2 / PIXEL_SIZE)) + 14
    size = 2 * half
    rotated = np.einsum("nij,mj->nmi", rotations, pos)  # (n, atoms, 3)
    x0 = np.rint(xs).astype(int) - half
    y0 = np.rint(ys).astype(int) - half
    ax = (xs - x0)[:, None] + rotated[..., 0]
    ay = (ys - y0)[:, None] + rotated[..., 1]
    local = np.arange(size, dtype=float)
    inv = 1.0 / (2.0 * sigma**2)
    gx = np.exp(-((local[None, None, :] - ax[..., None]) ** 2) * inv[None, :, None])
    gy = np.exp(-((local[None, None, :] - ay[..., None]) ** 2) * inv[None, :, None]) * amp[None, :, None]
    boxes = np.matmul(gy.transpose(0, 2, 1), gx)  # (n, rows, cols)
    for k in range(xs.size):  # clipped at the grid, for clumps whose members reach past the padding
        r0, c0 = max(y0[k], 0), max(x0[k], 0)
        r1, c1 = min(y0[k] + size, grid[0]), min(x0[k] + size, grid[1])
        if r0 < r1 and c0 < c1:
            out[r0:r1, c0:c1] += boxes[k, r0 - y0[k]:r1 - y0[k], c0 - x0[k]:c1 - x0[k]]
    return out


def _protein_clutter(rng: np.random.Generator, difficulty: Difficulty, area: float, shape: tuple[int, int],
                     off: tuple[int, int], grid: tuple[int, int], radius: float,
                     particle_seed: int) -> tuple[np.ndarray | None, list[tuple[float, float, float]]]:
    """Potential of protein aggregates and fragments (not particles to pick), and their exclusion disks.

    An aggregate is a clump of 4-9 overlapping copies of the particle; a fragment is the
    atoms of one particle nearest a random atom (20-50% of it), as from partly denatured
    protein. Both have the particle's own contrast and texture, so only shape and size tell
    them apart: the false positives that dominate on real grids and on the ASPIRE benchmark.
    Draws nothing from ``rng`` when the preset has neither, so older presets stay identical.
    """
    if difficulty.aggregates == (0, 0) and difficulty.fragments == (0, 0):
        return None, []
    pos, sigma, amp = _particle_model(particle_seed)
    potential = np.zeros(grid)
    disks: list[tuple[float, float, float]] = []
    for _ in range(_stochastic_round(rng, rng.uniform(*difficulty.aggregates) * area)):
        cx, cy = rng.uniform(0, shape[1] - 1), rng.uniform(0, shape[0] - 1)
        k = int(rng.integers(4, 10))
        spread = rng.uniform(0.6, 1.2) * radius
        dx, dy = rng.normal(0, spread, k), rng.normal(0, spread, k)
        potential += _render_atoms(grid, cx + dx + off[1], cy + dy + off[0], _random_rotations(rng, k),
                                   (pos, sigma, amp))
        disks.append((cx, cy, float(np.max(np.hypot(dx, dy))) + radius))
    for _ in range(_stochastic_round(rng, rng.uniform(*difficulty.fragments) * area)):
        cx, cy = rng.uniform(0, shape[1] - 1), rng.uniform(0, shape[0] - 1)
        seed_atom = pos[int(rng.integers(len(pos)))]
        size = max(2, int(rng.uniform(0.2, 0.5) * len(pos)))
        keep = np.argsort(np.linalg.norm(pos - seed_atom, axis=1))[:size]
        part = pos[keep] - pos[keep].mean(0)
        potential += _render_atoms(grid, np.array([cx + off[1]]), np.array([cy + off[0]]),
                                   _random_rotations(rng, 1), (part, sigma[keep], amp[keep]))
        disks.append((cx, cy, float(np.max(np.linalg.norm(part, axis=1))) + 1.2 * float(sigma.max())))
    return potential, disks


# --- CTF -----------------------------------------------------------------------------------------
def _wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength (A) at an acceleration voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))


def _ctf(shape: tuple[int, int], defocus_u: float, defocus_v: float, angle_deg: float,
         b_factor: float) -> np.ndarray:
    """RELION-convention CTF (positive at k=0) times the B envelope, on the rfft2 grid of ``shape``."""
    lam = _wavelength(VOLTAGE_KV)
    ky = np.fft.fftfreq(shape[0], d=PIXEL_SIZE)[:, None]
    kx = np.fft.rfftfreq(shape[1], d=PIXEL_SIZE)[None, :]
    k2 = kx**2 + ky**2
    defocus = 0.5 * (defocus_u + defocus_v) + 0.5 * (defocus_u - defocus_v) * np.cos(
        2 * (np.arctan2(ky, kx) - np.deg2rad(angle_deg)))
    phase_a = np.arctan(AMPLITUDE_CONTRAST / np.sqrt(1 - AMPLITUDE_CONTRAST**2))
    gamma = np.pi * lam * defocus * k2 - 0.5 * np.pi * CS_MM * 1e7 * lam**3 * k2**2 + phase_a
    return np.sin(gamma) * np.exp(-b_factor * k2 / 4)


def _good_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (fast FFT length)."""
    best = 2 ** int(np.ceil(np.log2(n)))
    for p3 in (1, 3, 9, 27):
        for p5 in (1, 5, 25, 125):
            m = p3 * p5
            while m < n:
                m *= 2
            best = min(best, m)
    return best


# --- clutter, ice and placement ------------------------------------------------------------------
def _stochastic_round(rng: np.random.Generator, value: float) -> int:
    """``value`` rounded up with probability equal to its fractional part."""
    base = int(np.floor(value))
    return base + int(rng.random() < value - base)


def _contaminants(rng: np.random.Generator, n: int, shape: tuple[int, int], off: tuple[int, int],
                  grid: tuple[int, int], radius: float) -> tuple[np.ndarray, np.ndarray, list]:
    """Thickness-weighted absorption and phase maps of ``n`` blobs, plus their exclusion disks."""
    absorb = np.zeros(grid)
    phase = np.zeros(grid)
    disks: list[tuple[float, float, float]] = []
    for _ in range(n):
        cx, cy = rng.uniform(0, shape[1] - 1), rng.uniform(0, shape[0] - 1)
        if rng.random() < 0.5:  # a cluster of 2-3 small round balls
            count = int(rng.integers(2, 4))
            blobs: list[tuple[float, float, float, np.ndarray, np.ndarray]] = []  # x, y, r, amps, phases
            for _ in range(count):
                r0 = rng.uniform(0.5, 0.9) * radius
                a = rng.uniform(0, 2 * np.pi)
                d = rng.uniform(0.6, 1.3) * radius if blobs else 0.0
                blobs.append((cx + d * np.cos(a), cy + d * np.sin(a), r0, np.zeros(4), np.zeros(4)))
        else:  # one irregular blob
            r0 = rng.uniform(0.8, 2.2) * radius
            blobs = [(cx, cy, r0, rng.uniform(0, 0.1, 4) / np.arange(1, 5), rng.uniform(0, 2 * np.pi, 4))]
        darkening = rng.uniform(0.15, 0.45)  # fraction of electrons lost at the thickest point
        density = rng.uniform(1.0, 2.0)  # phase per thickness, relative to protein in ice
        for bx, by, r0, amps, phis in blobs:
            rmax = r0 * (1 + amps.sum())
            disks.append((bx, by, rmax))
            gx, gy = bx + off[1], by + off[0]
            c0, c1 = max(int(gx - rmax) - 2, 0), min(int(gx + rmax) + 3, grid[1])
            r0_, r1 = max(int(gy - rmax) - 2, 0), min(int(gy + rmax) + 3, grid[0])
            if c0 >= c1 or r0_ >= r1:
                continue
            dx = np.arange(c0, c1)[None, :] - gx
            dy = np.arange(r0_, r1)[:, None] - gy
            theta = np.arctan2(dy, dx)
            orders = np.arange(2, 2 + amps.size)[:, None, None]
            edge = r0 * (1 + (amps[:, None, None] * np.cos(orders * theta + phis[:, None, None])).sum(0))
            q2 = (dx**2 + dy**2) / edge**2
            h = r0 * np.sqrt(np.clip(1 - q2, 0, None))
            absorb[r0_:r1, c0:c1] += -np.log1p(-darkening) / r0 * h
            phase[r0_:r1, c0:c1] += density * h
    return absorb, phase, disks


def _carbon(rng: np.random.Generator, shape: tuple[int, int], off: tuple[int, int],
            grid: tuple[int, int]) -> np.ndarray | None:
    """Signed distance (px) into the hole for a carbon edge crossing the image, or None."""
    theta = rng.uniform(0, 2 * np.pi)
    n = np.array([np.cos(theta), np.sin(theta)])  # points from the carbon into the hole
    h, w = shape
    extent = 0.5 * (abs(w * n[0]) + abs(h * n[1]))
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    p0 = centre + n * (-extent + 2 * extent * rng.uniform(0.12, 0.35))
    gx = np.arange(grid[1])[None, :] - off[1] - p0[0]
    gy = np.arange(grid[0])[:, None] - off[0] - p0[1]
    if rng.random() < 0.3:
        return gx * n[0] + gy * n[1]
    hole_radius = rng.uniform(1.5, 6.0) * max(h, w)
    return hole_radius - np.hypot(gx - n[0] * hole_radius, gy - n[1] * hole_radius)


def _ice(rng: np.random.Generator, grid: tuple[int, int], amplitude: float) -> np.ndarray:
    """Smooth relative ice-thickness variation: a ramp plus a few broad bumps, about +-amplitude."""
    size = max(grid)
    gx = (np.arange(grid[1]) - grid[1] / 2) / size
    gy = (np.arange(grid[0]) - grid[0] / 2) / size
    a = rng.uniform(0, 2 * np.pi)
    field = np.cos(a) * gx[None, :] + np.sin(a) * gy[:, None]
    for _ in range(3):
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        s = rng.uniform(0.2, 0.45)
        field = field + rng.uniform(-0.6, 0.6) * np.outer(np.exp(-(gy - cy) ** 2 / (2 * s * s)),
                                                          np.exp(-(gx - cx) ** 2 / (2 * s * s)))
    return amplitude * field


def _place_particles(rng: np.random.Generator, shape: tuple[int, int], n_target: int, radius: float,
                     allowed: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     touching: float) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential placement with a minimum separation, some touching pairs, ``allowed`` rule."""
    diameter = 2 * radius
    min_d2 = (MIN_SEPARATION * diameter) ** 2
    lo = np.array([radius, radius])
    hi = np.array([shape[1] - 1 - radius, shape[0] - 1 - radius])
    xs: list[float] = []
    ys: list[float] = []

    def free(x: float, y: float) -> bool:
        if not (lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1]):
            return False
        if xs and np.min((np.asarray(xs) - x) ** 2 + (np.asarray(ys) - y) ** 2) < min_d2:
            return False
        return bool(allowed(np.array([x]), np.array([y]))[0])

    batch = 256
    for _ in range(max(1, 40 * n_target // batch + 1)):
        if len(xs) >= n_target:
            break
        cand = rng.uniform(lo, hi, size=(batch, 2))
        ok = allowed(cand[:, 0], cand[:, 1])
        for x, y in cand[ok]:
            if len(xs) >= n_target:
                break
            if not free(x, y):
                continue
            xs.append(float(x))
            ys.append(float(y))
            if rng.random() < touching and len(xs) < n_target:
                for _ in range(8):
                    a = rng.uniform(0, 2 * np.pi)
                    d = rng.uniform(*TOUCH_DISTANCE) * diameter
                    nx, ny = x + d * np.cos(a), y + d * np.sin(a)
                    if free(nx, ny):
                        xs.append(float(nx))
                        ys.append(float(ny))
                        break
    return np.round(np.asarray(xs), 2), np.round(np.asarray(ys), 2)


# --- one micrograph ------------------------------------------------------------------------------
def _disk_mask(grid: tuple[int, int], xs: np.ndarray, ys: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of the disks of ``radius`` px around (xs, ys) (particles lie inside the grid)."""
    mask = np.zeros(grid, bool)
    r = int(radius)
    rows, cols = np.mgrid[-r:r + 1, -r:r + 1]
    stamp = cols**2 + rows**2 <= radius**2
    for x, y in zip(np.rint(xs).astype(int), np.rint(ys).astype(int), strict=True):
        mask[y - r:y + r + 1, x - r:x + r + 1] |= stamp
    return mask


def _synthesize(rng: np.random.Generator, shape: tuple[int, int], difficulty: Difficulty,
                components: bool = False, particle_seed: int = PARTICLE_SEED) -> _Synthetic:
    """Render one micrograph; with ``components`` also the noise-free image and the particle signal."""
    h, w = shape
    radius = PARTICLE_DIAMETER / 2 / PIXEL_SIZE
    grid = (_good_size(h + 192), _good_size(w + 192))
    off = ((grid[0] - h) // 2, (grid[1] - w) // 2)
    area = h * w / REFERENCE_AREA

    # Acquisition parameters.
    mean_defocus = rng.uniform(*DEFOCUS_RANGE_A)
    astig = rng.uniform(*ASTIGMATISM_RANGE_A)
    defocus_u, defocus_v = mean_defocus + astig / 2, mean_defocus - astig / 2
    angle = rng.uniform(-90.0, 90.0)
    b_factor = rng.uniform(*B_FACTOR_RANGE)
    dose = DOSE_E_PER_A2 * PIXEL_SIZE**2 * rng.uniform(*difficulty.dose_spread)
    snr = difficulty.snr * float(np.exp(rng.normal(0.0, 0.1)))
    fom, max_res = rng.uniform(0.1, 0.3), rng.uniform(3.0, 6.0)

    # Clutter: contaminants, carbon, ice.
    n_cont = _stochastic_round(rng, rng.uniform(*difficulty.contaminants) * area)
    absorb, phase_other, disks = _contaminants(rng, n_cont, shape, off, grid, radius)
    protein, protein_disks = _protein_clutter(rng, difficulty, area, shape, off, grid, radius, particle_seed)
    if protein is not None:
        phase_other += protein
        disks += protein_disks
    has_carbon = rng.random() < difficulty.carbon_probability
    sd = _carbon(rng, shape, off, grid) if has_carbon else None
    thickness = _ice(rng, grid, difficulty.ice_gradient)
    carbon_mask = None
    if sd is not None:
        carbon_mask = 0.5 * (1 - np.tanh(sd / 2.0))
        absorb += carbon_mask * rng.uniform(0.10, 0.20)
        texture = rng.normal(size=grid) * rng.uniform(30.0, 50.0)
        phase_other += carbon_mask * (rng.uniform(20.0, 40.0) + texture)
        thickness += rng.uniform(0.03, 0.08) * np.exp(-np.clip(sd, 0, None) / rng.uniform(60, 150))
    transmission = np.exp(-(thickness - thickness.mean() + absorb))

    # Particles: where the centre may go, how many, then placement.
    cont = np.asarray(disks, dtype=float).reshape(-1, 3)

    def allowed(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ok = np.ones(x.shape, bool)
        if cont.size:
            d2 = (x[:, None] - cont[None, :, 0]) ** 2 + (y[:, None] - cont[None, :, 1]) ** 2
            ok &= np.all(d2 >= (cont[None, :, 2] + 0.9 * radius) ** 2, axis=1)
        if sd is not None:
            ix = np.clip(np.rint(x).astype(int) + off[1], 0, grid[1] - 1)
            iy = np.clip(np.rint(y).astype(int) + off[0], 0, grid[0] - 1)
            ok &= sd[iy, ix] >= radius + 4
        return ok

    # Particle counts are per 1024^2 micrograph; scale by the area where centres may lie.
    inner = (h - 2 * radius) * (w - 2 * radius) / (REFERENCE_SIDE - 2 * radius) ** 2
    probe = rng.uniform([radius, radius], [w - 1 - radius, h - 1 - radius], size=(512, 2))
    free_fraction = float(allowed(probe[:, 0], probe[:, 1]).mean())
    n_target = _stochastic_round(rng, rng.uniform(*difficulty.particles) * max(inner, 0.0) * free_fraction)
    xs, ys = _place_particles(rng, shape, n_target, radius, allowed, difficulty.touching)
    rotations = _random_rotations(rng, xs.size)
    potential = _render_particles(grid, xs + off[1], ys + off[0], rotations, particle_seed)

    # Phase contrast through the CTF; particles are dark (the transfer at k=0 is -A).
    transfer = -_ctf(grid, defocus_u, defocus_v, angle, b_factor)
    crop = (slice(off[0], off[0] + h), slice(off[1], off[1] + w))
    f_particles = np.fft.rfft2(potential)
    c_particles = np.fft.irfft2(transfer * f_particles, s=grid)
    disk = _disk_mask(grid, xs + off[1], ys + off[0], radius)
    if xs.size:
        t_particles = float(transmission[disk].mean())
        power = float((c_particles[disk] ** 2).mean())
    else:  # no particles: calibrate the contrast scale on one virtual particle in the middle
        cx, cy = np.array([grid[1] / 2]), np.array([grid[0] / 2])
        one = _render_particles(grid, cx, cy, np.eye(3)[None], particle_seed)
        virtual = np.fft.irfft2(transfer * np.fft.rfft2(one), s=grid)
        t_particles = float(transmission[crop].mean())
        power = float((virtual[_disk_mask(grid, cx, cy, radius)] ** 2).mean())
    # SNR = dose T s^2 <c^2> / (1 + f T): solve for the contrast scale s.
    f_struct = difficulty.structural_noise
    scale = np.sqrt(snr * (1 + f_struct * t_particles) / (dose * t_particles * power))

    # Structural noise: white phase noise (drawn in Fourier space) seen through the CTF.
    mean_h2 = float(np.mean(transfer**2))
    sigma_n = np.sqrt(f_struct / dose / mean_h2) * np.sqrt(grid[0] * grid[1] / 2)
    noise_f = (rng.normal(size=transfer.shape) + 1j * rng.normal(size=transfer.shape)) * sigma_n
    f_clean = scale * (f_particles + np.fft.rfft2(phase_other))
    contrast = np.fft.irfft2(transfer * (f_clean + noise_f), s=grid)[crop]
    expected = dose * transmission[crop] * np.clip(1 + contrast, 0.05, None)
    image = rng.poisson(expected).astype(np.float32)
    gain, offset = 1.0, 0.0
    if rng.random() < difficulty.rescaled:
        # stored as another program would write it: gain-normalized, dark- or mean-subtracted
        gain = float(np.exp(rng.uniform(np.log(0.25), np.log(4.0))))
        offset = float(rng.uniform(-1.2, 0.5)) * float(image.mean()) * gain
        image = (image * gain + offset).astype(np.float32)

    extra = {}
    if components:
        clean_contrast = np.fft.irfft2(transfer * f_clean, s=grid)[crop]
        clutter = absorb[crop] > 0
        if protein is not None:
            clutter |= protein[crop] > 0.05 * float(protein.max())
        if carbon_mask is not None:
            clutter |= carbon_mask[crop] > 0.5
        extra = dict(clean=gain * dose * transmission[crop] * (1 + clean_contrast) + offset,
                     particle_signal=gain * dose * transmission[crop] * scale * c_particles[crop],
                     clutter=clutter)
    return _Synthetic(image=image, x=xs, y=ys, defocus_u=float(defocus_u), defocus_v=float(defocus_v),
                      defocus_angle=float(angle), figure_of_merit=float(fom), max_resolution=float(max_res),
                      snr_target=float(snr), **extra)


def _micrograph_rng(seed: int, index: int) -> np.random.Generator:
    """Micrograph ``index``'s own generator: the same whatever the number of micrographs."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


# --- writing -------------------------------------------------------------------------------------
# Through the engine's one atomic writer (fsio) and one STAR writer (starfiles): every file is
# fsynced, checked and renamed into place, so an interrupted run leaves no torn file.
def _write_mrc(path: Path, data: np.ndarray) -> None:
    """A float32 (mode 2) MRC with the pixel size in the header, written atomically."""
    from ..io.fsio import atomic_path

    image = np.ascontiguousarray(data, dtype=np.float32)

    def whole(tmp: Path) -> None:  # the 1024-byte header and every pixel, no extended header
        size = tmp.stat().st_size
        if size != 1024 + image.nbytes:
            raise ValueError(f"{size} of {1024 + image.nbytes} bytes on disk")

    with atomic_path(path, verify=whole) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(image)
        mrc.voxel_size = PIXEL_SIZE


def generate_demo_data(outdir: str | Path, n_micrographs: int = 12, preset: str = "medium", seed: int = 0,
                       shape: tuple[int, int] = (1024, 1024), particle_seed: int = PARTICLE_SEED) -> DemoData:
    """Write synthetic micrographs, a RELION 3.1 CtfFind-style STAR file and ground truth to ``outdir``.

    ``particle_seed`` chooses the particle (the default is the demo's own; see ``_particle_model``).

    Files: ``Micrographs/mic_000.mrc`` ..., ``micrographs_ctf.star`` (micrograph paths relative to
    ``outdir``), ``truth.txt`` (Topaz tab text) and ``truth/mic_000.star`` (RELION coordinates).
    """
    if preset not in PRESETS:
        raise SettingsError(f"unknown demo preset {preset!r}; choose from {', '.join(PRESETS)}")
    if int(n_micrographs) < 1:
        raise SettingsError("the number of demo micrographs must be >= 1")
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 2 * PARTICLE_DIAMETER / PIXEL_SIZE + 28:
        raise SettingsError(f"demo micrographs must be at least "
                            f"{int(2 * PARTICLE_DIAMETER / PIXEL_SIZE + 28)} pixels on a side")
    from ..io.fsio import write_atomic
    from ..io.starfiles import write_star

    difficulty = PRESETS[preset]
    outdir = Path(outdir).resolve()
    (outdir / "Micrographs").mkdir(parents=True, exist_ok=True)
    (outdir / "truth").mkdir(parents=True, exist_ok=True)

    entries: list[MicrographEntry] = []
    rows: list[dict] = []
    tables: list[Picks] = []
    for i in range(int(n_micrographs)):
        name = f"mic_{i:03d}"
        mic = _synthesize(_micrograph_rng(seed, i), shape, difficulty, particle_seed=int(particle_seed))
        path = outdir / "Micrographs" / f"{name}.mrc"
        _write_mrc(path, mic.image)
        write_star(pd.DataFrame({"rlnCoordinateX": mic.x, "rlnCoordinateY": mic.y}),
                   outdir / "truth" / f"{name}.star", layout="relion31")
        entries.append(MicrographEntry(path, name=name, pixel_size=PIXEL_SIZE))
        tables.append(Picks.for_one(name, mic.x, mic.y))
        rows.append({
            "rlnMicrographName": f"Micrographs/{name}.mrc",
            "rlnOpticsGroup": 1,
            "rlnDefocusU": mic.defocus_u,
            "rlnDefocusV": mic.defocus_v,
            "rlnCtfAstigmatism": abs(mic.defocus_u - mic.defocus_v),
            "rlnDefocusAngle": mic.defocus_angle,
            "rlnCtfFigureOfMerit": mic.figure_of_merit,
            "rlnCtfMaxResolution": mic.max_resolution,
        })

    optics = pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnOpticsGroup": [1],
        "rlnMicrographOriginalPixelSize": [PIXEL_SIZE],
        "rlnVoltage": [VOLTAGE_KV],
        "rlnSphericalAberration": [CS_MM],
        "rlnAmplitudeContrast": [AMPLITUDE_CONTRAST],
        "rlnMicrographPixelSize": [PIXEL_SIZE],
    })
    star_path = outdir / "micrographs_ctf.star"
    write_star({"optics": optics, "micrographs": pd.DataFrame(rows)}, star_path, layout="relion31")

    truth = Picks.concat(tables)
    lines = ["image_name\tx_coord\ty_coord"]
    lines += [f"{n}\t{x:.2f}\t{y:.2f}" for n, x, y in zip(truth.micrograph, truth.x, truth.y, strict=True)]
    truth_file = outdir / "truth.txt"
    write_atomic(truth_file, "\n".join(lines) + "\n")
    return DemoData(outdir=outdir, micrographs_star=star_path, micrographs=entries, truth=truth,
                    truth_file=truth_file, particle_diameter=PARTICLE_DIAMETER, pixel_size=PIXEL_SIZE,
                    preset=preset)
