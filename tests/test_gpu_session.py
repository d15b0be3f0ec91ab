"""The prepared device-session scripts (scripts/gpu_session.sh and its helpers).

A lent GPU comes rarely and for minutes, so the script that uses it must not fail on a typo.
Here it runs as a dry run on the CPU (GS_DEVICE=cpu, GS_QUICK=1): the same stages, commands
and bookkeeping, with the benchmarks at --quick size and the CUDA-only checks left out.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["gpu_session.sh", "build_prebuilt.sh", "collect_gpu_results.sh", "source_hash.sh", "setup_env.sh", "cuda_home.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_parse(name):
    r = subprocess.run(["bash", "-n", str(REPO / "scripts" / name)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_source_hash_is_stable_and_tracks_sources(tmp_path):
    h1 = subprocess.run(["bash", "scripts/source_hash.sh"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    h2 = subprocess.run(["bash", "scripts/source_hash.sh"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{16}", h1) and h1 == h2
    # a copy with one kernel file changed hashes differently
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(REPO / "csrc"), str(REPO / "kernels"), str(REPO / "include"), str(REPO / "setup.py"), str(copy)],
                   check=True)
    subprocess.run(["cp", str(REPO / "scripts" / "source_hash.sh"), str(copy / "scripts")], check=True)
    same = subprocess.run(["bash", "scripts/source_hash.sh"], cwd=copy, capture_output=True, text=True, check=True).stdout.strip()
    assert same == h1
    with open(copy / "kernels" / "window_index.h", "a") as f:
        f.write("\n// changed\n")
    changed = subprocess.run(["bash", "scripts/source_hash.sh"], cwd=copy, capture_output=True, text=True, check=True).stdout.strip()
    assert changed != h1
    # the C++ API's header is a source of the extension too (csrc/api.cpp includes it)
    with open(copy / "include" / "graphsmile" / "graphsmile.h", "a") as f:
        f.write("\n// changed\n")
    changed_api = subprocess.run(["bash", "scripts/source_hash.sh"], cwd=copy, capture_output=True, text=True, check=True).stdout.strip()
    assert changed_api not in (h1, changed)


def _session(out, device: str, stages: str, deadline_s: int):
    """Runs scripts/gpu_session.sh as a dry run (--quick sizes) into ``out``; returns the
    completed process and summary.txt's text."""
    env = dict(os.environ, OUT=str(out), GS_DEVICE=device, GS_QUICK="1", PY=sys.executable, OMP_NUM_THREADS="1",
               GS_STAGES=stages, GS_DEADLINE_S=str(deadline_s))
    r = subprocess.run(["bash", "scripts/gpu_session.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=deadline_s + 100)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r, (out / "summary.txt").read_text()


def test_dry_run_and_collect(tmp_path):
    out = tmp_path / "out"
    r, summary = _session(out, "cpu", "env ops_cuda", 300)
    # ext is added because ops_cuda needs it; every stage that ran ended with rc=0
    for stage in ("env", "ext", "ops_cuda"):
        assert re.search(rf"{stage}: rc=0", summary), summary
    assert "SKIPPED" not in summary and "TIMEOUT" not in summary
    # the device tool returns at most 8 files from $OUT: summary.txt and one archive
    assert sorted(p.name for p in out.iterdir()) == ["session.tgz", "summary.txt"]
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "xzf", str(out / "session.tgz"), "-C", str(unpacked)], check=True)
    assert "extension OK" in (unpacked / "logs" / "ext.log").read_text()
    assert (unpacked / "logs" / "ext.ok").exists()
    recs = [json.loads(line) for line in (unpacked / "results" / "ops.jsonl").read_text().splitlines()]
    assert recs and {r["device"] for r in recs} == {"cpu"}
    assert any(r.get("op") == "propagate" and r.get("status") == "ok" and "bandwidth" in r for r in recs)
    assert "=== targets" in r.stdout  # the verdict block is in the output's tail

    # collect files the results without touching the repository's (RESULTS_DIR)
    results = tmp_path / "results"
    results.mkdir()
    (results / "ops.jsonl").write_text('{"old": 1}\n')
    c = subprocess.run(["bash", "scripts/collect_gpu_results.sh", str(out)], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, RESULTS_DIR=str(results)))
    assert c.returncode == 0, c.stderr
    lines = (results / "ops.jsonl").read_text().splitlines()
    assert lines[0] == '{"old": 1}' and len(lines) == 1 + len(recs)  # appended, nothing lost
    kept = list((results / "gpu").glob("*/summary.txt"))
    assert len(kept) == 1 and kept[0].read_text() == summary
    assert (kept[0].parent / "logs" / "ops_cuda.log").exists()
    # collecting the same session again appends nothing
    c = subprocess.run(["bash", "scripts/collect_gpu_results.sh", str(out)], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, RESULTS_DIR=str(results)))
    assert c.returncode == 0 and "already collected" in c.stderr
    assert len((results / "ops.jsonl").read_text().splitlines()) == 1 + len(recs)


def test_stages_that_need_the_extension_are_skipped_when_it_failed(tmp_path):
    """A failed ext stage (here: an unknown device, so the smoke check fails) skips the stages
    that run the extension, and the archive still comes back."""
    out = tmp_path / "out"
    _, summary = _session(out, "nodevice", "ops_cuda", 120)
    assert re.search(r"ext: rc=[1-9]", summary), summary
    assert "ops_cuda: SKIPPED (the extension did not load" in summary
    assert sorted(p.name for p in out.iterdir()) == ["session.tgz", "summary.txt"]


def test_collect_refuses_a_folder_that_is_not_a_session_output(tmp_path):
    c = subprocess.run(["bash", "scripts/collect_gpu_results.sh", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert c.returncode == 2 and "summary.txt" in c.stderr


def _start_session(out, stages: str, deadline_s: int):
    """gpu_session.sh as a dry run in its own session (process group), not waited for."""
    import signal  # noqa: F401  (the callers signal it)

    env = dict(os.environ, OUT=str(out), GS_DEVICE="cpu", GS_QUICK="1", PY=sys.executable, OMP_NUM_THREADS="1",
               GS_STAGES=stages, GS_DEADLINE_S=str(deadline_s), GS_WORK=str(out.parent / "work"))
    return subprocess.Popen(["bash", "scripts/gpu_session.sh"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for(path: Path, text: str, timeout_s: float) -> None:
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {timeout_s} s: {path.read_text() if path.exists() else '-'}")


def _archived(out: Path) -> set:
    import tarfile

    with tarfile.open(out / "session.tgz") as tf:
        return set(tf.getnames())


def test_killed_session_keeps_the_finished_stages(tmp_path):
    """SIGKILL (the device tool's limit) gives the script no chance to pack on exit: the archive
    refreshed after every stage still holds the stages that finished, and $OUT holds no loose
    files (the tool returns at most 8)."""
    import signal

    out = tmp_path / "out"
    proc = _start_session(out, "env ops_cuda", 300)
    try:
        _wait_for(out / "summary.txt", "ops_cuda: start", 120)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    names = _archived(out)
    assert {"logs/env.log", "logs/ext.log", "logs/ext.ok"} <= names, names
    assert {p.name for p in out.iterdir()} <= {"session.tgz", "summary.txt", ".session.tgz.part"}


def test_terminated_session_stops_its_stage_at_once(tmp_path):
    """TERM to the script stops the running stage now (it runs under timeout in a process group
    of its own), and the exit still packs the stage's partial log."""
    import signal
    import time

    out = tmp_path / "out"
    proc = _start_session(out, "env ops_cuda", 300)
    try:
        _wait_for(out / "summary.txt", "ops_cuda: start", 120)
        time.sleep(1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == 143 and stopped_in < 10, (rc, stopped_in)
    assert "interrupted (signal)" in (out / "summary.txt").read_text()
    assert "logs/ops_cuda.log" in _archived(out)
    assert sorted(p.name for p in out.iterdir()) == ["session.tgz", "summary.txt"]
