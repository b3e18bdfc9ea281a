"""Generate pupick's bad-input corpus (deterministic): damaged micrographs, broken STAR files,
bad labels, hostile names and bad model files, each beside good data so one case is one problem.

    python tests/data/make_bad_inputs.py OUTDIR [--huge]

The tests call :func:`make_corpus` into a temporary directory (``tests/reliability``); nothing
binary is committed. The corpus is laid out as a RELION project (``OUTDIR/project``, the
directory every entry point runs in; names in STAR files are relative to it) plus a directory
*outside* it (``OUTDIR/outside``) that the path-escape cases point at.

Each :class:`Case` says what is wrong, which entry-point mode it goes through (``extract`` with a
trained model, or ``train``), what pupick must do (``fail``: exit status non-zero with one line
naming the file and the problem; ``ok``: the run completes, with a warning where the input was
partly unusable) and the words the message must contain. ``docs/reliability.md`` has the same
table for people. Host-specific packaging (a RELION job directory, cryoSPARC ``.cs`` files) is
built from these generic files by ``tests/reliability/reliability_helpers.py``.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

PIXEL_SIZE = 1.5  #: A/px of the good micrographs (the demo data's)
SHAPE = (256, 256)  #: rows, cols of the good micrographs
N_GOOD = 3
HUGE_SIDE = 6000  #: the huge micrograph is HUGE_SIDE x HUGE_SIDE float32 (144 MB)
SEED = 20240917

#: Every case, in the order of docs/reliability.md's table (``_cases`` builds them).
CASE_IDS = (
    "truncated_mrc",
    "wrong_mrc_mode",
    "header_size_mismatch",
    "bogus_extended_header",
    "stack_as_micrograph",
    "nan_inf_pixels",
    "constant_image",
    "not_an_mrc",
    "missing_micrograph",
    "tiny_micrograph",
    "star_missing_columns",
    "star_wrong_block",
    "duplicate_names",
    "mixed_pixel_sizes",
    "spaces_and_non_ascii",
    "name_escapes_output",
    "model_newer_version",
    "model_corrupt",
    "labels_partly_unusable",
    "labels_empty",
    "labels_unlisted_micrographs",
    "labels_missing_columns",
    # found by a second corpus designed apart from this one (issue 12)
    "model_not_a_model",
    "model_nan_weights",
    "threshold_nan",
    "labels_not_finite",
    "pixel_size_absurd",
    "diameter_absurd",
    "pixels_near_float_max",
    "labels_with_bom",
    "small_micrograph",
    "sliver_micrograph",
)


@dataclass(frozen=True)
class Case:
    """One bad input and what pupick must do with it.

    ``micrographs``: project-relative micrograph names (the list the entry point is given);
    ``pixel_sizes``: per micrograph, A/px, as the list file states them;
    ``labels``: rows (micrograph name, x, y) of labelled particles (train mode);
    ``model``: ``good`` (the tests' trained model), or a file name under ``models/``;
    ``policy``: ``fail`` or ``ok``; ``keyword``: what the one-line message / warning contains;
    ``culprit``: the file (or name) the message must name.
    """

    id: str
    problem: str
    mode: str
    policy: str
    keyword: str
    culprit: str
    micrographs: tuple[str, ...] = ()
    pixel_sizes: tuple[float, ...] = ()
    labels: tuple[tuple[str, float, float], ...] = ()
    model: str = "good"
    special: str = ""  #: a case the host packaging handles by hand (see reliability_helpers)
    notes: str = ""
    threshold: str = ""  #: the score threshold option's value, where the case is about it
    diameter: str = ""  #: the particle diameter option's value (train), where the case is about it

    @property
    def star(self) -> str:
        """The micrographs STAR file of this case, relative to the project directory."""
        return f"lists/{self.id}.star"

    @property
    def labels_file(self) -> str:
        """Topaz-style labels of this case (train mode), relative to the project directory."""
        return f"labels/{self.id}.txt"


@dataclass
class Corpus:
    root: Path
    project: Path
    outside: Path
    cases: dict[str, Case] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)  #: name -> (n, 2) x, y of true particles
    good: tuple[str, ...] = ()
    huge: Path | None = None

    def path(self, relative: str) -> Path:
        return self.project / relative


# ------------------------------------------------------------------ writers
def write_mrc(path: Path, data: np.ndarray, pixel_size: float | None = PIXEL_SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data))
        if pixel_size is not None:
            mrc.voxel_size = pixel_size
    return path


def raw_mrc_header(
    nx: int, ny: int, nz: int, mode: int, pixel_size: float = PIXEL_SIZE, nsymbt: int = 0
) -> bytes:
    """An MRC2014 header written field by field (little-endian), for files mrcfile will not write."""
    header = bytearray(1024)
    struct.pack_into("<3i", header, 0, nx, ny, nz)
    struct.pack_into("<i", header, 12, mode)
    struct.pack_into("<3i", header, 28, nx, ny, nz)
    struct.pack_into("<3f", header, 40, nx * pixel_size, ny * pixel_size, nz * pixel_size)
    struct.pack_into("<3f", header, 52, 90.0, 90.0, 90.0)
    struct.pack_into("<3i", header, 64, 1, 2, 3)
    struct.pack_into("<i", header, 92, nsymbt)
    header[104:108] = b"MRCO"
    struct.pack_into("<i", header, 108, 20140)
    header[208:212] = b"MAP "
    header[212:216] = b"\x44\x44\x00\x00"
    return bytes(header)


def write_micrographs_star(path: Path, names: list[str], pixel_sizes: list[float]) -> Path:
    """A RELION 3.1 micrographs STAR file; one optics group per distinct pixel size."""
    groups = {p: i + 1 for i, p in enumerate(dict.fromkeys(pixel_sizes))}
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": [f"opticsGroup{g}" for g in groups.values()],
            "rlnOpticsGroup": list(groups.values()),
            "rlnMicrographOriginalPixelSize": list(groups),
            "rlnVoltage": [300.0] * len(groups),
            "rlnSphericalAberration": [2.7] * len(groups),
            "rlnAmplitudeContrast": [0.1] * len(groups),
            "rlnMicrographPixelSize": list(groups),
        }
    )
    mics = pd.DataFrame({"rlnMicrographName": names, "rlnOpticsGroup": [groups[p] for p in pixel_sizes]})
    path.parent.mkdir(parents=True, exist_ok=True)
    starfile.write({"optics": optics, "micrographs": mics}, path, overwrite=True)
    return path


def write_topaz(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["image_name\tx_coord\ty_coord"] + [f"{n}\t{x:g}\t{y:g}" for n, x, y in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ the corpus
def _good_micrographs(project: Path) -> dict[str, np.ndarray]:
    from pupick_ext import generate_demo_data

    demo = generate_demo_data(project / ".demo", n_micrographs=N_GOOD, preset="easy", seed=1, shape=SHAPE)
    truth = {}
    for entry in demo.micrographs:
        target = project / "Micrographs" / entry.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.path, target)
        one = demo.truth.for_micrograph(entry.name)
        truth[entry.name] = np.stack([one.x, one.y], axis=1)
    shutil.rmtree(project / ".demo")
    return truth


def _bad_micrographs(project: Path, good: Path) -> None:
    rng = np.random.default_rng(SEED)
    bad = project / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    raw = good.read_bytes()
    with mrcfile.open(good) as mrc:
        pixels = np.array(mrc.data, dtype=np.float32)
    (bad / "truncated.mrc").write_bytes(raw[: len(raw) - 1000])
    complex_pixels = (rng.normal(size=SHAPE) + 1j * rng.normal(size=SHAPE)).astype("<c8")
    (bad / "wrong_mode.mrc").write_bytes(raw_mrc_header(SHAPE[1], SHAPE[0], 1, 4) + complex_pixels.tobytes())
    # the header says 128 x 128 but the file holds the 256 x 256 image
    (bad / "header_mismatch.mrc").write_bytes(raw_mrc_header(128, 128, 1, 2) + pixels.astype("<f4").tobytes())
    # a 64 MiB extended header declared in a 260 KB file
    (bad / "bogus_extended_header.mrc").write_bytes(
        raw_mrc_header(SHAPE[1], SHAPE[0], 1, 2, nsymbt=64 * 2**20) + pixels.astype("<f4").tobytes()
    )
    write_mrc(bad / "stack.mrc", np.stack([pixels, pixels[::-1], pixels[:, ::-1]]))
    nan_inf = pixels.copy()
    nan_inf[10, 20] = np.nan
    nan_inf[30, 40] = np.inf
    with warnings.catch_warnings():  # mrcfile warns about the NaN it is asked to write
        warnings.simplefilter("ignore")
        write_mrc(bad / "nan_inf.mrc", nan_inf)
    write_mrc(bad / "constant.mrc", np.full(SHAPE, 7.0, dtype=np.float32))
    write_mrc(bad / "tiny.mrc", pixels[:24, :24].copy())
    (bad / "not_mrc.mrc").write_text("this is a text file, not a micrograph\n" * 40, encoding="utf-8")
    # finite, but squares and FFT sums overflow float32
    write_mrc(bad / "near_float_max.mrc", (pixels / np.abs(pixels).max() * 3e38).astype(np.float32))
    write_mrc(bad / "small.mrc", pixels[:80, :80].copy())  # 80 x 80: smaller than a particle once binned
    write_mrc(bad / "sliver.mrc", pixels[:1, :].copy())  # 1 row of 256 pixels
    write_mrc(bad / "absurd_pixel_size.mrc", pixels, pixel_size=1e6)


def _binned_copy(good: Path, target: Path) -> None:
    """The same micrograph at twice the pixel size (Fourier-cropped to half the size)."""
    from pupick_ext.prep.downsample import fourier_crop

    with mrcfile.open(good) as mrc:
        pixels = np.array(mrc.data, dtype=np.float32)
    write_mrc(target, fourier_crop(pixels, (SHAPE[0] // 2, SHAPE[1] // 2)), pixel_size=2 * PIXEL_SIZE)


def _models(project: Path) -> None:
    """A model from a newer pupick and a corrupt one (both from an untrained network)."""
    import io

    import torch

    from pupick_ext import PickerModel
    from pupick_ext.network.models import build_model

    models = project / "models"
    models.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    info = {
        "architecture": "resnet8",
        "width": 8,
        "autoencoder": False,
        "pixel_size": 6.25,
        "downsample": 4.0,
        "particle_diameter": 150.0,
        "normalization": "standard",
        "gmm": None,
        "recommended_threshold": 0.0,
    }
    good = models / "untrained.pupick"
    PickerModel(build_model("resnet8", 8), info).save(good)
    payload = torch.load(good, map_location="cpu", weights_only=True)
    payload["format_version"] = 99
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    (models / "newer_version.pupick").write_bytes(buffer.getvalue())
    raw = good.read_bytes()
    (models / "corrupt.pupick").write_bytes(raw[: len(raw) // 2])
    (models / "not_a_model.pupick").write_text("this is not a model\n", encoding="utf-8")
    nan = torch.load(good, map_location="cpu", weights_only=True)
    key = next(k for k, v in nan["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    nan["state_dict"][key] = torch.full_like(nan["state_dict"][key], float("nan"))  # a diverged training
    buffer = io.BytesIO()
    torch.save(nan, buffer)
    (models / "nan_weights.pupick").write_bytes(buffer.getvalue())
    good.unlink()


def _cases(truth: dict[str, np.ndarray]) -> list[Case]:
    good = sorted(truth)
    first = f"Micrographs/{good[0]}.mrc"
    all_good = tuple(f"Micrographs/{n}.mrc" for n in good)
    some = tuple((n, float(x), float(y)) for n in good for x, y in truth[n][::2])
    one = lambda bad: (first, f"bad/{bad}")  # noqa: E731 - a good micrograph, then the bad one
    cases = [
        Case(
            "truncated_mrc",
            "MRC file cut short",
            "extract",
            "fail",
            "truncated",
            "truncated.mrc",
            one("truncated.mrc"),
        ),
        Case(
            "wrong_mrc_mode",
            "MRC mode 4 (complex)",
            "extract",
            "fail",
            "mode 4",
            "wrong_mode.mrc",
            one("wrong_mode.mrc"),
        ),
        Case(
            "header_size_mismatch",
            "header says 128x128, file holds 256x256",
            "extract",
            "fail",
            "header size mismatch",
            "header_mismatch.mrc",
            one("header_mismatch.mrc"),
        ),
        Case(
            "bogus_extended_header",
            "header declares a 64 MiB extended header",
            "extract",
            "fail",
            "header size mismatch",
            "bogus_extended_header.mrc",
            one("bogus_extended_header.mrc"),
        ),
        Case(
            "stack_as_micrograph",
            "3-section stack given as a micrograph",
            "extract",
            "fail",
            "3 sections",
            "stack.mrc",
            one("stack.mrc"),
        ),
        Case(
            "nan_inf_pixels",
            "NaN and Inf pixels",
            "extract",
            "fail",
            "NaN or infinite",
            "nan_inf.mrc",
            one("nan_inf.mrc"),
        ),
        Case(
            "constant_image",
            "every pixel the same",
            "extract",
            "fail",
            "zero variance",
            "constant.mrc",
            one("constant.mrc"),
        ),
        Case(
            "not_an_mrc",
            "a text file named .mrc",
            "extract",
            "fail",
            "not an MRC file",
            "not_mrc.mrc",
            one("not_mrc.mrc"),
        ),
        Case(
            "missing_micrograph",
            "listed micrograph file does not exist",
            "extract",
            "fail",
            "not found",
            "missing.mrc",
            one("missing.mrc"),
        ),
        Case(
            "tiny_micrograph",
            "24x24 px, smaller than the receptive field",
            "extract",
            "ok",
            "smaller than a particle",
            "tiny",
            one("tiny.mrc"),
            notes="picked like any other (no picks fit); a warning names it; its (empty) file is written",
        ),
        Case(
            "star_missing_columns",
            "micrographs STAR without _rlnMicrographName",
            "extract",
            "fail",
            "_rlnMicrographName",
            "star_missing_columns.star",
            special="star_missing_columns",
        ),
        Case(
            "star_wrong_block",
            "STAR file holding only data_optics",
            "extract",
            "fail",
            "_rlnMicrographName",
            "star_wrong_block.star",
            special="star_wrong_block",
        ),
        Case(
            "duplicate_names",
            "two different files share the name mic_000",
            "extract",
            "fail",
            "share",
            "duplicate_names.star",
            ("MotionCorr/job002/Movies/mic_000.mrc", "MotionCorr/job003/Movies/mic_000.mrc"),
            notes="RELION: fails only when the two would share a coordinate file; cryoSPARC: names "
            "get the exposure uid and both are picked",
        ),
        Case(
            "mixed_pixel_sizes",
            "1.5 and 3.0 A/px micrographs in one list",
            "extract",
            "ok",
            "",
            "",
            (first, "mixed/mic_000_bin2.mrc"),
            (PIXEL_SIZE, 2 * PIXEL_SIZE),
            notes="each is rescaled to the model's working pixel size; coordinates in its own pixels",
        ),
        Case(
            "spaces_and_non_ascii",
            "micrograph path with spaces and non-ASCII characters",
            "extract",
            "ok",
            "",
            "",
            (first, "odd dir ü/mïc é 1.mrc"),
        ),
        Case(
            "name_escapes_output",
            "micrograph name with ../ leading out of the project",
            "extract",
            "ok",
            "",
            "",
            (first, "MotionCorr/job002/../../../outside/evil.mrc"),
            notes="outputs are named by the file stem (pupick, cryoSPARC); RELION's coordinate path rule "
            "would leave the job directory, so pupick-relion refuses it (fail)",
        ),
        Case(
            "model_newer_version",
            "model file from a newer pupick",
            "extract",
            "fail",
            "newer pupick",
            "newer_version.pupick",
            (first,),
            model="newer_version.pupick",
        ),
        Case(
            "model_corrupt",
            "model file cut in half",
            "extract",
            "fail",
            "corrupt",
            "corrupt.pupick",
            (first,),
            model="corrupt.pupick",
        ),
        Case(
            "labels_partly_unusable",
            "labels outside the image, negative, and on unlisted micrographs",
            "train",
            "ok",
            "outside",
            "",
            all_good,
            labels=some
            + (
                (good[0], -20.0, 30.0),
                (good[0], 40.0, -5.0),
                (good[0], 900.0, 40.0),
                (good[1], 30.0, 256.0),
                ("mic_999", 50.0, 50.0),
                ("mic_999", 80.0, 90.0),
            ),
            notes="the unusable labels are ignored with a warning; training uses the rest",
        ),
        Case(
            "labels_empty",
            "an empty label set",
            "train",
            "fail",
            "no labelled particles",
            "",
            all_good,
            labels=(),
        ),
        Case(
            "labels_unlisted_micrographs",
            "every label is on a micrograph not in the list",
            "train",
            "fail",
            "labelled particles",
            "",
            all_good,
            labels=(("mic_998", 50.0, 60.0), ("mic_999", 70.0, 80.0), ("mic_999", 120.0, 100.0)),
        ),
        Case(
            "labels_missing_columns",
            "coordinate file without its y column",
            "train",
            "fail",
            "y",
            "missing_y",
            all_good,
            labels=some,
            special="labels_missing_columns",
        ),
        Case(
            "model_not_a_model",
            "a text file given as the model",
            "extract",
            "fail",
            "not a torch archive",
            "not_a_model.pupick",
            (first,),
            model="not_a_model.pupick",
        ),
        Case(
            "model_nan_weights",
            "a model whose weights are NaN (a diverged training)",
            "extract",
            "fail",
            "NaN or infinite",
            "nan_weights.pupick",
            (first,),
            model="nan_weights.pupick",
        ),
        Case(
            "threshold_nan",
            "score threshold nan",
            "extract",
            "fail",
            "finite",
            "threshold",
            (first,),
            threshold="nan",
            notes="refused before anything is picked (nan compares false: no picks, empty files)",
        ),
        Case(
            "labels_not_finite",
            "a labelled particle at x = nan",
            "train",
            "fail",
            "finite",
            "",
            all_good,
            labels=some + ((good[0], float("nan"), 40.0),),
        ),
        Case(
            "pixel_size_absurd",
            "a micrograph of 1e6 A/px",
            "extract",
            "ok",
            "implausible",
            "absurd_pixel_size",
            (first, "bad/absurd_pixel_size.mrc"),
            (PIXEL_SIZE, 1e6),
            notes="picked, with a warning naming the pixel size",
        ),
        Case(
            "diameter_absurd",
            "particle diameter 100000 A",
            "train",
            "fail",
            "larger than the",
            "diameter",
            all_good,
            labels=some,
            diameter="100000",
        ),
        Case(
            "pixels_near_float_max",
            "finite pixel values near 3e38",
            "extract",
            "fail",
            "as large as",
            "near_float_max.mrc",
            one("near_float_max.mrc"),
        ),
        Case(
            "labels_with_bom",
            "Topaz labels starting with a UTF-8 byte-order mark",
            "train",
            "ok",
            "",
            "",
            all_good,
            labels=some,
            special="labels_with_bom",
            notes="RELION and cryoSPARC get the same labels in their own formats",
        ),
        Case(
            "small_micrograph",
            "80x80 px micrograph",
            "extract",
            "ok",
            "smaller than a particle",
            "small",
            one("small.mrc"),
            notes="warned, and its coordinate file is empty",
        ),
        Case(
            "sliver_micrograph",
            "1x256 px micrograph",
            "extract",
            "ok",
            "smaller than a particle",
            "sliver",
            one("sliver.mrc"),
            notes="warned, no picks; a picture of it stays of bounded size",
        ),
    ]
    assert tuple(c.id for c in cases) == CASE_IDS
    return cases


def make_corpus(root: str | Path, huge: bool = False) -> Corpus:
    """Write the corpus under ``root`` (``root/project`` and ``root/outside``); returns its description."""
    root = Path(root)
    project, outside = root / "project", root / "outside"
    project.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    truth = _good_micrographs(project)
    good = sorted(truth)
    first = project / "Micrographs" / f"{good[0]}.mrc"
    _bad_micrographs(project, first)
    _binned_copy(first, project / "mixed" / "mic_000_bin2.mrc")
    odd = project / "odd dir ü" / "mïc é 1.mrc"
    odd.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(project / "Micrographs" / f"{good[1]}.mrc", odd)
    for job in ("job002", "job003"):
        target = project / "MotionCorr" / job / "Movies" / "mic_000.mrc"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, target)
    shutil.copyfile(project / "Micrographs" / f"{good[2]}.mrc", outside / "evil.mrc")
    _models(project)

    corpus = Corpus(root, project, outside, truth=truth, good=tuple(good))
    for case in _cases(truth):
        corpus.cases[case.id] = case
        star = project / case.star
        if case.special == "star_missing_columns":
            star.parent.mkdir(parents=True, exist_ok=True)
            starfile.write(
                {
                    "micrographs": pd.DataFrame(
                        {"rlnCtfImage": [f"Micrographs/{good[0]}.ctf:mrc"], "rlnDefocusU": [15000.0]}
                    )
                },
                star,
                overwrite=True,
            )
        elif case.special == "star_wrong_block":
            star.parent.mkdir(parents=True, exist_ok=True)
            optics = pd.DataFrame(
                {
                    "rlnOpticsGroupName": ["opticsGroup1"],
                    "rlnOpticsGroup": [1],
                    "rlnMicrographPixelSize": [PIXEL_SIZE],
                }
            )
            starfile.write({"optics": optics}, star, overwrite=True)
        else:
            sizes = list(case.pixel_sizes) or [PIXEL_SIZE] * len(case.micrographs)
            write_micrographs_star(star, list(case.micrographs), sizes)
        if case.mode == "train":
            labels = project / case.labels_file
            if case.special == "labels_missing_columns":
                labels.parent.mkdir(parents=True, exist_ok=True)
                labels.write_text(
                    "image_name\tx_coord\n" + "".join(f"{n}\t{x:g}\n" for n, x, _ in case.labels),
                    encoding="utf-8",
                )
            else:
                write_topaz(labels, list(case.labels))
                if case.special == "labels_with_bom":
                    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    if huge:
        corpus.huge = make_huge(project / "huge" / "huge.mrc")
    return corpus


def make_huge(path: Path, side: int = HUGE_SIDE) -> Path:
    """A side x side float32 micrograph (noise with dark blobs), written in row blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    with mrcfile.new_mmap(path, shape=(side, side), mrc_mode=2, overwrite=True) as mrc:
        block = 500
        for start in range(0, side, block):
            rows = min(block, side - start)
            mrc.data[start : start + rows] = rng.normal(10.0, 1.0, size=(rows, side)).astype(np.float32)
        mrc.voxel_size = PIXEL_SIZE
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--huge", action="store_true", help=f"also write a {HUGE_SIDE}^2 float32 micrograph")
    args = parser.parse_args(argv)
    corpus = make_corpus(args.outdir, huge=args.huge)
    for case in corpus.cases.values():
        print(f"{case.id:28s} {case.mode:8s} {case.policy:5s} {case.problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
