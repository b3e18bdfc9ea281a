"""The engine's entry points: train, extract, evaluate. Hosts call these and nothing deeper."""

from __future__ import annotations

import logging
import math
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

from torch.utils.data import Dataset

from .errors import AbortRequested, InputError, SettingsError
from .io.coordinates import match_micrograph_names
from .io.picks import Picks
from .network.model_io import PickerModel, load_model
from .parallel.device import resolve_device, tune_allocator
from .pick.nms import find_peaks
from .pick.scoring import prepare_engine, score_batch
from .prep.preprocess import PreparedMicrograph, original_pixel_size, prepare_micrographs, prepare_one
from .settings import (
    ExtractSettings,
    MicrographEntry,
    PreprocessSettings,
    Progress,
    ShouldStop,
    TrainSettings,
)
from .training.outputs import MODEL_FILE, TrainResult
from .training.run import train_model
from .training.thresholds import format_threshold_table

log = logging.getLogger(__name__)


#: pixel sizes (A/px) outside this range are not a micrograph's: a header or list value is wrong
PLAUSIBLE_PIXEL_SIZE = (0.05, 100.0)


def _warn_pixel_size(entry: MicrographEntry, psize: float | None) -> bool:
    low, high = PLAUSIBLE_PIXEL_SIZE
    if psize is not None and not low <= psize <= high:
        log.warning("%s: pixel size %g A/px is implausible for a micrograph (expected %g-%g A/px); picks "
                    "will be meaningless: fix the MRC header or give the pixel size in the micrograph list",
                    entry.path, psize, low, high)
        return True
    return False


def _check_pixel_sizes(entries: Sequence[MicrographEntry]) -> None:
    for entry in entries:
        psize = original_pixel_size(entry)
        if psize is None:
            raise InputError("pixel size unknown (not in the MRC header or the micrograph list), so the "
                             "particle diameter in A cannot be converted to pixels; set the pixel size",
                             entry.path)
        _warn_pixel_size(entry, psize)


def _check_scale(entries: Sequence[MicrographEntry], settings: TrainSettings) -> None:
    """The particle diameter and the expected count make sense for these micrographs (checked before
    anything is computed, so the message names the setting, not a symptom of it)."""
    from .io.micrograph import read_header

    for entry in entries[:1]:
        (ny, nx), _ = read_header(entry.path)
        psize = original_pixel_size(entry) or 1.0
        diameter_px = settings.particle_diameter / psize
        if diameter_px > min(nx, ny):
            raise SettingsError(f"particle diameter {settings.particle_diameter:g} A is {diameter_px:.0f} px "
                                f"at {psize:g} A/px, larger than the {nx}x{ny} micrograph {entry.name}: give "
                                "the diameter in A (not px) and check the pixel size")
        capacity = nx * ny / (math.pi * (diameter_px / 2) ** 2)
        expected = settings.expected_particles
        if expected is not None and expected > capacity:
            raise SettingsError(f"expected particles {expected:g} per micrograph cannot fit: at most "
                                f"~{capacity:.0f} particles of {settings.particle_diameter:g} A fit on a "
                                f"{nx}x{ny} micrograph at {psize:g} A/px; check --expected-particles")
        if expected is not None and expected > 0.5 * capacity:
            log.warning("expected particles %g per micrograph would cover more than half of a %dx%d "
                        "micrograph; check --expected-particles and the diameter", expected, nx, ny)


def train(micrographs: Sequence[MicrographEntry], labels: Picks, preprocess: PreprocessSettings,
          settings: TrainSettings, workdir: str | Path, progress: Progress | None = None,
          should_stop: ShouldStop | None = None) -> TrainResult:
    """Train a PU classifier on ``micrographs`` with labelled particles ``labels``.

    Writes ``model.pupick``, ``checkpoint.pt``, ``training_history.json``,
    ``threshold_table.tsv`` and ``train_settings.json`` into ``workdir``; resumes from a
    checkpoint left by an interrupted run with the same settings.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    micrographs = list(micrographs)
    if not micrographs:
        raise InputError("no micrographs to train on")
    if len(labels) == 0:
        raise InputError("no labelled particles: training needs at least a few dozen")
    labels = match_micrograph_names(labels, micrographs)
    if len(labels) == 0:
        raise InputError("none of the labelled particles belongs to a listed micrograph "
                         "(check that coordinate file names match micrograph names)")
    labelled = [m for m in micrographs if m.name in set(labels.micrograph)]
    _check_pixel_sizes(labelled)
    _check_scale(labelled, settings)
    log.info("training on %d labelled particles in %d micrographs", len(labels), len(labelled))
    prepared, gmm = prepare_micrographs(labelled, preprocess, settings.particle_diameter, progress=progress)
    _check_labels_inside(prepared, labels)
    mixture = None if gmm is None else gmm.to_dict()
    return train_model(prepared, labels, settings, preprocess, workdir, mixture, progress, should_stop)


def _check_labels_inside(prepared: Sequence[PreparedMicrograph], labels: Picks) -> None:
    for p in prepared:
        one = labels.for_micrograph(p.name)
        h, w = p.original_shape
        outside = (one.x < 0) | (one.y < 0) | (one.x >= w) | (one.y >= h)
        if outside.any():
            log.warning("%s: %d labelled coordinate(s) lie outside the %dx%d micrograph and are ignored",
                        p.name, int(outside.sum()), w, h)


def _model_preprocess(model: PickerModel, override: PreprocessSettings | None) -> PreprocessSettings:
    if override is not None:
        return override
    info = model.info
    normalization = info.get("normalization", "standard")
    if info.get("pixel_size"):
        return PreprocessSettings(pixel_size=float(info["pixel_size"]), normalization=normalization)
    return PreprocessSettings(downsample=float(info.get("downsample") or 1.0), normalization=normalization)


#: False: prepare micrographs in the consuming thread (the serial path; benchmarks compare it)
_PREFETCH = True


def _prepare_or_error(entry: MicrographEntry, pre: PreprocessSettings, diameter: float,
                      gmm: object) -> PreparedMicrograph | BaseException:
    try:
        return prepare_one(entry, pre, diameter, gmm)  # type: ignore[arg-type]
    except Exception as exc:  # handed to the consumer, raised in micrograph order
        return exc


class _PrepareDataset(Dataset[tuple[int, PreparedMicrograph | BaseException]]):
    """Micrograph i -> (i, prepared or the exception) for a torch DataLoader's workers."""

    def __init__(self, entries: Sequence[MicrographEntry], pre: PreprocessSettings, diameter: float,
                 gmm: object) -> None:
        self.entries, self.pre, self.diameter, self.gmm = list(entries), pre, diameter, gmm

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[int, PreparedMicrograph | BaseException]:
        return i, _prepare_or_error(self.entries[i], self.pre, self.diameter, self.gmm)


def _identity(item: object) -> object:
    return item


def _prepared_batches(entries: Sequence[MicrographEntry], pre: PreprocessSettings, diameter: float,
                      gmm: object, batch_size: int,
                      num_workers: int) -> Generator[list[PreparedMicrograph | BaseException], None, None]:
    """Batches of prepared micrographs in input order, read and preprocessed ahead of use.

    ``num_workers`` 0: one background thread prepares the next batch while the caller
    scores this one (numpy's FFT and file reads release the GIL). ``num_workers`` N > 0:
    a torch DataLoader with N worker processes (for many-core hosts feeding a GPU).
    Either way the order, and every value, is that of the serial path; a micrograph that
    cannot be read is raised when its batch is reached, as serially.
    """
    batches = [entries[i : i + batch_size] for i in range(0, len(entries), batch_size)]
    if not _PREFETCH or not batches:
        for batch in batches:
            yield [_prepare_or_error(e, pre, diameter, gmm) for e in batch]
        return
    if num_workers > 0:
        import torch
        from torch.utils.data import DataLoader

        loader = DataLoader(_PrepareDataset(entries, pre, diameter, gmm), batch_size=None, shuffle=False,
                            num_workers=num_workers, collate_fn=_identity, prefetch_factor=max(2, batch_size),
                            # a private generator leaves the global random stream alone
                            generator=torch.Generator().manual_seed(0))
        iterator = iter(loader)
        try:
            for batch in batches:
                yield [next(iterator)[1] for _ in batch]
        finally:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pupick-prefetch") as pool:
        pending = [pool.submit(_prepare_or_error, e, pre, diameter, gmm) for e in batches[0]]
        try:
            for k in range(len(batches)):
                current = [f.result() for f in pending]
                pending = ([pool.submit(_prepare_or_error, e, pre, diameter, gmm) for e in batches[k + 1]]
                           if k + 1 < len(batches) else [])
                yield current
        finally:
            for f in pending:
                f.cancel()


def extract_iter(model: PickerModel | str | Path, micrographs: Sequence[MicrographEntry],
                 settings: ExtractSettings = ExtractSettings(), preprocess: PreprocessSettings | None = None,
                 progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> Iterator[tuple[MicrographEntry, Picks]]:
    """Pick particles micrograph by micrograph (original-pixel coordinates, logit scores).

    Micrographs are rescaled to the model's working pixel size, scored in batches of
    ``settings.batch_size`` (read and preprocessed ahead, see ``settings.num_workers``,
    while the previous batch is scored), and peaks closer than the NMS radius are
    suppressed on the scoring device. Results come in input order and do not depend on
    batch size, workers or CPU threads.
    """
    if not isinstance(model, PickerModel):
        model = load_model(model)
    device = resolve_device(settings.device)
    tune_allocator()  # whole-micrograph activations: reuse freed blocks instead of fresh page faults
    net = model.net.to(device).eval()
    engine = prepare_engine(net, device)
    pre = _model_preprocess(model, preprocess)
    gmm = model.gmm if pre.normalization == "gmm" else None
    threshold = (settings.threshold if settings.threshold is not None
                 else float(model.info.get("recommended_threshold", 0.0)))
    radius = settings.radius or max(1, int(round(model.particle_radius_px)))
    margin = settings.edge_margin
    entries = list(micrographs)
    diameter = float(model.info["particle_diameter"])
    log.info("picking %d micrograph(s) at threshold %.2f, NMS radius %d working px",
             len(entries), threshold, radius)
    stream = _prepared_batches(entries, pre, diameter, gmm, settings.batch_size, settings.num_workers)
    picked = 0
    warned: set[Path] = set()
    try:
        for start, outcomes in zip(range(0, len(entries), settings.batch_size), stream, strict=True):
            if should_stop is not None and should_stop():
                raise AbortRequested("stopped between micrographs; finished micrographs are kept")
            batch = entries[start : start + settings.batch_size]
            prepared: list[PreparedMicrograph] = []
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
                prepared.append(outcome)
            small = [p for p in prepared if min(p.image.shape) < 2 * radius + 1]
            for p in small:
                log.warning("%s: working image %s is smaller than a particle; no picks",
                            p.name, p.image.shape)
            for entry, p in zip(batch, prepared, strict=True):
                if p.working_pixel_size and entry.path not in warned:
                    warned.add(entry.path)
                    _warn_pixel_size(entry, p.working_pixel_size / p.scale[0])
            maps = score_batch(engine, [p.image for p in prepared], device,
                               tile_size=settings.tile_size, symmetries=settings.symmetries)
            for i, (entry, p, smap) in enumerate(zip(batch, prepared, maps, strict=True)):
                if i and should_stop is not None and should_stop():
                    raise AbortRequested("stopped between micrographs; finished micrographs are kept")
                rows, cols, scores = find_peaks(smap, radius=radius, threshold=threshold, edge_margin=margin,
                                                max_picks=settings.max_picks)
                if any(p is q for q in small):  # as warned: no particle fits, so no peak is a pick
                    rows, cols, scores = rows[:0], cols[:0], scores[:0]
                x, y = p.to_original(cols, rows)
                if progress:
                    progress(start + i + 1, len(entries), f"{entry.name}: {len(x)} picks")
                picked += len(x)
                yield entry, Picks.for_one(entry.name, x, y, scores)
        if entries and picked == 0:
            log.warning("no particle scored above the threshold %.2f on any of the %d micrograph(s): the "
                        "settings picked nothing (lower the threshold; the model recommends %.2f)", threshold,
                        len(entries), float(model.info.get("recommended_threshold", 0.0)))
    finally:
        stream.close()


def extract(model: PickerModel | str | Path, micrographs: Sequence[MicrographEntry],
            settings: ExtractSettings = ExtractSettings(), preprocess: PreprocessSettings | None = None,
            progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Picks:
    """All picks of all micrographs in one table (see :func:`extract_iter`)."""
    picks = extract_iter(model, micrographs, settings, preprocess, progress, should_stop)
    return Picks.concat(p for _, p in picks)




__all__ = ["train", "extract", "extract_iter", "TrainResult", "format_threshold_table",
           "MODEL_FILE"]
