"""The public API of pupick_ext: ``__all__`` is pinned, every name imports, and it matches docs/api.md."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import pupick_ext

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"

#: The pinned public API. Changing it is an API change: update docs/api.md, the wrappers and this list.
PUBLIC_API = [
    "AbortRequested",
    "Coordinator",
    "DemoData",
    "Evaluation",
    "ExtractSettings",
    "InputError",
    "MODEL_FILE",
    "Micrograph",
    "MicrographEntry",
    "ModelError",
    "OutputError",
    "PARAMETERS",
    "Parameter",
    "PickerModel",
    "Picks",
    "PreprocessSettings",
    "Progress",
    "PupickError",
    "RankInfo",
    "SettingsError",
    "ShardedPicks",
    "ShouldStop",
    "TrainResult",
    "TrainSettings",
    "__version__",
    "atomic_path",
    "atomic_paths",
    "check_output_dir",
    "check_output_file",
    "click_option",
    "click_options",
    "evaluate",
    "extract",
    "extract_iter",
    "first_line",
    "format_threshold_table",
    "generate_demo_data",
    "load_model",
    "match_micrograph_names",
    "micrograph_stem",
    "parameter",
    "parameters_for",
    "pick_sharded",
    "plot_picks",
    "plot_pr_curve",
    "plot_score_histogram",
    "plot_threshold_table",
    "plot_training",
    "rank_info",
    "read_coordinates",
    "read_header",
    "read_micrograph",
    "read_micrograph_list",
    "report_failure",
    "settings_from",
    "train",
    "write_atomic",
    "write_coordinate_star",
    "write_coordinates",
    "write_coordinates_per_micrograph",
    "write_run_record",
]

#: Names docs/api.md presents as importable from pupick_ext (its Types and Functions sections).
DOCUMENTED = [
    "PupickError",
    "InputError",
    "SettingsError",
    "ModelError",
    "AbortRequested",
    "MicrographEntry",
    "micrograph_stem",
    "Picks",
    "PreprocessSettings",
    "TrainSettings",
    "ExtractSettings",
    "Progress",
    "ShouldStop",
    "read_micrograph",
    "Micrograph",
    "read_micrograph_list",
    "read_coordinates",
    "write_coordinates",
    "write_coordinate_star",
    "match_micrograph_names",
    "train",
    "TrainResult",
    "load_model",
    "PickerModel",
    "extract_iter",
    "extract",
    "evaluate",
    "Evaluation",
    "plot_picks",
    "plot_pr_curve",
    "plot_training",
    "plot_score_histogram",
    "plot_threshold_table",
    "MODEL_FILE",
    "generate_demo_data",
    "DemoData",
    "write_atomic",
    "atomic_path",
    "atomic_paths",
    "check_output_dir",
    "check_output_file",
    "OutputError",
    "RankInfo",
    "rank_info",
    "Coordinator",
    "Parameter",
    "PARAMETERS",
    "parameter",
    "parameters_for",
    "settings_from",
    "click_option",
    "click_options",
    "first_line",
    "write_run_record",
    "pick_sharded",
    "ShardedPicks",
    "report_failure",
]


def test_all_is_pinned() -> None:
    assert sorted(pupick_ext.__all__) == sorted(PUBLIC_API)
    assert len(set(pupick_ext.__all__)) == len(pupick_ext.__all__)


@pytest.mark.parametrize("name", PUBLIC_API)
def test_every_public_name_imports(name: str) -> None:
    module = importlib.import_module("pupick_ext")
    assert getattr(module, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict = {}
    exec("from pupick_ext import *", namespace)  # noqa: S102
    exported = {k for k in namespace if k != "__builtins__"}
    assert exported == set(PUBLIC_API)


def test_error_hierarchy_and_message_format() -> None:
    for cls in (
        pupick_ext.InputError,
        pupick_ext.SettingsError,
        pupick_ext.ModelError,
        pupick_ext.OutputError,
        pupick_ext.AbortRequested,
    ):
        assert issubclass(cls, pupick_ext.PupickError)
    err = pupick_ext.InputError("truncated", "/data/mic.mrc")
    assert (
        str(err) == "/data/mic.mrc: truncated" and err.path == "/data/mic.mrc" and err.problem == "truncated"
    )
    assert str(pupick_ext.SettingsError("bad value")) == "bad value"


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert pupick_ext.__version__ == version("pupick")


def test_every_public_name_is_in_the_api_doc() -> None:
    text = API_DOC.read_text(encoding="utf-8")
    undocumented = [
        n for n in PUBLIC_API if n != "__version__" and not re.search(rf"`[^`]*\b{re.escape(n)}\b", text)
    ]
    assert not undocumented


def test_every_documented_name_is_exported() -> None:
    assert [n for n in DOCUMENTED if n not in PUBLIC_API] == []


def test_documented_names_are_mentioned_in_the_doc() -> None:
    text = API_DOC.read_text(encoding="utf-8")
    missing = [n for n in DOCUMENTED if not re.search(rf"\b{re.escape(n)}\b", text)]
    assert not missing, f"DOCUMENTED lists names docs/api.md no longer mentions: {missing}"


def test_importing_the_package_does_not_load_torch() -> None:
    """The public names load on first use, so `pupick --help` starts fast."""
    import subprocess
    import sys

    code = "import sys, pupick_ext; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_no_submodule_shares_a_public_name() -> None:
    """Importing a submodule sets it as an attribute of the package, so one named like a public
    name (a ``train`` package beside the ``train`` function) would replace that name."""
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(pupick_ext.__path__)}
    assert not submodules & set(PUBLIC_API)
