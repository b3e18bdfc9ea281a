"""pupick-cryosparc: train pupick on your manual picks and pick a whole cryoSPARC dataset.

\b
live     talk to a running cryoSPARC (cryosparc-tools); the picks land in a new
         External job whose output 'particles' goes into Extract From Micrographs.
offline  no connection: read exported .cs files, write a particles .cs + .csg for
         Import Result Group, and RELION coordinate STAR files of the same picks.

\b
Example (live; credentials from the environment, never from the command line):
  export CRYOSPARC_BASE_URL=https://cryosparc.example.org
  export CRYOSPARC_EMAIL=ali@example.org CRYOSPARC_PASSWORD=...
  pupick-cryosparc live --project P3 --workspace W1 \\
      --exposures J12:exposures_accepted --particles J14 --diameter 150

Run 'pupick-cryosparc live --help' or 'pupick-cryosparc offline --help' for details.
"""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from pupick_ext import PupickError, click_option, first_line

from .errors import missing_tools_message
from .options import FIELDS, MODES, PickOptions, table_parameters

logger = logging.getLogger(__name__)
PROG = "pupick-cryosparc"


class _State:
    debug = False
    handler: logging.Handler | None = None
    root_level: int = logging.WARNING


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    root = logging.getLogger()
    _State.handler, _State.root_level = handler, root.level
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug and noisy == "httpx" else logging.WARNING)


def pick_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The picking parameters both subcommands share: the mode, the model file, every knob of the
    engine's parameter table (same names, help and defaults as ``pupick``), and --flip-y."""
    options = [
        click.option(
            "--mode",
            type=click.Choice(MODES),
            default="train+extract",
            show_default=True,
            help="Train a model, pick with an existing one, or both.",
        ),
        click.option(
            "--model",
            "model",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Model file to pick with (--mode extract).",
        ),
        *(click_option(p, "cryosparc", dest=FIELDS.get(p.name)) for p in table_parameters()),
        click.option(
            "--flip-y",
            is_flag=True,
            help="Store center_y_frac = 1 - y/ny (and read labels that way). Off by default; "
            "see docs/cryosparc.md for how to check once with Inspect Picks.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _pick_options(kwargs: dict[str, Any]) -> PickOptions:
    fields = ["mode", "model", "flip_y", *FIELDS.values()]
    table = {p.name: kwargs.pop(p.name) for p in table_parameters() if p.name not in FIELDS}
    return PickOptions(**{n: kwargs.pop(n) for n in fields}, parameters=table)


@click.group(help=__doc__, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show debug logs and tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="pupick", prog_name=PROG)
def cli(debug: bool, quiet: bool) -> None:
    _State.debug = debug
    _configure_logging(debug, quiet)


@cli.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML/INI file with a [cryosparc] section: base_url (or host, base_port), email, password. "
    "Values missing there come from CRYOSPARC_BASE_URL, CRYOSPARC_EMAIL, CRYOSPARC_PASSWORD.",
)
@click.option("--project", "project_uid", required=True, help="Project uid, e.g. P3.")
@click.option("--workspace", "workspace_uid", required=True, help="Workspace for the new job, e.g. W1.")
@click.option(
    "--exposures",
    required=True,
    metavar="JOB[:OUTPUT]",
    help="Job output with micrographs: J12 (output 'exposures', e.g. Patch CTF) or "
    "J15:exposures_accepted (Curate Exposures).",
)
@click.option(
    "--particles",
    metavar="JOB[:OUTPUT]",
    help="Job output with labelled particles: J14 (output 'particles', e.g. Manual Picker) or "
    "J20:particles_selected (Select 2D). Needed to train.",
)
@click.option("--title", default="pupick particles", show_default=True, help="Title of the new External job.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model, checkpoints, pictures, downloads [default: <job dir>/pupick if the project "
    "directory is mounted here, else ./pupick_<P>_<J>].",
)
@click.option(
    "--download",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Download micrographs through cryoSPARC when the project directory is not mounted here.",
)
@pick_options
def live(
    config: Path | None,
    project_uid: str,
    workspace_uid: str,
    exposures: str,
    particles: str | None,
    title: str,
    workdir: Path | None,
    download: str,
    **kwargs: Any,
) -> None:
    """Pick through a running cryoSPARC and save the picks to a new External job.

    \b
    The job (in --workspace) gets the micrographs and labels as inputs, an output
    'particles' (location + pick_stats, like cryoSPARC's pickers) and an event log
    with progress and pictures. Connect 'particles' and the micrographs to
    Extract From Micrographs, then 2D Classification.

    \b
    Example:
      export CRYOSPARC_BASE_URL=http://cryosparc.example.org:39000
      export CRYOSPARC_EMAIL=ali@example.org CRYOSPARC_PASSWORD=...
      pupick-cryosparc live --project P3 --workspace W1 --exposures J12 \\
          --particles J14 --diameter 150
    \b
      # later, pick new micrographs with the same model:
      pupick-cryosparc live --project P3 --workspace W1 --exposures J30 \\
          --mode extract --model /path/to/P3/J40/pupick/training/model.pupick
    """
    from .connect import load_credentials
    from .live import run_live

    options = _pick_options(kwargs)
    credentials = load_credentials(config)
    with warnings.catch_warnings():
        # cryosparc-tools warns per retry ("*** API client ... (attempt 1/3)"): one line is ours
        if not _State.debug:
            warnings.filterwarnings("ignore", message=r"\*\*\* API client")
        result = run_live(
            project_uid,
            workspace_uid,
            exposures,
            particles,
            options,
            credentials=credentials,
            title=title,
            workdir=workdir,
            download=download,  # type: ignore[arg-type]
        )
    what = f"{result.n_particles} particles in output 'particles'" if options.extracts else "a trained model"
    click.echo(
        f"{result.project_uid}-{result.job_uid}: {what}"
        + (f"; model {result.model_path}" if result.model_path and options.trains else "")
    )


@cli.command()
@click.option(
    "--exposures",
    "exposures_cs",
    required=True,
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Exposures .cs (e.g. exports/groups/P3_J12_exposures_accepted/..._exported.cs). "
    "Repeat to join a result with its passthrough file.",
)
@click.option(
    "--particles",
    "particles_cs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Labelled particles .cs (Manual Picker, Select 2D). Repeat to join with a passthrough file.",
)
@click.option(
    "--project-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="cryoSPARC project directory; micrograph paths in the .cs are relative to it.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (inside the project directory, for Import Result Group).",
)
@click.option("--title", default="pupick particles", show_default=True, help="Title of the result group.")
@pick_options
def offline(
    exposures_cs: Sequence[Path],
    particles_cs: Sequence[Path],
    project_dir: Path,
    out_dir: Path,
    title: str,
    **kwargs: Any,
) -> None:
    """Pick from exported .cs files, without a cryoSPARC connection.

    \b
    Writes <out>/particles.cs and <out>/particles.csg (import with cryoSPARC's
    Import Result Group job), <out>/coordinates/<micrograph>_pupick.star (RELION
    coordinates of the same picks) and the model under <out>/training/.

    \b
    Example:
      pupick-cryosparc offline --project-dir /data/P3 \\
          --exposures /data/P3/J12/J12_exposures_accepted.cs \\
          --particles /data/P3/J14/J14_particles.cs \\
          --diameter 150 --out /data/P3/imports/pupick
    """
    from .offline import run_offline

    options = _pick_options(kwargs)
    result = run_offline(
        list(exposures_cs), list(particles_cs) or None, project_dir, out_dir, options, title=title
    )
    if result.particles_cs is not None:
        click.echo(f"{result.n_particles} particles: {result.particles_cs} (import {result.csg})")
    else:
        click.echo(f"model: {result.model_path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one line on stderr and exit status 1 for any expected failure."""
    _State.debug = False
    try:
        return _main(argv)
    finally:
        if _State.handler is not None:  # leave logging as we found it (main may run inside a host)
            logging.getLogger().removeHandler(_State.handler)
            logging.getLogger().setLevel(_State.root_level)
            _State.handler = None


def _main(argv: Sequence[str] | None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exit_:
        return int(exit_.exit_code)
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        click.echo(f"{PROG}: error: {err.format_message()}{hint}", err=True)
        return err.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort:
        click.echo(f"{PROG}: aborted", err=True)
        return 1
    except PupickError as err:
        _fail(str(err))
        return 1
    except ImportError as err:  # the cryosparc extra is not installed: one line, not a traceback
        message = missing_tools_message(err)
        if message is None:
            raise
        _fail(message)
        return 1
    except KeyboardInterrupt:
        click.echo(f"{PROG}: interrupted", err=True)
        return 130
    except OSError as err:  # the file system refused (full, read-only, permissions): not a bug
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        _fail(f"{where}{err.strerror or err}")
        return 1
    except Exception as err:
        # httpx and cryosparc-tools are optional (the cryosparc extra): an error can only be
        # theirs when they were imported, so look them up instead of importing them here
        httpx = sys.modules.get("httpx")
        if httpx is not None and isinstance(err, httpx.HTTPError):
            _fail(f"cryoSPARC request failed: {type(err).__name__}: {err}")
            return 1
        errors = sys.modules.get("cryosparc.errors")
        if errors is None or not isinstance(err, getattr(errors, "APIError", ())):
            raise
        from .connect import describe_api_error

        _fail(str(describe_api_error(err, "cryoSPARC request")))
        return 1
    return 0


def _fail(message: str) -> None:
    if _State.debug:
        traceback.print_exc()
    click.echo(f"{PROG}: error: {first_line(message) or 'failed'}", err=True)


if __name__ == "__main__":
    sys.exit(main())
