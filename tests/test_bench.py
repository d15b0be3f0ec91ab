"""The benchmark scripts (bench/) and pytest-benchmark micro-benchmarks of the graph ops.

- ``test_ops_bench_smoke`` / ``test_bench_child_process`` (run by default, a few seconds): bench/ops.py
  end to end on a tiny config, the JSON-lines it writes, bench/plot.py on it; one measurement in
  a fresh child process.
- ``@pytest.mark.benchmark`` tests (excluded by default; ``pytest -m benchmark tests/test_bench.py``,
  needs pytest-benchmark): forward+backward of the graph-module stack per provider, of
  ``window_spmm`` and of ``shift_pair_logits`` per backend, on one IEMOCAP-sized batch.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import graphsmile.ops as ops

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def _load(name):
    # bench/ is a folder of scripts, not a package: load by path under a private name, leaving
    # sys.path alone (its "common", "ops", "model" would shadow other modules)
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


common = _load("common")
baselines = _load("baselines")


def _run(args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"{args} failed (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def test_ops_bench_smoke(tmp_path):
    out = tmp_path / "ops.jsonl"
    # E of 2 dialogues of 12 with win (2, 2): 2 * 2 * c(12) = 4 * 54 = 216 > capacity 150 at L=12
    stdout = _run([str(BENCH / "ops.py"), "--quick", "--lengths", "5", "12", "--batch", "2", "--dim", "8", "--layers", "2",
                   "--win", "2", "2", "--shift-win", "3", "--reps", "2", "--budget-s", "60", "--isolate", "none", "--threads", "1",
                   "--dense-capacity", "150", "--out", str(out)])
    assert "records appended" in stdout
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    backends = baselines.available_backends("cpu")
    want = {"stack": backends + ["dense", "scatter", "floor"], "shift": backends + ["dense"], "propagate": backends + ["scatter"]}
    assert len(recs) == 2 * sum(len(v) for v in want.values())
    for r in recs:
        for key in ("op", "provider", "case", "L", "B", "D", "dtype", "device", "device_name", "date", "git_commit", "torch", "threads", "status"):
            assert key in r, (key, r)
        assert r["provider"] in want[r["op"]]
        assert r["dtype"] == "float32" and r["device"] == "cpu" and r["D"] == 8
        if r["op"] == "stack" and r["provider"] == "dense" and r["L"] == 12:
            assert r["status"] == "edge-capacity exceeded", r
            assert "216" in r["reason"]
            continue
        assert r["status"] == "ok", r
        t = r["time_s"]
        assert t["reps"] >= 1 and t["min"] <= t["p20"] <= t["median"] <= t["p80"]
        assert r["utt_per_s"] > 0
        if r["provider"] != "floor":
            assert r["check"]["ok"] is True, r["check"]
        assert r.get("fingerprint_check", {"ok": True})["ok"], r
        assert r["peak_mem_bytes"] is None or r["peak_mem_bytes"] >= 0
    ours = [r for r in recs if r["op"] == "stack" and r["provider"] == backends[0] and r["status"] == "ok"]
    assert all("vs_floor" in r for r in ours)
    scatter = [r for r in recs if r["op"] == "stack" and r["provider"] == "scatter"]
    assert all(backends[0] in r["ratio_to_ours"] for r in scatter)
    assert all("bandwidth" in r for r in recs if r["op"] == "propagate")

    stdout = _run([str(BENCH / "plot.py"), "--results-dir", str(tmp_path)])
    md = (tmp_path / "README.md").read_text()
    assert "| case |" in md and "2x12" in md and "edge-capacity exceeded" in md and "SPEC 9 targets" in md
    for section in ("stack", "shift", "propagate"):
        assert (tmp_path / f"ops_{section}.png").stat().st_size > 1000


def test_bench_child_process():
    """The default isolation: one measurement in a fresh interpreter, peak RSS recorded."""
    spec = dict(section="stack", provider="floor", lengths=[4, 3], dim=8, layers=2, win_p=2, win_f=2, shift_win=3,
                dense_capacity=500_000, device="cpu", dtype="float32", reps=2, warmup=1, budget_s=60, seed=0, threads=1,
                isolated=True)
    res = common.run_child(BENCH / "ops.py", spec, timeout_s=240)
    assert res["status"] == "ok", res
    assert res["time_s"]["reps"] == 2
    assert res["mem"]["peak_rss_delta"] >= 0 and "fresh process" in res["mem_method"]
    assert res["nodes"] == 14 and res["E"] == ops.num_edges([4, 3], 2, 2, 2)


# --- micro-benchmarks (pytest -m benchmark) ------------------------------------------------------

B, L, D, K, WIN, SHIFT_WIN = 16, 50, 512, 7, 17, 19


@pytest.fixture
def bench_fixture(request):
    pytest.importorskip("pytest_benchmark")
    return request.getfixturevalue("benchmark")


def _stack_case(provider):
    lens = [L] * B
    E = ops.num_edges(lens, 2, WIN, WIN)
    model = baselines.GraphStack(D, K, max(500_000, E))
    x = torch.randn(2 * B * L, D, requires_grad=True)
    g = torch.randn_like(x)
    prepare = baselines.make_prepare(provider, lens, 2, WIN, WIN)

    def run():
        model.zero_grad(set_to_none=True)
        x.grad = None
        model(x, prepare, E).backward(g)

    return run


@pytest.mark.benchmark(group="stack-16x50-fwd-bwd")
@pytest.mark.parametrize("provider", baselines.available_backends("cpu") + ["dense", "scatter", "floor"])
def test_bench_stack(bench_fixture, provider):
    bench_fixture.pedantic(_stack_case(provider), rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="window_spmm-16x50-fwd-bwd")
@pytest.mark.parametrize("backend", baselines.available_backends("cpu"))
def test_bench_window_spmm(bench_fixture, backend):
    lens = [L] * B
    E = ops.num_edges(lens, 2, WIN, WIN)
    x = torch.randn(2 * B * L, D, requires_grad=True)
    w = torch.rand(E) + 0.5
    s = ops.window_norm(w, lens, 2, WIN, WIN, backend=backend)
    g = torch.randn_like(x)

    def run():
        x.grad = None
        ops.window_spmm(x, w, s, lens, 2, WIN, WIN, backend=backend).backward(g)

    bench_fixture.pedantic(run, rounds=10, warmup_rounds=2)


@pytest.mark.benchmark(group="shift_pair_logits-16x50-fwd-bwd")
@pytest.mark.parametrize("backend", baselines.available_backends("cpu") + ["dense"])
def test_bench_shift_pair_logits(bench_fixture, backend):
    lens = [L] * B
    u = torch.randn(B * L, D, requires_grad=True)
    weight = (torch.randn(2, 2 * D) / (2 * D) ** 0.5).requires_grad_()
    bias = torch.zeros(2, requires_grad=True)
    g = torch.randn(ops.num_shift_pairs(lens, SHIFT_WIN), 2)

    def run():
        u.grad = weight.grad = bias.grad = None
        ops.shift_pair_logits(u, u, lens, SHIFT_WIN, weight, bias, backend=backend).backward(g)

    bench_fixture.pedantic(run, rounds=10, warmup_rounds=2)
