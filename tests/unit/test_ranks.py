"""Ranks from launcher environments, shards, and file coordination (pupick_ext.parallel.distributed)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pupick_ext import Coordinator, RankInfo, rank_info
from pupick_ext.errors import AbortRequested, PupickError, SettingsError
from pupick_ext.io.picks import Picks
from pupick_ext.parallel.distributed import default_threads, gather_picks


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1, "none", "")),
    ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "abc"},
     (1, 4, "torchrun", "abc")),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3", "PMIX_NAMESPACE": "prterun-x-1@1"},
     (2, 3, "openmpi", "prterun-x-1_1")),
    ({"PMI_RANK": "0", "PMI_SIZE": "2", "SLURM_JOB_ID": "7", "SLURM_STEP_ID": "3"}, (0, 2, "pmi", "7.3")),
    ({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_ID": "99", "SLURM_STEP_ID": "0"},
     (1, 2, "slurm", "99.0")),
    ({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "99", "SLURM_STEP_ID": "2"},
     (3, 4, "slurm", "99.2")),
    ({"PUPICK_RANK": "1", "PUPICK_WORLD_SIZE": "2", "RANK": "0", "WORLD_SIZE": "8", "PUPICK_RUN_ID": "r"},
     (1, 2, "explicit", "r")),
])
def test_rank_info_reads_each_launcher(env, expected) -> None:
    info = rank_info(env)
    assert (info.rank, info.world_size, info.launcher, info.run_id) == expected
    assert info.is_main == (info.rank == 0)
    assert info.active == (info.world_size > 1)


def test_a_batch_script_is_one_process() -> None:
    """sbatch sets SLURM_PROCID=0 and SLURM_NTASKS=N in the script itself: not N ranks."""
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "5", "SLURM_LOCALID": "0"}
    assert rank_info(env) == RankInfo()
    env["SLURM_STEP_ID"] = str(0xFFFFFFFE)  # the batch step
    assert not rank_info(env).active


def test_mpirun_inside_an_allocation_uses_mpi_ranks() -> None:
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "8",
           "SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    info = rank_info(env)
    assert (info.rank, info.world_size, info.launcher, info.local_world_size) == (1, 2, "openmpi", 2)


def test_an_impossible_rank_is_an_error() -> None:
    with pytest.raises(SettingsError):
        rank_info({"RANK": "4", "WORLD_SIZE": "4"})


def test_shards_are_round_robin_and_cover_everything() -> None:
    items = list(range(11))
    shards = [RankInfo(r, 3).shard(items) for r in range(3)]
    assert shards[0] == [0, 3, 6, 9] and shards[2] == [2, 5, 8]
    assert sorted(sum(shards, [])) == items
    assert RankInfo().shard(items) == items


def test_default_threads_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_threads(RankInfo()) == 0
    assert default_threads(RankInfo(0, 4, local_world_size=4)) == 4
    # srun --cpus-per-task 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert default_threads(RankInfo(0, 4, local_world_size=4)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads(RankInfo(0, 4, local_world_size=4)) == 0


def test_devices_per_rank_on_a_cpu_host() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    assert RankInfo(1, 2, local_rank=1).device("auto") == "cpu"
    assert RankInfo(1, 2, local_rank=1).device("cpu") == "cpu"
    assert RankInfo().device("auto") == "auto"


def _coordinators(tmp_path, world: int = 3, run_id: str = "run1") -> list[Coordinator]:
    return [Coordinator(RankInfo(r, world, launcher="test", run_id=run_id), tmp_path, poll_seconds=0.01)
            for r in range(world)]


def test_file_gather_and_broadcast(tmp_path) -> None:
    ranks = _coordinators(tmp_path)
    assert ranks[0].transport == "files"
    ranks[0].broadcast("model", {"path": "m.pupick"})
    assert ranks[2].broadcast("model", None) == {"path": "m.pupick"}
    results: list = []
    waiter = threading.Thread(target=lambda: results.append(ranks[0].gather("done", {"rank": 0})))
    waiter.start()
    time.sleep(0.05)
    assert ranks[2].gather("done", {"rank": 2}) is None
    assert waiter.is_alive()  # rank 0 still waits for rank 1
    assert ranks[1].gather("done", {"rank": 1}) is None
    waiter.join(5)
    assert results == [[{"rank": 0}, {"rank": 1}, {"rank": 2}]]
    ranks[0].close()
    assert not (tmp_path / ".pupick_ranks").exists()


def test_runs_with_other_ids_do_not_see_each_other(tmp_path) -> None:
    old = _coordinators(tmp_path, 2, "old-run")
    old[1].gather("done", {"ok": True, "stale": True})
    new = _coordinators(tmp_path, 2, "new-run")
    with pytest.raises(PupickError, match="did not report"):
        new[0].gather("done", {"ok": True}, timeout=0.2)


def test_waiting_rank_0_can_be_stopped(tmp_path) -> None:
    ranks = _coordinators(tmp_path, 2)
    with pytest.raises(AbortRequested):
        ranks[0].gather("done", {}, should_stop=lambda: True)


def test_single_process_needs_no_coordination(tmp_path) -> None:
    single = Coordinator(RankInfo(), tmp_path)
    assert single.transport == "none"
    assert single.gather("x", {"a": 1}) == [{"a": 1}]
    assert single.broadcast("x", {"b": 2}) == {"b": 2}
    assert not (tmp_path / ".pupick_ranks").exists()


def test_gather_picks_restores_the_single_process_order(tmp_path) -> None:
    order = [f"m{i}" for i in range(5)]
    ranks = _coordinators(tmp_path, 2)

    def picks_for(names):
        return Picks.concat(Picks.for_one(n, [i + 0.1, i + 0.2], [1.0 / 3, 2.0 / 3], [float(i), -1e-300])
                            for i, n in enumerate(order) if n in names)

    assert gather_picks(ranks[1], "extract", picks_for(order[1::2]), 2, order, combine=True) is None
    merged, n_picks, n_mics = gather_picks(ranks[0], "extract", picks_for(order[0::2]), 3, order,
                                           combine=True)
    expected = picks_for(order)
    assert list(merged.micrograph) == list(expected.micrograph)
    for column in ("x", "y", "score"):
        assert getattr(merged, column).tobytes() == getattr(expected, column).tobytes()
    assert (n_picks, n_mics) == (10, 5)


def test_gather_picks_raises_a_failed_rank(tmp_path) -> None:
    ranks = _coordinators(tmp_path, 2)
    ranks[1].gather("extract", {"ok": False, "error": "mic_7.mrc: truncated"})
    with pytest.raises(PupickError, match="rank 1: mic_7.mrc: truncated"):
        gather_picks(ranks[0], "extract", Picks(), 0, [], combine=True)


def test_messages_are_json_files(tmp_path) -> None:
    ranks = _coordinators(tmp_path, 2)
    ranks[1].gather("m", {"ok": True, "n": 3})
    files = list((tmp_path / ".pupick_ranks" / "run1").glob("m.1.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == {"ok": True, "n": 3}


# --------------------------------------------------------- sharded extraction (pupick_ext.parallel.sharding)
def _picker(names_seen: list):
    def pick(todo):
        for name in todo:
            names_seen.append(name)
            yield name, Picks.for_one(name, [1.0, 2.0], [3.0, 4.0], [0.5, -0.5])

    return pick


def test_pick_sharded_one_process_skips_finished_and_writes_each() -> None:
    from pupick_ext import pick_sharded

    seen, written, told = [], [], []
    result = pick_sharded(["a", "b", "c"], _picker(seen), key=str, name="extract",
                          finished=lambda n: n == "b",
                          on_skip=lambda todo, done: told.append((todo, done)),
                          write=lambda n, p: written.append((n, len(p))))
    assert seen == ["a", "c"] and written == [("a", 2), ("c", 2)] and told == [(["a", "c"], ["b"])]
    assert result.main and (result.n_picks, result.n_micrographs, result.skipped) == (4, 2, ["b"])
    assert list(result.picks.micrograph) == ["a", "a", "c", "c"]


def test_pick_sharded_two_ranks_combine_in_single_process_order(tmp_path) -> None:
    from pupick_ext import pick_sharded

    ranks = _coordinators(tmp_path, 2)
    names = ["m0", "m1", "m2", "m3", "m4"]
    other = pick_sharded(names, _picker([]), key=str, name="extract", coordinator=ranks[1], combine=True)
    assert not other.main and other.n_micrographs == 2
    main = pick_sharded(names, _picker([]), key=str, name="extract", coordinator=ranks[0], combine=True)
    assert main.main and (main.n_picks, main.n_micrographs) == (10, 5)
    assert list(main.picks.micrograph) == [n for n in names for _ in range(2)]
    assert not (tmp_path / ".pupick_ranks").exists()  # rank 0 cleaned up


def test_a_failing_rank_reports_once_and_rank_0_raises_it(tmp_path) -> None:
    from pupick_ext import pick_sharded, report_failure

    ranks = _coordinators(tmp_path, 2)

    def broken(todo):
        raise PupickError("truncated\nmore detail", "mic_1.mrc")
        yield  # pragma: no cover

    with pytest.raises(PupickError):
        pick_sharded(["mic_0", "mic_1"], broken, key=str, name="pick", coordinator=ranks[1])
    assert ranks[1].sent("pick")
    report_failure(ranks[1], "pick", RuntimeError("later"))  # already reported: no second message
    with pytest.raises(PupickError, match=r"1 of 2 ranks failed; rank 1: mic_1.mrc: truncated$"):
        pick_sharded(["mic_0", "mic_1"], _picker([]), key=str, name="pick", coordinator=ranks[0])


def test_first_line_and_run_record(tmp_path) -> None:
    from pupick_ext import first_line, write_run_record

    assert first_line(ValueError("  one\ntwo")) == "one" and first_line(KeyError()) == "KeyError"
    assert first_line("x" * 20, 5) == "xxxxx" and first_line("") == ""
    write_run_record(tmp_path / "r.json", {"path": tmp_path, "n": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"path": str(tmp_path), "n": 1}
    for n in (1, 2):
        write_run_record(tmp_path / "runs.json", {"run": n}, append=True, indent=2)
    text = (tmp_path / "runs.json").read_text()
    assert json.loads(text) == [{"run": 1}, {"run": 2}] and text.endswith("]\n")
