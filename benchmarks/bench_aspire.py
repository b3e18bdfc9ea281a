#!/usr/bin/env python3
"""pupick and Topaz side by side on the independent ASPIRE benchmark (``../shared/bench``).

For each dataset made by ``../shared/bench/make_dataset.py`` this runs the benchmark's
protocol with both programs, one after the other on the same machine:

* labels: the first whole training micrographs (``particles_train.txt`` order) until at
  least ``--labels`` particles (3 micrographs on medium, 2 on hard); each program sees
  only those micrographs;
* pupick: ``pupick train -m <those> -l labels.txt -d <diameter> -n <mean count> -o model/``
  with every other setting at its default (``--pupick-args`` adds options, for ablations),
  then ``pupick extract -t -8`` on the 10 test micrographs;
* Topaz: ``run_topaz.sh DATASET OUT TOPAZ N 1 500`` (the benchmark's reference budget);
* both scored by the benchmark's own ``evaluate.py``.

It prints one Markdown table (AP, F1, the false positives by distractor kind, training
and extraction wall time, and the picks at pupick's recommended threshold against the
true count), and writes it with every command and log under ``--workdir``.

    python benchmarks/bench_aspire.py --data $BENCH/data/medium-s1 $BENCH/data/hard-s1 \\
        --topaz $BENCH/topaz-venv/bin/topaz --bench-python $BENCH/venv/bin/python

Nothing of Topaz is imported: it runs as a program from its own virtual environment.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, markdown_table, run_measured, thread_env  # noqa: E402

BENCH_DIR = REPO_ROOT.parent / "shared" / "bench"


def protocol_labels(dataset: Path, n_labels: int,
                    max_micrographs: int | None = None) -> tuple[list[str], list[str]]:
    """(micrograph names, label rows) of the first whole training micrographs with >= n_labels particles."""
    lines = (dataset / "particles_train.txt").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    names: list[str] = []
    kept = [header]
    count = 0
    for row in rows:
        name = row.split("\t")[0]
        if name not in names:
            if count >= n_labels or (max_micrographs is not None and len(names) >= max_micrographs):
                break
            names.append(name)
        kept.append(row)
        count += 1
    return names, kept


def evaluate(bench_python: str, dataset: Path, picks: Path, log: Path) -> dict:
    run_measured("evaluate", [bench_python, BENCH_DIR / "evaluate.py", "--dataset", dataset,
                              "--split", "test", "--pred", picks], log)
    return json.loads(log.read_text().splitlines()[-1])


def run_pupick(args: argparse.Namespace, dataset: Path, out: Path) -> dict:
    meta = json.loads((dataset / "metadata.json").read_text())
    names, rows = protocol_labels(dataset, args.labels, args.max_micrographs)
    out.mkdir(parents=True, exist_ok=True)
    labels = out / "labels.txt"
    labels.write_text("\n".join(rows) + "\n")
    diameter = 2 * meta["particle_radius_px"] * meta["pixel_size_A"]
    expected = round(meta["particles_per_micrograph"]["mean"])
    env = thread_env(args.threads)
    pupick = [sys.executable, "-m", "pupick_ext.cli"]
    mics = [str(dataset / "micrographs" / f"{n}.mrc") for n in names]
    train_cmd = [*pupick, "train", *sum((["-m", m] for m in mics), []), "-l", labels, "-d", f"{diameter:g}",
                 "-n", str(expected), "-o", out / "model", "--threads", str(args.threads),
                 *shlex.split(args.pupick_args)]
    train = run_measured("pupick train", train_cmd, out / "train.log", env=env)
    test_names = (dataset / "test_images.txt").read_text().split()
    test = [str(dataset / "micrographs" / f"{n}.mrc") for n in test_names]
    extract_cmd = [*pupick, "extract", *sum((["-m", m] for m in test), []),
                   "--model", out / "model" / "model.pupick", "-t", "-8", "-o", out / "picks.txt",
                   "--threads", str(args.threads), "--overwrite"]
    extract = run_measured("pupick extract", extract_cmd, out / "extract.log", env=env)
    result = evaluate(args.bench_python, dataset, out / "picks.txt", out / "evaluate.log")
    model_info = json.loads((out / "model" / "train_settings.json").read_text())
    recommended = _recommended(out / "model" / "threshold_table.tsv")
    result.update(train_s=train.wall_s, extract_s=extract.wall_s, labels=len(rows) - 1,
                  micrographs=len(names), recommended=recommended, best_epoch=model_info.get("best_epoch"))
    if recommended is not None:  # picks and precision at the recommended threshold
        kept = out / "picks_recommended.txt"
        text = (out / "picks.txt").read_text().splitlines()
        col = text[0].split("\t").index("score")
        above = [r for r in text[1:] if float(r.split("\t")[col]) >= recommended]
        kept.write_text("\n".join([text[0]] + above) + "\n")
        at = evaluate(args.bench_python, dataset, kept, out / "evaluate_recommended.log")
        n_true = sum(1 for _ in (dataset / "particles_test.txt").open()) - 1
        result.update(rec_count_ratio=(len(text) - 1 and at["n_pred"]) / n_true,
                      rec_precision=at["precision"] if at["n_pred"] == at["n_pred_at_threshold"] else None,
                      rec_picks=at["n_pred"])
        if result["rec_precision"] is None:  # evaluate reports P/R at its best threshold; recompute at ours
            result["rec_precision"] = _precision_all(args.bench_python, dataset, kept, out)
    return result


def _precision_all(bench_python: str, dataset: Path, picks: Path, out: Path) -> float:
    """Precision of all picks in ``picks`` (scores dropped, so evaluate.py keeps every pick)."""
    text = picks.read_text().splitlines()
    col = text[0].split("\t").index("score")
    flat = out / "picks_recommended_unscored.txt"
    unscored = ("\t".join(c for i, c in enumerate(r.split("\t")) if i != col) for r in text)
    flat.write_text("\n".join(unscored) + "\n")
    return evaluate(bench_python, dataset, flat, out / "evaluate_recommended_unscored.log")["precision"]


def _recommended(table: Path) -> float | None:
    for line in table.read_text().splitlines()[1:]:
        cells = line.split("\t")
        if len(cells) > 3 and cells[3].strip() == "*":
            return float(cells[0])
    return None


def read_topaz_log(log: Path) -> dict | None:
    """The evaluation and stage times (s) from what ``run_topaz.sh`` printed; None before its result."""
    lines = log.read_text().splitlines()
    stages = {ln.split()[0]: float(ln.split()[1]) for ln in lines
              if len(ln.split()) == 2 and ln.split()[0].endswith("_s")}
    found = next((ln for ln in reversed(lines) if ln.startswith("{")), None)
    if found is None:  # still running, or it failed before evaluate.py printed its result
        return None
    result = json.loads(found)
    # topaz preprocess handles train and test micrographs in one stage: half is counted to each side
    result.update(train_s=stages.get("train_s", 0.0) + stages.get("preprocess_s", 0.0) / 2,
                  extract_s=stages.get("extract_s", 0.0) + stages.get("preprocess_s", 0.0) / 2)
    return result


def run_topaz(args: argparse.Namespace, dataset: Path, out: Path) -> dict | None:
    if args.topaz_dir is not None:  # a run_topaz.sh run made beside this one (same machine, same time)
        log = args.topaz_dir / dataset.name / "out.txt"
        return read_topaz_log(log) if log.exists() else None
    if not args.topaz:
        return None
    result_file = out / "result.json"
    if args.reuse_topaz and result_file.exists():
        return json.loads(result_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    env = thread_env(args.threads)
    env.update(PY=args.bench_python)
    run_measured("topaz", ["bash", BENCH_DIR / "run_topaz.sh", dataset, out, args.topaz, str(args.labels),
                           str(args.topaz_epochs), str(args.topaz_epoch_size)],
                 out / "run_topaz.log", env=env)
    result = read_topaz_log(out / "run_topaz.log")
    if result is not None:
        result_file.write_text(json.dumps(result))
    return result


def _fp(result: dict) -> str:
    fp = result.get("fp_breakdown") or {}
    return " ".join(f"{k} {v}" for k, v in sorted(fp.items(), key=lambda kv: -kv[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", type=Path, required=True,
                   help="dataset folders made by make_dataset.py")
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "bench_out" / "aspire")
    p.add_argument("--labels", type=int, default=300,
                   help="label particles until at least this many (protocol: 300)")
    p.add_argument("--max-micrographs", type=int, default=None,
                   help="label at most this many micrographs (half-label runs)")
    p.add_argument("--pupick-args", default="", help="extra options for pupick train (ablations)")
    p.add_argument("--tag", default="pupick", help="name of this pupick variant in the table and workdir")
    p.add_argument("--topaz", default=None, help="the topaz program (omit to run pupick only)")
    p.add_argument("--topaz-epochs", type=int, default=1)
    p.add_argument("--topaz-epoch-size", type=int, default=500)
    p.add_argument("--reuse-topaz", action="store_true",
                   help="reuse a finished Topaz run of the same workdir")
    p.add_argument("--topaz-dir", type=Path, default=None,
                   help="read Topaz's results from DIR/<dataset>/out.txt "
                        "(run_topaz.sh output run beside this one)")
    p.add_argument("--bench-python", default=sys.executable,
                   help="a python with numpy and scipy for evaluate.py")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    for dataset in args.data:
        name = dataset.name
        mine = run_pupick(args, dataset, args.workdir / name / args.tag)
        topaz = run_topaz(args, dataset, args.workdir / name / "topaz")
        row = [name, f"{mine['ap']:.3f}", "-" if topaz is None else f"{topaz['ap']:.3f}",
               "-" if topaz is None else f"{mine['ap'] - topaz['ap']:+.3f}", f"{mine['train_s']:.0f}",
               "-" if topaz is None else f"{topaz['train_s']:.0f}", f"{mine['extract_s']:.0f}",
               f"{mine.get('rec_count_ratio', float('nan')):.2f}",
               f"{mine.get('rec_precision') or float('nan'):.2f}",
               _fp(mine), "-" if topaz is None else _fp(topaz)]
        rows.append(row)
        print(json.dumps({"dataset": name, "tag": args.tag, "pupick": mine, "topaz": topaz}), flush=True)
    header = ["dataset", f"{args.tag} AP", "Topaz AP", "difference", f"{args.tag} train s", "Topaz train s",
              f"{args.tag} extract s", "picks/true at recommended", "precision at recommended",
              f"{args.tag} false positives", "Topaz false positives"]
    table = markdown_table(header, rows)
    print(table)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / f"table_{args.tag}.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
