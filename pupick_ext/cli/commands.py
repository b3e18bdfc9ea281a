"""pupick: positive-unlabeled CNN particle picking for cryo-EM.

A typical run trains on a few hundred hand-picked particles, then picks every micrograph:

\b
    pupick train   -m micrographs_ctf.star -l manualpick/ --particle-diameter 150 -o model/
    pupick extract -m micrographs_ctf.star --model model/model.pupick -o picks/ --format star
    pupick evaluate --picks picks/ --reference truth.txt --radius 50

Try it on built-in synthetic data first: ``pupick demo``.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..click_render import FiniteFloat, click_option, click_options
from ..errors import PupickError, SettingsError
from ..parameters import parameters_for, settings_from
from ..settings import ExtractSettings, PreprocessSettings, TrainSettings

log = logging.getLogger("pupick")

MICROGRAPHS_HELP = ("Micrographs: a RELION micrographs STAR file, a text file of paths, a directory of .mrc "
                    "files, or .mrc files (repeatable).")


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbose < 2:
        logging.getLogger("matplotlib").setLevel(logging.WARNING)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a PupickError into one line on stderr and exit code 1 (traceback only with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except PupickError as exc:
            if debug:
                raise
            click.echo(f"pupick: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("pupick: interrupted", err=True)
            sys.exit(130)
        except MemoryError:
            if debug:
                raise
            click.echo("pupick: error: out of memory; use a smaller --batch-size or --tile-size", err=True)
            sys.exit(1)
        except OSError as exc:  # the file system refused (full, read-only, permissions): not a bug
            if debug:
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            click.echo(f"pupick: error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)

    return wrapper


FINITE = FiniteFloat()
POSITIVE = FiniteFloat(0.0, low_open=True)


class _Group(click.Group):
    """pupick's group: a usage error (bad option value, unknown option) is one line too."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"pupick: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pupick")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def main(verbose: int, quiet: bool, debug: bool) -> None:
    __doc__  # noqa: B018  (the module docstring is the group's help)
    _configure_logging(verbose, quiet)


main.help = __doc__


def micrographs_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-m", "--micrographs", "micrographs", multiple=True, required=True,
                        type=click.Path(path_type=Path), help=MICROGRAPHS_HELP)(func)


#: the scale and normalization options every command that reads micrographs shares
scale_options = click_options(["pixel_size", "downsample", "normalization"])
threads_option = click_option("threads")


def _entries(sources: tuple[Path, ...]):
    from ..io.micrograph_list import read_micrograph_list

    return read_micrograph_list(list(sources) if len(sources) > 1 else sources[0])


def _reporter(label: str):
    from ..progress import ProgressReporter

    return ProgressReporter(label)


def _rank_setup(device: str, threads: int):
    """Rank, device and threads of this process (torchrun, srun, mpirun: see
    pupick_ext.parallel.distributed)."""
    from ..parallel.distributed import default_threads, rank_device, rank_info

    ranks = rank_info()
    if ranks.active:
        device = rank_device(device, ranks)
        threads = threads or default_threads(ranks)
        fmt = f"%(asctime)s [rank {ranks.rank}/{ranks.world_size}] %(levelname)-7s %(message)s"
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
        log.info("%s: device %s, %s CPU thread(s)", ranks.describe(), device, threads or "default")
    return ranks, device, threads


def _save_run_record(outdir: Path, command: str, params: dict[str, Any]) -> None:
    """``<command>_run.json`` beside the outputs: version, command line and every option's value."""
    from ..io.run_record import write_run_record

    write_run_record(outdir / f"{command}_run.json",
                     {"version": __version__, "command": command, "argv": sys.argv, "params": params})


# ------------------------------------------------------------------ preprocess
@main.command(short_help="Downsample and normalize micrographs (what the network sees).")
@micrographs_option
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output directory.")
@scale_options
@click_option("particle_diameter", help="Particle diameter in A (sets the default scale).")
@click_option("seed")
@handle_errors
def preprocess(micrographs: tuple[Path, ...], output: Path, particle_diameter: float | None,
               **options: Any) -> None:
    """Downsample and normalize micrographs to working MRC files (what the network sees).

    \b
    Example: pupick preprocess -m micrographs_ctf.star --downsample 4 -o preprocessed/
    """
    import mrcfile

    from ..io.fsio import atomic_path, check_output_dir
    from ..io.micrograph import read_header
    from ..prep.preprocess import prepare_micrographs

    check_output_dir(output)
    entries = _entries(micrographs)
    settings = settings_from(PreprocessSettings, options)
    progress = _reporter("preprocess")
    prepared, gmm = prepare_micrographs(entries, settings, particle_diameter, progress=progress)
    output.mkdir(parents=True, exist_ok=True)
    for p in prepared:
        with atomic_path(output / f"{p.name}.mrc", verify=read_header) as tmp:
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(p.image)
                if p.working_pixel_size:
                    mrc.voxel_size = p.working_pixel_size
    _save_run_record(output, "preprocess", {**click.get_current_context().params,
                                            "gmm": None if gmm is None else gmm.to_dict()})
    log.info("wrote %d preprocessed micrograph(s) to %s", len(prepared), output)


# ------------------------------------------------------------------ convert
@main.command(short_help="Convert coordinates between formats and pixel grids.")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@click.option("--from", "from_fmt", type=click.Choice(["txt", "star", "box"]), default=None,
              help="Input format (default: from the extension).")
@click.option("--to", "to_fmt", type=click.Choice(["txt", "star", "box"]), default=None,
              help="Output format (default: from the extension; required for a directory).")
@click.option("--scale", type=POSITIVE, default=1.0, show_default=True,
              help="Multiply coordinates by this (e.g. 4 to go from 4x-binned to unbinned pixels).")
@click.option("--box-size", type=int, default=None, help="Box size in pixels (EMAN .box output).")
@click.option("--suffix", default="",
              help="Per-micrograph file suffix when DESTINATION is a directory, e.g. _pupick.")
@click.option("--threshold", type=FINITE, default=None, help="Keep only picks with at least this score.")
@handle_errors
def convert(source, destination, from_fmt, to_fmt, scale, box_size, suffix, threshold):
    """Convert coordinates between Topaz text, RELION STAR and EMAN .box (and pixel grids).

    SOURCE is a file or a directory of per-micrograph files. A DESTINATION ending in '/'
    or without an extension gets one file per micrograph.

    \b
    Example: pupick convert picks.txt star_dir/ --to star --suffix _pupick
    """
    from ..io.coordinates import read_coordinates, write_coordinates, write_coordinates_per_micrograph
    from ..io.fsio import check_output_dir, check_output_file

    per_micrograph = str(destination).endswith("/") or destination.is_dir() or not destination.suffix
    if per_micrograph:
        check_output_dir(destination, "destination directory")
    else:
        check_output_file(destination, "destination")
    picks = read_coordinates(source, from_fmt)
    if threshold is not None:
        picks = picks.above(threshold)
    if scale != 1.0:
        picks = picks.scaled(scale)
    if per_micrograph:
        if to_fmt is None:
            raise SettingsError("give --to when writing one file per micrograph into a directory")
        files = write_coordinates_per_micrograph(picks, destination, to_fmt, suffix, box_size=box_size)
        log.info("wrote %d picks to %d file(s) in %s", len(picks), len(files), destination)
    else:
        write_coordinates(picks, destination, to_fmt, box_size)
        log.info("wrote %d picks to %s", len(picks), destination)


# ------------------------------------------------------------------ train
@main.command(short_help="Train a picker from a few hundred labelled particles.")
@micrographs_option
@click.option("-l", "--labels", type=click.Path(path_type=Path), required=True,
              help="Labelled particles: a coordinate file (.txt/.star/.box), a particles STAR, or a "
                   "directory of them.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output directory for the model.")
@click_option("particle_diameter", required=True, help="Particle diameter in A.")
@click_options(p for p in parameters_for(TrainSettings, PreprocessSettings) if p.name != "particle_diameter")
@handle_errors
def train(micrographs: tuple[Path, ...], labels: Path, output: Path, **options: Any) -> None:
    """Train a classifier from micrographs and a few hundred labelled particles.

    Writes OUTPUT/model.pupick, a threshold table (threshold -> particles per micrograph
    and held-out recall, with a recommended threshold), training curves as PNG, and a
    checkpoint: re-running the same command after an interruption resumes.

    Launched by torchrun (torchrun --nproc_per_node N pupick train ...), the N processes
    train one model with DistributedDataParallel (one GPU each, or CPU with gloo); rank 0
    writes the outputs.

    \b
    Example: pupick train -m micrographs_ctf.star -l manualpick/ -d 150 -n 80 -o model/
    """
    from ..api import train as run_train
    from ..errors import InputError
    from ..io.coordinates import match_micrograph_names, read_coordinates
    from ..io.fsio import check_output_dir
    from ..parallel.signals import stop_on_signals
    from ..reports import plot_threshold_table, plot_training

    ranks, device, threads = _rank_setup(options["device"], options["threads"])
    if ranks.active:
        from ..parallel.distributed import init_process_group

        if not init_process_group(ranks, device):
            raise SettingsError(f"{ranks.describe()}: training on several processes needs a rendezvous "
                                "(MASTER_ADDR and MASTER_PORT, as torchrun sets them); launch it with "
                                "torchrun or as one process")
    if ranks.is_main:
        check_output_dir(output)
    entries = _entries(micrographs)
    label_picks = read_coordinates(labels)
    if len(label_picks) == 0:
        raise InputError("holds no labelled particles; training needs at least a few dozen", labels)
    if len(match_micrograph_names(label_picks, entries)) == 0:
        raise InputError("none of its labelled particles belongs to a listed micrograph (coordinate file "
                         f"names or image_name must match micrograph names such as {entries[0].name!r})",
                         labels)
    settings = settings_from(TrainSettings, options, device=device, num_threads=threads)
    pre = settings_from(PreprocessSettings, options, cache_dir=output / "cache")
    with stop_on_signals() as stop:
        result = run_train(entries, label_picks, pre, settings, output,
                           progress=_reporter("train") if ranks.is_main else None, should_stop=stop)
    if not ranks.is_main:
        return
    plot_training(result.history, output / "training_curve.png")
    plot_threshold_table(result.threshold_table, output / "threshold_table.png", result.recommended_threshold)
    _save_run_record(output, "train", click.get_current_context().params)
    click.echo(_threshold_summary(result))


def _threshold_summary(result) -> str:
    lines = ["", "threshold  particles/micrograph  held-out recall"]
    for t, n, r in result.threshold_table:
        if t == int(t) or t == result.recommended_threshold:
            mark = "  <- recommended" if t == result.recommended_threshold else ""
            lines.append(f"{t:9g}  {n:20.1f}  {r:15.3f}{mark}")
    lines.append(f"model: {result.model_path}   recommended threshold: {result.recommended_threshold:g}")
    return "\n".join(lines)


# ------------------------------------------------------------------ extract
@main.command(short_help="Pick particles with a trained model (or the DoG baseline).")
@micrographs_option
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="A model.pupick file from 'pupick train' (not needed with --method dog).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="A coordinate file (.txt/.star), or a directory for one file per micrograph.")
@click.option("--format", "fmt", type=click.Choice(["txt", "star", "box"]), default=None,
              help="Output format (default: from the extension; star for a directory).")
@click.option("--suffix", default="", help="Per-micrograph file name suffix, e.g. _pupick.")
@click_options(["threshold", "radius", "edge_margin", "max_picks", "batch_size", "symmetries", "tile_size",
                "workers"])
@click.option("--box-size", type=int, default=None, help="Box size in original pixels (for .box output).")
@click.option("--method", type=click.Choice(["pupick", "dog"]), default="pupick", show_default=True,
              help="'dog' = difference-of-Gaussians baseline (needs --particle-diameter, no model).")
@click_option("particle_diameter", help="Particle diameter in A (for --method dog).")
@scale_options
@click_option("device")
@click.option("--overwrite", is_flag=True,
              help="Re-pick micrographs that already have a coordinate file in the output directory.")
@threads_option
@handle_errors
def extract(micrographs: tuple[Path, ...], model_path: Path | None, output: Path, fmt: str | None,
            suffix: str, box_size: int | None, method: str, particle_diameter: float | None,
            pixel_size: float | None, downsample: float | None, normalization: str, overwrite: bool,
            **options: Any) -> None:
    """Pick particles on micrographs with a trained model.

    Coordinates are written in unbinned pixels of the original micrographs, with the
    score (log-likelihood ratio) as figure of merit. With a directory as output, each
    micrograph's file is written as soon as it is picked, and a re-run skips micrographs
    that already have one (so an interrupted run just continues).

    Launched as N processes (torchrun --nproc_per_node N, srun, mpirun), rank r picks
    micrographs r, r+N, ...; rank 0 waits for all and writes a single output file. The
    output is the same, byte for byte, as one process writes.

    \b
    Example: pupick extract -m micrographs_ctf.star --model model/model.pupick -o picks.star
    """
    from ..io.coordinates import write_coordinates, write_coordinates_per_micrograph
    from ..io.fsio import check_output_dir, check_output_file
    from ..io.picks import Picks
    from ..parallel.device import set_threads
    from ..parallel.sharding import pick_sharded
    from ..parallel.signals import stop_on_signals
    from ..settings import MicrographEntry

    ranks, device, threads = _rank_setup(options["device"], options["threads"])
    set_threads(threads)
    per_micrograph = str(output).endswith("/") or output.is_dir() or not output.suffix
    if per_micrograph:
        check_output_dir(output)
    else:
        check_output_file(output)
    all_entries = _entries(micrographs)
    settings = settings_from(ExtractSettings, options, device=device)
    threshold = settings.threshold
    fmt = fmt or ("star" if per_micrograph else None)
    coordinator = None
    if ranks.active:
        from ..parallel.distributed import Coordinator

        coordinator = Coordinator(ranks, output if per_micrograph else output.parent)
    if method == "dog":
        from ..pick.baseline import dog_extract

        if particle_diameter is None:
            raise SettingsError("--method dog needs --particle-diameter")
        pre = PreprocessSettings(pixel_size=pixel_size, downsample=downsample, normalization="standard")
    else:
        if model_path is None:
            raise SettingsError("give --model (a model.pupick file from 'pupick train')")
        override = None
        if pixel_size is not None or downsample is not None:
            override = PreprocessSettings(pixel_size=pixel_size, downsample=downsample,
                                          normalization=normalization)  # type: ignore[arg-type]

    def file_of(entry: MicrographEntry) -> Path:
        return output / f"{entry.name}{suffix}.{fmt}"

    def say_skipped(todo: list[MicrographEntry], done: list[MicrographEntry]) -> None:
        if done:
            log.info("%d micrograph(s) already have coordinate files in %s: skipped (--overwrite to redo)",
                     len(done), output)
            _warn_if_all_empty(output, [file_of(e) for e in done])

    def write(entry: MicrographEntry, picks: Picks) -> None:  # complete as soon as it is picked
        assert fmt is not None
        write_coordinates_per_micrograph(picks, output, fmt, suffix, names=[entry.name], box_size=box_size)

    with stop_on_signals() as stop:

        def pick(todo: list[MicrographEntry]) -> Iterator[tuple[MicrographEntry, Picks]]:
            if method == "dog":
                assert particle_diameter is not None
                return ((e, dog_extract([e], particle_diameter, pre, settings)) for e in todo)
            from ..api import extract_iter

            assert model_path is not None
            return extract_iter(model_path, todo, settings, override, progress=_reporter("extract"),
                                should_stop=stop)

        skip = per_micrograph and not overwrite
        result = pick_sharded(all_entries, pick, key=lambda e: e.name, name="extract", ranks=ranks,
                              coordinator=coordinator,
                              finished=(lambda e: file_of(e).exists()) if skip else None,
                              on_skip=say_skipped, write=write if per_micrograph else None,
                              combine=not per_micrograph, should_stop=stop)
    if not result.main:  # its files are written, rank 0 combines
        log.info("%d picks on %d micrograph(s); rank 0 writes the combined output", result.n_picks,
                 result.n_micrographs)
        return
    total, n_picked = result.n_picks, result.n_micrographs
    if total == 0 and n_picked > 0:
        at = f"threshold {threshold:g}" if threshold is not None else "the model's recommended threshold"
        log.warning("no particles picked on any of the %d micrograph(s) at %s: the settings pick nothing "
                    "(lower --threshold, check --max-picks / --edge-margin, or the model)", n_picked, at)
    if per_micrograph:
        log.info("wrote %d picks for %d micrograph(s) to %s", total, n_picked, output)
    else:
        write_coordinates(result.picks, output, fmt, box_size)
        log.info("wrote %d picks on %d micrograph(s) to %s", total, len(all_entries), output)


def _warn_if_all_empty(output: Path, files: list[Path]) -> None:
    """Skipping finished micrographs is right for a resumed run, wrong after a run that picked
    nothing (e.g. a threshold too high): say so, so the re-run is never silently a no-op."""
    from ..io.coordinates import read_coordinates

    empty = 0
    for path in files:
        try:
            empty += len(read_coordinates(path)) == 0
        except PupickError:
            continue
    if empty == len(files):
        log.warning("all %d skipped coordinate file(s) in %s are empty (an earlier run picked nothing "
                    "there); add --overwrite to pick them again", len(files), output)


# ------------------------------------------------------------------ evaluate
@main.command(short_help="Precision, recall, F1 and AP against reference picks.")
@click.option("-p", "--picks", "picks_path", type=click.Path(path_type=Path), required=True,
              help="Picks (file or directory) with scores.")
@click.option("-r", "--reference", type=click.Path(path_type=Path), required=True,
              help="Reference coordinates (file or directory).")
@click.option("--radius", type=POSITIVE, default=None,
              help="Matching radius in original pixels (default: particle radius from --particle-diameter "
                   "and --pixel-size).")
@click.option("-d", "--particle-diameter", type=POSITIVE, default=None, help="Particle diameter in A.")
@click.option("--pixel-size", type=POSITIVE, default=None, help="Micrograph pixel size in A/px.")
@click.option("-t", "--threshold", type=FINITE, default=None, help="Score threshold for precision/recall/F1.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Directory for pr_curve.csv and pr_curve.png.")
@handle_errors
def evaluate(picks_path, reference, radius, particle_diameter, pixel_size, threshold, output):
    """Precision, recall, F1 and average precision of picks against reference coordinates.

    Each reference particle matches at most one pick within the radius (best score first).

    \b
    Example: pupick evaluate -p picks.txt -r truth.txt -d 150 --pixel-size 1.5 -o eval/
    """
    from ..io.coordinates import read_coordinates
    from ..pick.evaluation import evaluate as run_evaluate
    from ..reports import plot_pr_curve

    if radius is None:
        if particle_diameter is None or pixel_size is None:
            raise SettingsError("give --radius, or --particle-diameter and --pixel-size")
        radius = particle_diameter / 2 / pixel_size
    if output is not None:
        from ..io.fsio import check_output_dir

        check_output_dir(output)
    picks = read_coordinates(picks_path)
    ref = read_coordinates(reference)
    full = run_evaluate(picks, ref, radius)
    at = run_evaluate(picks.above(threshold), ref, radius) if threshold is not None else full
    click.echo(f"picks {at.n_picks}  reference {at.n_reference}  matched {at.n_true_positive}  "
               f"radius {radius:g} px")
    click.echo(f"precision {at.precision:.3f}  recall {at.recall:.3f}  F1 {at.f1:.3f}  "
               f"average precision {full.average_precision:.3f}")
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        full.to_csv(output / "pr_curve.csv")
        plot_pr_curve(full, output / "pr_curve.png")
        log.info("wrote %s and %s", output / "pr_curve.csv", output / "pr_curve.png")


# ------------------------------------------------------------------ demo
@main.command(short_help="Run the whole workflow on built-in synthetic data.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("pupick_demo"),
              show_default=True, help="Directory for the demo data and results.")
@click.option("--preset", type=click.Choice(["easy", "medium", "hard"]), default="medium", show_default=True)
@click.option("--quick", is_flag=True, help="A much shorter run (smoke test; lower AP).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@threads_option
@handle_errors
def demo(output, preset, quick, seed, device, threads):
    """Generate synthetic micrographs, train on ~300 labels, pick held-out micrographs, evaluate.

    Writes PNG pictures (picks over a micrograph, precision-recall curves of pupick and a
    difference-of-Gaussians baseline, training curve, threshold table) and prints the AP.
    """
    from ..demo.demo import run_demo

    summary = run_demo(output, preset=preset, quick=quick, seed=seed, device=device, threads=threads)
    click.echo(summary)


if __name__ == "__main__":  # pragma: no cover
    main()
