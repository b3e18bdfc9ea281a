#!/usr/bin/env python3
"""Compare pupick with Topaz (topaz-em from PyPI) on the same micrographs and labels.

Both programs run as external commands, one after the other, with the same number of
threads. For each the script measures

* AP: average precision of the picks on held-out micrographs, scored by pupick's
  ``evaluate`` against the ground truth (match radius = particle radius in original px);
* training wall time (Topaz: ``topaz preprocess`` of the training micrographs +
  ``topaz train``; pupick: ``pupick train``, which preprocesses internally);
* extraction speed in micrographs/s (Topaz: ``topaz preprocess`` of the test micrographs +
  ``topaz extract``; pupick: ``pupick extract``), process start-up included;
* peak RSS of each subprocess (``os.wait4`` rusage), the maximum over a program's steps;

and prints one Markdown table with the ratios pupick/Topaz (also written to
``<workdir>/compare_topaz.md``, with a per-step breakdown and the exact commands).

Topaz is GPL-licensed: it is installed into its own virtual environment and only run as
a program; nothing of it is imported here.

Topaz install recipe (what ``--venv`` setup does; tested with topaz-em 0.3.20, torch
2.13.0+cpu, numpy 2.4, Python 3.11):

1. ``python -m venv --system-site-packages VENV`` so that Topaz reuses the torch already
   installed for pupick (never a fresh multi-GB CUDA build from PyPI);
2. ``VENV/bin/pip install -c constraints.txt topaz-em==0.3.20`` with constraints
   ``torch==<installed version>`` and ``numpy==<installed version>``; pip then picks the
   matching torchvision (0.28.0 for torch 2.13) instead of upgrading torch;
3. the PyPI torchvision wheel is built against CUDA torch, so its C++ ops fail to load
   under a CPU-only torch and ``import torchvision`` dies with "operator torchvision::nms
   does not exist" (two unguarded ``register_fake`` calls). Topaz only uses the pure-Python
   ``torchvision.transforms.functional`` (rotate/flip), so the script guards those two
   registrations in the venv's copy of ``torchvision/_meta_registrations.py`` (only when
   the import fails that way); numpy 2.x needs nothing.

Topaz 0.3.x computes the pixels per particle of a 2-D disk over a 3-D grid
(``topaz.stats.pixels_given_radius(r, 2)`` returns (2r+1) times the disk area), which
inflates both pi (from ``-n``) and the observed labelled fraction by that factor. The
script detects this and passes ``--pi`` chosen so that Topaz's GE target
(pi - p_observed) is what ``-n`` means in the paper; ``--topaz-native-pi`` passes ``-n``.

Example (small, 2 threads, a few minutes on CPU)::

    python benchmarks/compare_topaz.py --n-train 8 --n-test 4 --labels-per-micrograph 20 \\
        --epochs 4 --steps-per-epoch 50 --threads 2 --workdir bench_out/compare_topaz
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, BenchmarkError, Measured, markdown_table, run_measured, thread_env  # noqa: E402

DEFAULT_TOPAZ_VERSION = "0.3.20"
MAX_LABELS = 300


# ------------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data and protocol")
    g.add_argument("--workdir", type=Path, default=REPO_ROOT / "bench_out" / "compare_topaz")
    g.add_argument("--n-train", type=int, default=8, help="training micrographs")
    g.add_argument("--n-test", type=int, default=4, help="held-out micrographs (extraction + AP)")
    g.add_argument("--labels-per-micrograph", type=int, default=20,
                   help=f"labelled particles per training micrograph (total at most {MAX_LABELS})")
    g.add_argument("--preset", default="medium", help="generate_demo_data preset")
    g.add_argument("--seed", type=int, default=0, help="seed for data, label subset and training")
    g.add_argument("--data", type=Path, default=None,
                   help="use an existing dataset instead of generate_demo_data: a directory with "
                        "Micrographs/*.mrc (or *.mrc) and truth.txt (Topaz text, original px)")
    g.add_argument("--particle-diameter", type=float, default=None,
                   help="particle diameter in A (default: from the demo data; required with --data)")
    g.add_argument("--expected-particles", type=float, default=None,
                   help="expected particles per micrograph given to both programs "
                        "(default: mean truth count on the training micrographs)")
    g.add_argument("--programs", default="topaz,pupick", help="comma list: topaz, pupick")

    g = p.add_argument_group("budgets (the same for both programs)")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--steps-per-epoch", type=int, default=200,
                   help="parameter updates per epoch (Topaz --epoch-size)")
    g.add_argument("--downsample", type=int, default=4, help="downsampling factor (1.5 -> 6 A/px)")
    g.add_argument("--threshold", type=float, default=-10.0,
                   help="extraction score threshold (logit), low so that the PR curve is complete")
    g.add_argument("--threads", type=int, default=2, help="threads for each program")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu")

    g = p.add_argument_group("Topaz")
    g.add_argument("--topaz-version", default=DEFAULT_TOPAZ_VERSION)
    g.add_argument("--venv", type=Path, default=REPO_ROOT / "bench_out" / "topaz-venv",
                   help="virtual environment for topaz-em (created if needed)")
    g.add_argument("--skip-install", action="store_true",
                   help="do not create a venv; run the executable given by --topaz")
    g.add_argument("--topaz", default=None, help="topaz executable (with --skip-install; default: on PATH)")
    g.add_argument("--topaz-native-pi", action="store_true",
                   help="pass -n to topaz train as is, even when its pi computation is off")
    g.add_argument("--topaz-pretrained", action="store_true",
                   help="let topaz train start from its bundled pretrained weights (default: from scratch, "
                        "as pupick does)")
    g.add_argument("--topaz-train-args", default="", help="extra arguments for topaz train")

    g = p.add_argument_group("pupick")
    g.add_argument("--pupick", default=None,
                   help="pupick executable (default: the one next to this Python, else python -c)")
    g.add_argument("--pupick-train-args", default="", help="extra arguments for pupick train")
    g.add_argument("--pupick-extract-args", default="", help="extra arguments for pupick extract")
    args = p.parse_args(argv)

    args.programs = [s.strip() for s in args.programs.split(",") if s.strip()]
    unknown = set(args.programs) - {"topaz", "pupick"}
    if unknown or not args.programs:
        p.error(f"--programs: unknown {sorted(unknown)}; use topaz, pupick or both")
    for name in ("n_train", "n_test", "labels_per_micrograph", "epochs", "steps_per_epoch", "downsample",
                 "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.n_train * args.labels_per_micrograph > MAX_LABELS:
        p.error(f"--n-train x --labels-per-micrograph = {args.n_train * args.labels_per_micrograph} "
                f"labels; keep it at most {MAX_LABELS}")
    if args.data is not None and args.particle_diameter is None:
        p.error("--data needs --particle-diameter")
    args.workdir = args.workdir.resolve()
    args.venv = args.venv.resolve()
    return args


def say(msg: str) -> None:
    print(f"[compare_topaz {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ Topaz install
def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _probe(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str]:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 1, str(err)
    return res.returncode, (res.stdout + res.stderr).strip()


_TV_FAKE = re.compile(r'^@torch\.library\.register_fake\(("[^"]+")\)[ \t]*$', re.M)


def _patch_torchvision(python: Path) -> bool:
    """Guard torchvision's unconditional fake-op registrations (see the module docstring)."""
    code = ("import importlib.util as u; s = u.find_spec('torchvision'); "
            "print(s.submodule_search_locations[0])")
    rc, out = _probe([str(python), "-c", code])
    if rc != 0:
        return False
    path = Path(out.splitlines()[-1]) / "_meta_registrations.py"
    if not path.is_file():
        return False
    text = path.read_text()
    new, n = _TV_FAKE.subn(
        r"@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))", text)
    if n == 0:
        return False
    path.write_text(new)
    say(f"patched {n} torchvision op registration(s) in {path} (CUDA torchvision wheel, CPU torch)")
    return True


def _check_torchvision(python: Path) -> None:
    rc, out = _probe([str(python), "-c", "import torchvision.transforms.functional"])
    if rc == 0:
        return
    if "does not exist" in out and _patch_torchvision(python):
        rc, out = _probe([str(python), "-c", "import torchvision.transforms.functional"])
        if rc == 0:
            return
    raise BenchmarkError(f"torchvision does not import in {python}:\n{out[-2000:]}")


def ensure_topaz(args: argparse.Namespace, log_dir: Path) -> list[str]:
    """Return the argv prefix that runs Topaz, installing it into args.venv if needed."""
    if args.skip_install:
        exe = args.topaz or shutil.which("topaz")
        if not exe:
            raise BenchmarkError("--skip-install: no topaz executable (give --topaz PATH)")
        rc, out = _probe([exe, "--version"])
        if rc != 0:
            raise BenchmarkError(f"{exe} --version failed:\n{out[-2000:]}")
        say(f"using {exe} (topaz {out.splitlines()[-1] if out else '?'})")
        return [exe]

    exe = args.venv / "bin" / "topaz"
    python = _venv_python(args.venv)
    if exe.exists():
        rc, out = _probe([str(exe), "--version"])
        if rc == 0 and out.splitlines()[-1].strip() == args.topaz_version:
            say(f"reusing {exe} (topaz {args.topaz_version})")
            return [str(exe)]
        say(f"{exe} is not a working topaz {args.topaz_version}; reinstalling into {args.venv}")

    try:
        import numpy
        import torch
    except ImportError as err:
        raise BenchmarkError(
            f"this Python ({sys.executable}) has no torch/numpy ({err}); install pupick's CPU torch first, "
            "so that Topaz can share it instead of pulling a CUDA build") from err
    torch_version = torch.__version__.split("+")[0]
    say(f"installing topaz-em=={args.topaz_version} into {args.venv} "
        f"(sharing torch {torch.__version__}, numpy {numpy.__version__})")
    log_dir.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        rc, out = _probe([sys.executable, "-m", "venv", "--system-site-packages", str(args.venv)])
        if rc != 0:
            raise BenchmarkError(f"cannot create the venv {args.venv}:\n{out[-2000:]}")
    constraints = args.venv / "constraints.txt"
    constraints.write_text(f"torch=={torch_version}\nnumpy=={numpy.__version__}\n")
    pip = run_measured("pip install topaz-em",
                       [python, "-m", "pip", "install", "--no-input", "-c", constraints,
                        f"topaz-em=={args.topaz_version}"],
                       log_dir / "install_topaz.log", check=False)
    if pip.returncode != 0:
        raise BenchmarkError(f"pip could not install topaz-em=={args.topaz_version} next to torch "
                             f"{torch_version}; log: {pip.log}\n{pip.log_tail()}")
    rc, out = _probe([str(python), "-c", "import torch; print(torch.__version__)"])
    if rc != 0 or out.splitlines()[-1].split("+")[0] != torch_version:
        raise BenchmarkError(f"the venv's torch is not the shared torch {torch_version}: {out[-500:]}")
    _check_torchvision(python)
    rc, out = _probe([str(exe), "--version"])
    if rc != 0:
        raise BenchmarkError(f"topaz does not run after installing:\n{out[-2000:]}")
    say(f"topaz {out.splitlines()[-1]} ready: {exe}")
    return [str(exe)]


def _topaz_python(args: argparse.Namespace, topaz: list[str]) -> Path | None:
    """The Python interpreter that runs Topaz (the venv's, or the --topaz script's shebang)."""
    if not args.skip_install:
        return _venv_python(args.venv)
    try:
        with open(topaz[0], "rb") as fh:
            first = fh.readline().decode(errors="replace").strip()
    except OSError:
        return None
    if first.startswith("#!") and "python" in first:
        return Path(first[2:].split()[0])
    return None


def topaz_disk_factor(topaz_python: Path | None, radius: int) -> float:
    """How many times Topaz over-counts the pixels of a 2-D disk of ``radius`` (1 when fixed)."""
    true_area = sum(1 for i in range(-radius, radius + 1) for j in range(-radius, radius + 1)
                    if i * i + j * j <= radius * radius)
    if topaz_python is None or not topaz_python.exists():
        return 1.0
    rc, out = _probe([str(topaz_python), "-c",
                      f"from topaz.stats import pixels_given_radius as p; print(int(p({radius}, 2)))"])
    if rc != 0:
        return 1.0
    return int(out.splitlines()[-1]) / true_area


# ------------------------------------------------------------------ data
@dataclass
class Dataset:
    train: list[Path]
    test: list[Path]
    truth: list[tuple[str, float, float]]  # (name, x, y) in original px
    pixel_size: float
    particle_diameter: float

    @property
    def radius_px(self) -> float:
        return self.particle_diameter / self.pixel_size / 2


def _stem(path: Path | str) -> str:
    name = Path(path).name
    return name[: -len(".mrc")] if name.lower().endswith(".mrc") else Path(name).stem


def read_topaz_text(path: Path) -> list[tuple[str, float, float]]:
    rows = []
    with open(path) as fh:
        header = fh.readline().split()
        ix, iy, iname = header.index("x_coord"), header.index("y_coord"), header.index("image_name")
        for line in fh:
            parts = line.split()
            if parts:
                rows.append((parts[iname], float(parts[ix]), float(parts[iy])))
    return rows


def write_topaz_text(rows: list[tuple[str, float, float]], path: Path, scale: float = 1.0,
                     shapes: dict[str, tuple[int, int]] | None = None) -> None:
    """Topaz text; with ``shapes`` ({name: (nx, ny)} of the scaled images) as clamped integers."""
    lines = ["image_name\tx_coord\ty_coord"]
    for name, x, y in rows:
        if shapes is not None:
            nx, ny = shapes[name]
            xi = min(max(int(round(x / scale)), 0), nx - 1)
            yi = min(max(int(round(y / scale)), 0), ny - 1)
            lines.append(f"{name}\t{xi}\t{yi}")
        else:
            lines.append(f"{name}\t{x / scale:.2f}\t{y / scale:.2f}")
    path.write_text("\n".join(lines) + "\n")


def _mrc_pixel_size(path: Path) -> float | None:
    import mrcfile

    with mrcfile.open(path, header_only=True, permissive=True) as m:
        size = float(m.voxel_size.x)
    return size if size > 0 else None


def prepare_data(args: argparse.Namespace) -> Dataset:
    n_total = args.n_train + args.n_test
    if args.data is not None:
        root = args.data.resolve()
        mics = sorted((root / "Micrographs").glob("*.mrc")) or sorted(root.glob("*.mrc"))
        if len(mics) < n_total:
            raise BenchmarkError(f"{root}: {len(mics)} micrographs, need {n_total}")
        truth = read_topaz_text(root / "truth.txt")
        pixel_size = _mrc_pixel_size(mics[0])
        if pixel_size is None:
            raise BenchmarkError(f"{mics[0]}: no pixel size in the MRC header")
        diameter = args.particle_diameter
    else:
        data_dir = args.workdir / "data"
        params = {"n_micrographs": n_total, "preset": args.preset, "seed": args.seed}
        stamp = data_dir / "params.json"
        if stamp.exists() and json.loads(stamp.read_text()).get("params") == params:
            say(f"reusing demo data in {data_dir}")
            meta = json.loads(stamp.read_text())
        else:
            try:
                from pupick_ext import generate_demo_data
            except ImportError as err:
                raise BenchmarkError(f"pupick_ext.generate_demo_data is not available ({err}); "
                                     "use --data DIR --particle-diameter A") from err
            if data_dir.exists():
                shutil.rmtree(data_dir)
            say(f"generating {n_total} demo micrographs (preset {args.preset}) in {data_dir}")
            t0 = time.perf_counter()
            demo = generate_demo_data(data_dir, n_micrographs=n_total, preset=args.preset, seed=args.seed)
            t = demo.truth
            truth_rows = [(str(n), float(x), float(y))
                          for n, x, y in zip(t.micrograph, t.x, t.y, strict=True)]
            write_topaz_text(truth_rows, data_dir / "truth_all.txt")
            meta = {"params": params, "micrographs": [str(Path(e.path).resolve()) for e in demo.micrographs],
                    "pixel_size": float(demo.pixel_size), "particle_diameter": float(demo.particle_diameter)}
            stamp.write_text(json.dumps(meta, indent=1))
            say(f"demo data ready in {time.perf_counter() - t0:.1f} s")
        mics = [Path(p) for p in meta["micrographs"]]
        truth = read_topaz_text(data_dir / "truth_all.txt")
        pixel_size = meta["pixel_size"]
        diameter = args.particle_diameter or meta["particle_diameter"]
    return Dataset(mics[: args.n_train], mics[args.n_train: n_total], truth, pixel_size, diameter)


def link_micrographs(paths: list[Path], folder: Path) -> Path:
    """A folder of symlinks, so both programs see exactly this subset (names = stems)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for p in paths:
        (folder / p.name).symlink_to(p.resolve())
    return folder


def choose_labels(data: Dataset, per_micrograph: int, seed: int) -> list[tuple[str, float, float]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = []
    for path in data.train:
        rows = [r for r in data.truth if r[0] == _stem(path)]
        if not rows:
            raise BenchmarkError(f"no truth coordinates for training micrograph {_stem(path)}")
        pick = rng.choice(len(rows), size=min(per_micrograph, len(rows)), replace=False)
        labels.extend(rows[i] for i in sorted(pick))
    return labels


# ------------------------------------------------------------------ runs
@dataclass
class ProgramResult:
    name: str
    train_steps: list[Measured] = field(default_factory=list)
    extract_steps: list[Measured] = field(default_factory=list)
    picks_path: Path | None = None
    n_test: int = 0
    notes: list[str] = field(default_factory=list)
    ap: float | None = None
    max_recall: float | None = None
    n_picks: int | None = None

    @property
    def train_s(self) -> float:
        return sum(m.wall_s for m in self.train_steps)

    @property
    def extract_s(self) -> float:
        return sum(m.wall_s for m in self.extract_steps)

    @property
    def mics_per_s(self) -> float:
        return self.n_test / self.extract_s if self.extract_s > 0 else float("nan")

    @property
    def peak_rss(self) -> float:
        return max((m.peak_rss_mib for m in self.train_steps + self.extract_steps), default=float("nan"))


def run_topaz(args, topaz: list[str], data: Dataset, labels, expected: float, out: Path) -> ProgramResult:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    logs = out / "logs"
    env = thread_env(args.threads)
    ds = args.downsample
    dev = "0" if args.device == "cuda" else "-1"
    threads = ["-j", str(args.threads)]
    res = ProgramResult("Topaz", n_test=len(data.test))

    # training: preprocess (downsample + GMM normalisation) + train
    res.train_steps.append(run_measured(
        "topaz preprocess (train)",
        topaz + ["preprocess", "-s", str(ds), "-d", dev, "-t", "0", *threads, "-o", out / "pre_train",
                 *[str(p) for p in data.train]],
        logs / "preprocess_train.log", env=env))
    import mrcfile

    shapes = {}
    for p in sorted((out / "pre_train").glob("*.mrc")):
        with mrcfile.open(p, header_only=True, permissive=True) as m:
            shapes[_stem(p)] = (int(m.header.nx), int(m.header.ny))
    labels_ds = out / "labels_downsampled.txt"
    write_topaz_text(labels, labels_ds, scale=ds, shapes=shapes)

    radius = 3  # Topaz default training radius (downsampled px); pupick's default is the same
    cmd = topaz + ["train", "-d", dev, "--num-workers", "0", *threads,
                   "--train-images", out / "pre_train", "--train-targets", labels_ds,
                   "-r", str(radius), "--num-epochs", str(args.epochs),
                   "--epoch-size", str(args.steps_per_epoch),
                   "--save-prefix", out / "model", "-o", out / "train_curve.txt"]
    if not args.topaz_pretrained:
        cmd.append("--no-pretrained")
    factor = topaz_disk_factor(_topaz_python(args, topaz), radius)
    if args.topaz_native_pi or abs(factor - 1.0) < 1e-9:
        cmd += ["-n", f"{expected:g}"]
    else:
        total = sum(nx * ny for nx, ny in shapes.values())
        area = sum(1 for i in range(-radius, radius + 1) for j in range(-radius, radius + 1)
                   if i * i + j * j <= radius * radius)
        n_exp = expected * len(data.train)
        # Topaz uses pi_eff = pi - p_observed with p_observed = n_labels*factor*area/total;
        # choose pi so that pi_eff = (n_exp - n_labels)*area/total, the intended value.
        pi = (n_exp * area + len(labels) * (factor - 1.0) * area) / total
        cmd += ["--pi", f"{pi:.8g}"]
        res.notes.append(f"topaz train got --pi {pi:.6g} instead of -n {expected:g}: this Topaz counts "
                         f"{factor:g}x the pixels of a radius-{radius} disk (pixels_given_radius over a 3-D "
                         "grid); --pi restores the intended GE target (--topaz-native-pi to disable)")
    cmd += shlex.split(args.topaz_train_args)
    res.train_steps.append(run_measured("topaz train", cmd, logs / "train.log", env=env))
    models = sorted(out.glob("model_epoch*.sav"))
    if not models:
        raise BenchmarkError(f"topaz train wrote no model; see {logs / 'train.log'}")
    model = models[-1]  # no validation split given: the last epoch, as with a fixed budget

    # extraction: preprocess the held-out micrographs + extract (coordinates scaled back by -x)
    res.extract_steps.append(run_measured(
        "topaz preprocess (test)",
        topaz + ["preprocess", "-s", str(ds), "-d", dev, "-t", "0", *threads, "-o", out / "pre_test",
                 *[str(p) for p in data.test]],
        logs / "preprocess_test.log", env=env))
    extract_radius = max(1, int(data.radius_px / ds))
    res.picks_path = out / "picks.txt"
    res.extract_steps.append(run_measured(
        "topaz extract",
        topaz + ["extract", "-m", model, "-r", str(extract_radius), "-t", f"{args.threshold:g}",
                 "-x", str(ds), "-d", dev, "--num-workers", "0", *threads, "-o", res.picks_path,
                 *[str(p) for p in sorted((out / "pre_test").glob("*.mrc"))]],
        logs / "extract.log", env=env))
    return res


def _pupick_command(args) -> list[str]:
    if args.pupick:
        return shlex.split(args.pupick)
    beside = Path(sys.executable).parent / "pupick"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "import sys; from pupick_ext.cli import main; sys.exit(main())"]


def _help(cmd: list[str], env) -> tuple[set[str], dict[str, str]]:
    """The long options that ``cmd --help`` lists, and their ``[default: ...]`` values."""
    rc, out = _probe(cmd + ["--help"], env=env, timeout=120)
    if rc != 0:
        raise BenchmarkError(f"{shlex.join(cmd)} --help failed:\n{out[-2000:]}")
    flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", out))
    defaults = {}
    for m in re.finditer(r"^\s*(?:-\w, )?(--[a-z][a-z0-9-]*)\b(.*?)(?=^\s*-{1,2}\w|\Z)", out, re.M | re.S):
        d = re.search(r"\[default:\s*([^\]]+)\]", m.group(2))
        if d:
            defaults[m.group(1)] = " ".join(d.group(1).split())
    return flags, defaults


def run_pupick(args, data: Dataset, labels, labels_path: Path, expected: float, out: Path) -> ProgramResult:
    if out.exists():
        shutil.rmtree(out)  # pupick resumes from checkpoints in its output folder
    out.mkdir(parents=True)
    logs = out / "logs"
    env = thread_env(args.threads)
    pupick = _pupick_command(args)
    res = ProgramResult("pupick", n_test=len(data.test))
    train_dir = link_micrographs(data.train, out / "train_micrographs")
    test_dir = link_micrographs(data.test, out / "test_micrographs")

    flags, defaults = _help(pupick + ["train"], env)
    differs = [f"{flag} {defaults[flag]}" for flag in ("--learning-rate", "--holdout", "--patience")
               if flag in defaults]
    if "--autoencoder" in flags:
        differs.append("--autoencoder as pupick train --help says")
    if differs:
        res.notes.append("pupick train defaults kept (Topaz: learning rate 2e-4, no hold-out, no early "
                         "stopping, no autoencoder): " + ", ".join(differs))
    cmd = pupick + ["train", "--micrographs", train_dir, "--labels", labels_path,
                    "--particle-diameter", f"{data.particle_diameter:g}", "-o", out / "model",
                    "--epochs", str(args.epochs)]
    optional = {
        "--threads": str(args.threads),
        "--steps-per-epoch": str(args.steps_per_epoch),
        "--expected-particles": f"{expected:g}",
        "--downsample": str(args.downsample),
        "--seed": str(args.seed),
        "--device": args.device,
    }
    for flag, value in optional.items():
        if flag in flags:
            cmd += [flag, value]
        elif flag in ("--steps-per-epoch", "--expected-particles", "--downsample"):
            res.notes.append(f"pupick train has no {flag}; its default is used")
    cmd += shlex.split(args.pupick_train_args)
    res.train_steps.append(run_measured("pupick train", cmd, logs / "train.log", env=env))
    model = out / "model" / "model.pupick"
    if not model.exists():
        found = sorted((out / "model").rglob("*.pupick"))
        if not found:
            raise BenchmarkError(f"pupick train wrote no model.pupick; see {logs / 'train.log'}")
        model = found[-1]

    flags, _ = _help(pupick + ["extract"], env)
    res.picks_path = out / "picks.txt"
    cmd = pupick + ["extract", "--model", model, "--micrographs", test_dir, "-o", res.picks_path,
                    "--threshold", f"{args.threshold:g}"]
    for flag, value in {"--threads": str(args.threads), "--device": args.device}.items():
        if flag in flags:
            cmd += [flag, value]
    cmd += shlex.split(args.pupick_extract_args)
    res.extract_steps.append(run_measured("pupick extract", cmd, logs / "extract.log", env=env))
    return res


# ------------------------------------------------------------------ evaluation and report
def evaluate_all(results: list[ProgramResult], data: Dataset) -> None:
    try:
        from pupick_ext import Picks, evaluate, read_coordinates
    except ImportError as err:
        say(f"WARNING: pupick_ext.evaluate is not available ({err}); AP is left empty")
        return
    import numpy as np

    test_names = {_stem(p) for p in data.test}
    rows = [r for r in data.truth if r[0] in test_names]
    names = np.array([r[0] for r in rows], dtype=object)
    reference = Picks(names, [r[1] for r in rows], [r[2] for r in rows])
    for res in results:
        picks = read_coordinates(res.picks_path, "txt")
        picks = picks.select(np.isin(picks.micrograph, list(test_names)))
        ev = evaluate(picks, reference, data.radius_px)
        res.ap = float(ev.average_precision)
        res.n_picks = int(ev.n_picks)
        recall = np.asarray(ev.curve[2], dtype=float) if ev.curve is not None else np.empty(0)
        res.max_recall = float(np.nanmax(recall)) if recall.size else None


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}"


def report(args, data: Dataset, results: list[ProgramResult], expected: float,
           n_labels: int) -> tuple[str, str, str]:
    by = {r.name: r for r in results}
    topaz, pupick = by.get("Topaz"), by.get("pupick")
    metrics = [
        ("AP (held-out)", lambda r: r.ap, 3),
        ("max recall", lambda r: r.max_recall, 3),
        ("picks", lambda r: None if r.n_picks is None else float(r.n_picks), 0),
        ("training wall time (s)", lambda r: r.train_s, 1),
        ("extraction (micrographs/s)", lambda r: r.mics_per_s, 3),
        ("peak RSS (MiB)", lambda r: r.peak_rss, 0),
    ]
    header = ["metric"] + [r.name for r in results] + (["pupick/Topaz"] if topaz and pupick else [])
    rows = []
    for label, get, digits in metrics:
        row = [label] + [_fmt(get(r), digits) for r in results]
        if topaz and pupick:
            row.append(_ratio(get(pupick), get(topaz)))
        rows.append(row)
    table = markdown_table(header, rows)

    setup = (f"{args.n_train} training + {args.n_test} held-out micrographs "
             f"({'preset ' + args.preset if args.data is None else args.data}), {n_labels} labels "
             f"({args.labels_per_micrograph}/micrograph), expected particles {expected:g}/micrograph, "
             f"{args.epochs} epochs x {args.steps_per_epoch} steps, downsample {args.downsample}, "
             f"threshold {args.threshold:g}, {args.threads} thread(s), device {args.device}, "
             f"AP match radius {data.radius_px:g} px")
    steps = []
    for r in results:
        for phase, ms in (("train", r.train_steps), ("extract", r.extract_steps)):
            for m in ms:
                steps.append([r.name, phase, m.label, f"{m.wall_s:.1f}", f"{m.peak_rss_mib:.0f}"])
    detail = markdown_table(["program", "phase", "step", "wall (s)", "peak RSS (MiB)"], steps)
    commands = "\n".join(f"    {shlex.join(m.argv)}"
                         for r in results for m in r.train_steps + r.extract_steps)
    notes = "\n".join(f"- {r.name}: {n}" for r in results for n in r.notes)
    md = (f"# pupick vs Topaz\n\n{setup}.\n\n{table}\n\n"
          "Ratios are pupick/Topaz: above 1 is better for AP, recall and micrographs/s, below 1 is "
          "better for time and memory. Training and extraction times are wall clock around whole "
          "processes (start-up included); Topaz's times include its separate `topaz preprocess` step. "
          "Peak RSS is the largest single process of each program.\n\n"
          f"## Steps\n\n{detail}\n\n## Commands\n\n{commands}\n"
          + (f"\n## Notes\n\n{notes}\n" if notes else ""))
    return md, table, setup


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    logs = args.workdir / "logs"
    try:
        topaz = ensure_topaz(args, logs) if "topaz" in args.programs else None
        data = prepare_data(args)
        if len(data.test) < args.n_test or len(data.train) < args.n_train:
            raise BenchmarkError("not enough micrographs for --n-train + --n-test")
        labels = choose_labels(data, args.labels_per_micrograph, args.seed)
        labels_path = args.workdir / "labels.txt"
        write_topaz_text(labels, labels_path)
        train_names = {_stem(p) for p in data.train}
        if args.expected_particles is not None:
            expected = args.expected_particles
        else:
            expected = round(sum(1 for r in data.truth if r[0] in train_names) / len(data.train), 1)
        say(f"{len(data.train)} train / {len(data.test)} test micrographs, {len(labels)} labels, "
            f"expected {expected:g} particles/micrograph, pixel {data.pixel_size:g} A, "
            f"diameter {data.particle_diameter:g} A")

        results = []
        if "topaz" in args.programs:
            say("Topaz: preprocess + train + extract")
            results.append(run_topaz(args, topaz, data, labels, expected, args.workdir / "topaz"))
            say(f"Topaz done: train {results[-1].train_s:.1f} s, extract {results[-1].extract_s:.1f} s")
        if "pupick" in args.programs:
            say("pupick: train + extract")
            results.append(run_pupick(args, data, labels, labels_path, expected, args.workdir / "pupick"))
            say(f"pupick done: train {results[-1].train_s:.1f} s, extract {results[-1].extract_s:.1f} s")
        evaluate_all(results, data)
    except BenchmarkError as err:
        print(f"compare_topaz: {err}", file=sys.stderr)
        return 1

    md, table, setup = report(args, data, results, expected, len(labels))
    out = args.workdir / "compare_topaz.md"
    out.write_text(md)
    print()
    print(setup + ".")
    print()
    print(table)
    print()
    for r in results:
        for n in r.notes:
            print(f"note ({r.name}): {n}")
    print(f"full report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
