"""pupick: positive-unlabeled CNN particle picking for cryo-EM micrographs (the engine).

The names below are the whole public API; the RELION and cryoSPARC adapters use nothing
else. See docs/api.md.
"""

__version__ = "0.1.0"

from .api import MODEL_FILE, extract, extract_iter, format_threshold_table, train  # noqa: E402
from .coordinates import (  # noqa: E402
    match_micrograph_names,
    read_coordinates,
    write_coordinate_star,
    write_coordinates,
    write_coordinates_per_micrograph,
)
from .errors import AbortRequested, InputError, ModelError, PupickError, SettingsError  # noqa: E402
from .evaluation import Evaluation, evaluate  # noqa: E402
from .fsio import atomic_path, write_atomic  # noqa: E402
from .micrograph import Micrograph, read_header, read_micrograph  # noqa: E402
from .micrograph_list import read_micrograph_list  # noqa: E402
from .model_io import PickerModel, load_model  # noqa: E402
from .picks import Picks  # noqa: E402
from .reports import (  # noqa: E402
    plot_picks,
    plot_pr_curve,
    plot_score_histogram,
    plot_threshold_table,
    plot_training,
)
from .settings import (  # noqa: E402
    ExtractSettings,
    MicrographEntry,
    PreprocessSettings,
    TrainSettings,
    micrograph_stem,
)
from .synthetic import DemoData, generate_demo_data  # noqa: E402
from .training import TrainResult  # noqa: E402

__all__ = [
    "MODEL_FILE",
    "AbortRequested",
    "DemoData",
    "Evaluation",
    "ExtractSettings",
    "InputError",
    "Micrograph",
    "MicrographEntry",
    "ModelError",
    "PickerModel",
    "Picks",
    "PreprocessSettings",
    "PupickError",
    "SettingsError",
    "TrainResult",
    "TrainSettings",
    "__version__",
    "atomic_path",
    "evaluate",
    "extract",
    "extract_iter",
    "format_threshold_table",
    "generate_demo_data",
    "load_model",
    "match_micrograph_names",
    "micrograph_stem",
    "plot_picks",
    "plot_pr_curve",
    "plot_score_histogram",
    "plot_threshold_table",
    "plot_training",
    "read_coordinates",
    "read_header",
    "read_micrograph",
    "read_micrograph_list",
    "train",
    "write_atomic",
    "write_coordinate_star",
    "write_coordinates",
    "write_coordinates_per_micrograph",
]
