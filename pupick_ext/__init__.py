"""pupick: positive-unlabeled CNN particle picking for cryo-EM micrographs (the engine).

The names below are the whole public API; the RELION and cryoSPARC adapters use nothing
else. See docs/api.md. They are imported on first use (PEP 562), so that `import pupick_ext`
and `pupick --help` do not pay for torch and matplotlib until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_SOURCES: dict[str, str] = {
    "AbortRequested": "errors",
    "Coordinator": "parallel.distributed",
    "DemoData": "demo.synthetic",
    "Evaluation": "pick.evaluation",
    "ExtractSettings": "settings",
    "InputError": "errors",
    "MODEL_FILE": "api",
    "Micrograph": "io.micrograph",
    "MicrographEntry": "settings",
    "ModelError": "errors",
    "OutputError": "errors",
    "PARAMETERS": "parameters",
    "Parameter": "parameters",
    "PickerModel": "network.model_io",
    "Picks": "io.picks",
    "PreprocessSettings": "settings",
    "Progress": "settings",
    "PupickError": "errors",
    "RankInfo": "parallel.distributed",
    "SettingsError": "errors",
    "ShardedPicks": "parallel.sharding",
    "ShouldStop": "settings",
    "TrainResult": "training.outputs",
    "TrainSettings": "settings",
    "atomic_path": "io.fsio",
    "atomic_paths": "io.fsio",
    "check_output_dir": "io.fsio",
    "check_output_file": "io.fsio",
    "click_option": "click_render",
    "click_options": "click_render",
    "evaluate": "pick.evaluation",
    "extract": "api",
    "extract_iter": "api",
    "first_line": "errors",
    "format_threshold_table": "api",
    "generate_demo_data": "demo.synthetic",
    "load_model": "network.model_io",
    "match_micrograph_names": "io.coordinates",
    "micrograph_stem": "settings",
    "parameter": "parameters",
    "parameters_for": "parameters",
    "pick_sharded": "parallel.sharding",
    "plot_picks": "reports",
    "plot_pr_curve": "reports",
    "plot_score_histogram": "reports",
    "plot_threshold_table": "reports",
    "plot_training": "reports",
    "rank_info": "parallel.distributed",
    "read_coordinates": "io.coordinates",
    "read_header": "io.micrograph",
    "read_micrograph": "io.micrograph",
    "read_micrograph_list": "io.micrograph_list",
    "report_failure": "parallel.sharding",
    "settings_from": "parameters",
    "train": "api",
    "write_atomic": "io.fsio",
    "write_coordinate_star": "io.coordinates",
    "write_coordinates": "io.coordinates",
    "write_coordinates_per_micrograph": "io.coordinates",
    "write_run_record": "io.run_record",
}

#: the public names: every key of _SOURCES, plus the version (one list, so they cannot drift)
__all__ = ["__version__", *sorted(_SOURCES)]


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'pupick_ext' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static type checkers see: the eager imports
    from .api import MODEL_FILE, extract, extract_iter, format_threshold_table, train  # noqa: F401
    from .click_render import click_option, click_options  # noqa: F401
    from .demo.synthetic import DemoData, generate_demo_data  # noqa: F401
    from .errors import (  # noqa: F401
        AbortRequested,
        InputError,
        ModelError,
        OutputError,
        PupickError,
        SettingsError,
        first_line,
    )
    from .io.coordinates import (  # noqa: F401
        match_micrograph_names,
        read_coordinates,
        write_coordinate_star,
        write_coordinates,
        write_coordinates_per_micrograph,
    )
    from .io.fsio import atomic_path, atomic_paths, check_output_dir, check_output_file, write_atomic  # noqa: F401
    from .io.micrograph import Micrograph, read_header, read_micrograph  # noqa: F401
    from .io.micrograph_list import read_micrograph_list  # noqa: F401
    from .io.picks import Picks  # noqa: F401
    from .io.run_record import write_run_record  # noqa: F401
    from .network.model_io import PickerModel, load_model  # noqa: F401
    from .parallel.distributed import Coordinator, RankInfo, rank_info  # noqa: F401
    from .parallel.sharding import ShardedPicks, pick_sharded, report_failure  # noqa: F401
    from .parameters import PARAMETERS, Parameter, parameter, parameters_for, settings_from  # noqa: F401
    from .pick.evaluation import Evaluation, evaluate  # noqa: F401
    from .reports import plot_picks, plot_pr_curve, plot_score_histogram, plot_threshold_table, plot_training  # noqa: F401
    from .settings import (  # noqa: F401
        ExtractSettings,
        MicrographEntry,
        PreprocessSettings,
        Progress,
        ShouldStop,
        TrainSettings,
        micrograph_stem,
    )
    from .training.outputs import TrainResult  # noqa: F401
