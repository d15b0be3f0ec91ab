"""The benchmark scripts (bench/) and pytest-benchmark micro-benchmarks of the graph ops.

- ``test_ops_bench_smoke`` / ``test_bench_child_process`` (run by default, a few seconds): bench/ops.py
  end to end on a tiny config, the JSON-lines it writes, bench/plot.py on it; one measurement in
  a fresh child process.
- the GPU presets of bench/ops.py and bench/model.py (issue #8 targets), scaled down to CPU size
  with ``--quick`` and explicit sizes, in-process (``--isolate none``): their records, the
  propagation bytes model, the target verdict lines; the verdict logic itself on synthetic GPU
  records; the IEMOCAP length sampler.
- ``@pytest.mark.benchmark`` tests (excluded by default; ``pytest -m benchmark tests/test_bench.py``,
  needs pytest-benchmark): forward+backward of the graph-module stack per provider, of
  ``window_spmm`` and of ``shift_pair_logits`` per backend, on one IEMOCAP-sized batch.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
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


def _load_script(name):
    """bench/ops.py and bench/model.py put bench/ on sys.path and import its modules under their
    plain names (common, baselines, ops): loaded here with sys.path and sys.modules restored
    afterwards, so those names do not leak into other tests."""
    path, mods = list(sys.path), set(sys.modules)
    try:
        return _load(name)
    finally:
        sys.path[:] = path
        for m in set(sys.modules) - mods:
            if m in ("common", "baselines", "ops", "model"):
                del sys.modules[m]


bench_ops = _load_script("ops")
bench_model = _load_script("model")
bench_epoch = _load_script("epoch")
bench_ab = _load_script("ab")


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
    want = {"stack": backends + ["dense", "scatter", "floor"], "shift": backends + ["dense"],
            "shift_loss": backends + ["unfused", "dense"], "propagate": backends + ["scatter"]}
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
    for section in ("stack", "shift", "shift_loss", "propagate"):
        assert (tmp_path / f"ops_{section}.png").stat().st_size > 1000


def test_host_bench(tmp_path):
    """bench/host.py: the step variants' phase times and op counts, the per-call times, and the
    side-by-side mode (this tree against itself, one child each). The counts are what the
    host-time work relies on: the optimiser step is a handful of ops (fused AdamW), not a loop
    over the parameters, and each graph layer's propagation is one graphsmile op."""
    out = tmp_path / "host.jsonl"
    stdout = _run([str(BENCH / "host.py"), "--steps", "2", "--reps", "1", "--call-reps", "20", "--compiled", "aot_eager",
                   "--out", str(out)])
    assert "window ops' share of the total" in stdout and "raw ops fwd+bwd" in stdout and "compiled / model" in stdout
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    steps = {r["variant"]: r for r in recs if r["op"] == "train_step"}
    calls = {r["variant"]: r for r in recs if r["op"] == "call"}
    assert set(steps) == {"model", "no_window_ops", "compiled"}
    compiled = steps.pop("compiled")
    assert compiled["ops_dispatched"] is None and compiled["compile_backend"] == "aot_eager"
    assert compiled["total_s"]["reps"] == 2 and compiled["total_s"]["median"] > 0
    assert {"graph.spmm fwd", "graph.spmm fwd+bwd", "window_spmm fwd+bwd", "raw ops fwd+bwd (no autograd)"} <= set(calls)
    for r in steps.values():
        for k in ("fwd_s", "bwd_s", "opt_s", "total_s"):
            assert r[k]["reps"] == 2 and 0 < r[k]["median"], (k, r[k])
        assert r["N"] == 32 and r["device"] == "cpu" and r["git_commit"] and "date" in r
        assert 0 < r["ops_dispatched"]["opt"] <= 20, r["ops_dispatched"]
    model_fwd = dict(map(tuple, steps["model"]["top_ops"]["fwd"]))
    assert "graphsmile.window_spmm" not in dict(map(tuple, steps["no_window_ops"]["top_ops"]["fwd"]))
    assert model_fwd.get("graphsmile.window_spmm", 21) == 21  # 3 modules x 7 layers (when among the top 8)
    assert all(c["time_s"] > 0 for c in calls.values())
    # side by side with another tree (a copy of the package): each side imports its own tree
    other = tmp_path / "other-tree"
    shutil.copytree(REPO / "graphsmile", other / "graphsmile", ignore=shutil.ignore_patterns("__pycache__"))
    out2 = tmp_path / "compare.jsonl"
    stdout = _run([str(BENCH / "host.py"), "--steps", "2", "--reps", "1", "--call-reps", "10", "--compare-tree", str(other),
                   "--out", str(out2)])
    assert "this / other" in stdout
    recs = [json.loads(line) for line in out2.read_text().splitlines()]
    assert {r["compare"] for r in recs} == {"this", "other"} and len(recs) == 2 * len(steps) + 2 * len(calls)
    paths = {r["compare"]: {Path(q["graphsmile_path"]) for q in recs if q["compare"] == r["compare"]} for r in recs}
    assert paths == {"this": {REPO / "graphsmile"}, "other": {other.resolve() / "graphsmile"}}, paths


def test_graphed_bench(tmp_path):
    """bench/graphed.py (the step eager vs replayed from a CUDA graph) needs a GPU: its
    arguments and cases here; without a GPU it exits 2 saying why and writes nothing, with one
    it runs the quick cases and records both variants."""
    graphed = _load_script("graphed")
    args = graphed.parse_args(["--quick", "--providers", "cuda"])
    assert (args.batch, args.lengths, args.steps, args.providers) == (2, [30], 3, ["cuda"])
    assert args.out.name == "graphed.jsonl" and args.out.parent.name == "quick"
    labels = [c["label"] for c in graphed.cases(args)]
    assert labels == ["2xIEMOCAP", "2x30"] and len(graphed.cases(args)[0]["lengths"]) == 2
    with pytest.raises(SystemExit):
        graphed.parse_args(["--providers", "cpu"])
    out = tmp_path / "graphed.jsonl"
    p = subprocess.run([sys.executable, str(BENCH / "graphed.py"), "--quick", "--providers", "cuda", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    if not torch.cuda.is_available():
        assert p.returncode == 2 and "no CUDA device" in p.stderr and not out.exists(), (p.returncode, p.stderr)
        return
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["case"] for r in recs] == labels and all(r["status"] == "ok" for r in recs)
    for r in recs:
        assert r["eager"]["reps"] == 9 and r["graphed"]["reps"] == 9 and r["graphed_s"] > 0 and r["device"] == "cuda"


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


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_ops_gpu_presets_scaled_down(tmp_path):
    """--preset gpu-targets (gpu-bandwidth + gpu-shift) in-process on the CPU at toy sizes: the
    propagate section times gradients to x, w and s (checked against reference), records fwd and
    bwd bandwidth with the bytes model, the shift record carries its ratio to one propagate
    layer, and the verdict lines are printed last and written next to the results."""
    out = tmp_path / "ops.jsonl"
    stdout = _run([str(BENCH / "ops.py"), "--preset", "gpu-targets", "--quick", "--isolate", "none", "--threads", "1",
                   "--dim", "8", "16", "--dtype", "float32", "bfloat16", "--lengths", "--single", "30",
                   "--reps", "2", "--out", str(out)])
    recs = _jsonl(out)
    ours = baselines.available_backends("cpu")[0]
    prop = [r for r in recs if r["op"] == "propagate"]
    # options given explicitly hold for both presets: gpu-bandwidth and gpu-shift each 2 dims x 2 dtypes x
    # the one case 1x30 (--lengths without values: no batched case), our fast backend only
    assert len(prop) == 2 * (2 * 2) and {r["provider"] for r in prop} == {ours}
    assert {r["case"] for r in recs} == {"1x30"}
    assert {(r["D"], r["dtype"]) for r in prop} == {(8, "float32"), (16, "float32"), (8, "bfloat16"), (16, "bfloat16")}
    assert {r["bench_preset"] for r in recs} == {"gpu-bandwidth", "gpu-shift"}
    for r in prop:
        assert r["status"] == "ok" and r["check"]["ok"] is True, r
        n, D, E = r["nodes"], r["D"], r["E"]
        assert n == 2 * r["N"] and E == ops.num_edges([r["L"]] * r["B"], 2, 17, 17)
        isz = 4 if r["dtype"] == "float32" else 2
        bw = r["bandwidth"]
        assert bw["fwd_bytes"] == (2 * n * D + E + n) * isz
        assert bw["bwd_bytes"] == (3 * n * D + 2 * E + 2 * n) * isz
        assert bw["fwd_GBps"] == pytest.approx(bw["fwd_bytes"] / r["fwd_s"]["median"] / 1e9)
        assert bw["bwd_GBps"] == pytest.approx(bw["bwd_bytes"] / r["bwd_s"]["median"] / 1e9)
        assert "grad_w" in bw["bytes_model"] and "fwd_frac_of_peak" not in bw  # no peak on a CPU
    shift = [r for r in recs if r["op"] == "shift"]
    assert {r["provider"] for r in shift} == {ours, "dense"} and all(r["shift_win"] == -1 for r in shift)
    mine = [r for r in shift if r["provider"] == ours]
    assert all(r["vs_propagate_layer"]["ratio"] > 0 and "ratio_to_graph_layer" in r["vs_propagate_layer"] for r in mine)
    fused = [r for r in recs if r["op"] == "shift_loss"]
    assert {r["provider"] for r in fused} == {ours, "unfused"} and all(r["status"] == "ok" for r in fused)
    assert all(r["check"]["ok"] is True for r in fused), [r["check"] for r in fused]
    fused_mine = [r for r in fused if r["provider"] == ours]
    assert all(r["vs_propagate_layer"]["ratio"] > 0 and r["P"] == 30 ** 2 for r in fused_mine)
    stack = [r for r in recs if r["op"] == "stack"]
    assert {r["provider"] for r in stack} == {ours, "floor"} and all(r["layers"] == 1 for r in stack)
    tail = stdout[stdout.index("=== targets"):]
    assert tail.count("T1 propagate bandwidth") == len(prop) and tail.count("T2 shift") == len(mine)
    assert tail.count("T2 fused shift loss") == len(fused_mine)
    assert "n/a (not a GPU)" in tail
    targets = _jsonl(tmp_path / "ops_targets.jsonl")
    assert len(targets) == len(prop) + len(mine) + len(fused_mine) and all(t["run_id"] == recs[0]["run_id"] for t in targets)

    stdout = _run([str(BENCH / "plot.py"), "--results-dir", str(tmp_path), "--no-png"])
    md = (tmp_path / "README.md").read_text()
    assert "grads x, w, s" in md and "D = 16, bfloat16" in md and "bwd" in md


def test_model_gpu_targets_scaled_down(tmp_path):
    """model.py --preset gpu-targets --quick in-process: the IEMOCAP-shaped batch (drawn lengths)
    and the single dialogue, our backend and the original, and the target lines."""
    out = tmp_path / "model.jsonl"
    stdout = _run([str(BENCH / "model.py"), "--preset", "gpu-targets", "--quick", "--isolate", "none", "--threads", "1",
                   "--batch", "2", "--lengths", "--single", "12", "--reps", "1", "--no-check", "--providers",
                   f"{baselines.available_backends('cpu')[0]},original", "--out", str(out)])
    recs = _jsonl(out)
    lens = bench_model.iemocap_lengths(2, 0)
    assert [r["case"] for r in recs] == ["2xIEMOCAP"] * 2 + ["1x12"] * 2
    assert all(r["status"] == "ok" for r in recs), recs
    iem = recs[0]
    assert iem["lengths"] == lens and iem["N"] == sum(lens) and iem["lengths_varied"] and iem["bench_preset"] == "gpu-targets"
    assert recs[1]["ratio_to_ours"]  # original / ours
    # every step also timed back to back (3 rounds of at least 3 steps, one sync per round)
    for r in recs:
        pb = r["pipelined_s"]
        assert pb["rounds"] == 3 and pb["steps_per_round"] >= 3 and 0 < pb["min"] <= pb["median"], pb
    tail = stdout[stdout.index("=== targets"):]
    assert "T3 IEMOCAP batch speed-up" in tail and "T3 one long dialogue" in tail
    assert "T3 IEMOCAP batch speed-up, back-to-back steps" in tail and "back-to-back" in stdout[:stdout.index("=== targets")]
    assert len(_jsonl(tmp_path / "model_targets.jsonl")) == 3


def test_model_compiled(tmp_path):
    """model.py --compile: ours under torch.compile (aot_eager here: no C compiler needed), the
    original eager, and the records and verdict lines say which ran compiled."""
    out = tmp_path / "model.jsonl"
    stdout = _run([str(BENCH / "model.py"), "--preset", "gpu-targets", "--quick", "--isolate", "none", "--threads", "1",
                   "--batch", "2", "--lengths", "--no-single", "--reps", "1", "--no-check", "--compile", "aot_eager",
                   "--providers", f"{baselines.available_backends('cpu')[0]},original", "--out", str(out)])
    recs = _jsonl(out)
    assert [r["case"] for r in recs] == ["2xIEMOCAP"] * 2 and all(r["status"] == "ok" for r in recs), recs
    assert recs[0]["compile_backend"] == "aot_eager" and recs[1]["compile_backend"] is None
    assert "ours under torch.compile (aot_eager)" in stdout
    assert " compiled float32 2xIEMOCAP" in stdout[stdout.index("=== targets"):]


def test_iemocap_lengths():
    a = bench_model.iemocap_lengths(16, 0)
    assert a == bench_model.iemocap_lengths(16, 0) and a != bench_model.iemocap_lengths(16, 1)
    assert len(a) == 16 and all(8 <= v <= 110 for v in a) and 25 <= sum(a) / 16 <= 75
    assert len(bench_model.iemocap_lengths(500, 0)) == 120  # the train split has 120 dialogues


def _rec(op, provider, case, status="ok", t=1e-3, device="cuda", **kw):
    b, l = case.split("x")
    r = dict(op=op, provider=provider, case=case, B=int(b), L=int(l) if l.isdigit() else 50, N=int(b) * (int(l) if l.isdigit() else 50),
             D=512, dtype="float32", device=device, status=status, shift_win=19, layers=7)
    if status == "ok":
        r["time_s"] = r["fwd_s"] = r["bwd_s"] = {"median": t, "min": t}
    r.update(kw)
    return r


def test_target_verdicts():
    # target 1: bandwidth, with the GPU's data-sheet peak (H100 SXM 3350 GB/s) and a copy of 3000 GB/s
    assert common.gpu_peak_bandwidth_gbps("NVIDIA H100 80GB HBM3") == 3350.0
    assert common.gpu_peak_bandwidth_gbps("NVIDIA H100 PCIe") == 2000.0
    assert common.gpu_peak_bandwidth_gbps("NVIDIA H200") == 4800.0
    env = {"gpu_peak_bw_gbps": 3350.0, "copy_bw_gbps": 3000.0}
    n, D, E = 102_400, 512, ops.num_edges([3200] * 16, 2, 17, 17)
    nb = bench_ops.propagate_bytes(n, D, E, 4)
    recs = []
    for provider, frac_fwd, frac_bwd in (("cuda", 0.7, 0.65), ("triton", 0.7, 0.5)):
        r = _rec("propagate", provider, "16x3200", nodes=n, E=E)
        r["fwd_s"] = {"median": nb["fwd"] / (frac_fwd * 3350e9), "min": nb["fwd"] / (frac_fwd * 3350e9)}
        # the verdict counts the backward's bytes as issue #8 does (reading y included)
        r["bwd_s"] = {"median": nb["bwd_issue"] / (frac_bwd * 3350e9), "min": nb["bwd_issue"] / (frac_bwd * 3350e9)}
        r["time_s"] = {k: r["fwd_s"][k] + r["bwd_s"][k] for k in ("median", "min")}
        bench_ops.add_bandwidth(r, env)
        assert r["bandwidth"]["fwd_frac_of_peak"] == pytest.approx(frac_fwd)
        assert r["bandwidth"]["bwd_issue_frac_of_peak"] == pytest.approx(frac_bwd)
        minimal = frac_bwd * nb["bwd"] / nb["bwd_issue"]   # the same time over the bytes our backward moves
        assert nb["bwd_issue"] > nb["bwd"] and r["bandwidth"]["bwd_frac_of_peak"] == pytest.approx(minimal)
        assert r["bandwidth"]["bwd_frac_of_copy"] == pytest.approx(minimal * 3350 / 3000)
        recs.append(r)
    small = _rec("propagate", "cuda", "16x50", nodes=1600, E=ops.num_edges([50] * 16, 2, 17, 17))
    bench_ops.add_bandwidth(small, env)
    recs_bw = list(recs)
    lines = bench_ops.bandwidth_targets(recs + [small])
    verdicts = [ln["verdict"] for ln in lines]
    assert verdicts[:3] == ["PASS", "MISS", "n/a (< 100000 nodes)"]
    assert [ln["verdict"] for ln in lines if "worst" in ln["case"]] == ["PASS", "MISS"]
    # target 2: shift (shift_win -1) / propagate at D = 512 on one dialogue of 20,000
    prop = _rec("propagate", "cuda", "1x20000", t=1e-3)
    layer = _rec("stack", "cuda", "1x20000", t=4e-3, layers=1)
    fast = _rec("shift", "cuda", "1x20000", t=5e-5, shift_win=-1, P=20000 ** 2)
    slow = _rec("shift", "triton", "1x20000", t=5e-3, shift_win=-1, P=20000 ** 2)
    prop_t = _rec("propagate", "triton", "1x20000", t=1e-3)
    lines = bench_ops.shift_targets([prop, layer, fast, slow, prop_t], copy_bw=3000.0)
    assert [ln["verdict"] for ln in lines] == ["PASS", "MISS"]
    assert lines[0]["values"]["ratio"] == pytest.approx(0.05) and lines[0]["values"]["ratio_to_graph_layer"] == pytest.approx(0.0125)
    assert lines[1]["values"]["traffic_floor_ratio"] == pytest.approx(2 * 20000 ** 2 * 2 * 4 / 3000e9 / 1e-3)
    cpu = bench_ops.shift_targets([dict(prop, device="cpu"), dict(fast, device="cpu")], copy_bw=None)
    assert cpu[0]["verdict"].startswith("n/a")
    # target 3: training step
    recs = [_rec("train_step", "cuda", "16xIEMOCAP", t=0.02, lengths_varied=True), _rec("train_step", "original", "16xIEMOCAP", t=0.2),
            _rec("train_step", "triton", "16xIEMOCAP", t=0.05, lengths_varied=True),
            _rec("train_step", "cuda", "16x1000", t=0.1), _rec("train_step", "original", "16x1000", status="edge-capacity exceeded"),
            _rec("train_step", "cuda", "1x20000", t=0.5, peak_mem_bytes=5e9), _rec("train_step", "triton", "1x20000", status="oom")]
    lines = bench_model.model_targets(recs)
    assert [(ln["target"].split()[1], ln["verdict"]) for ln in lines] == [
        ("IEMOCAP", "PASS"), ("IEMOCAP", "MISS"), ("L=1000", "PASS"), ("one", "PASS"), ("one", "MISS")]
    assert lines[0]["case"] == "cuda float32 16xIEMOCAP (N = 800)"
    # back-to-back steps: a second IEMOCAP line, beside the phase-timed one, with its own verdict
    bb = [dict(recs[0], pipelined_s={"median": 0.012}), dict(recs[1], pipelined_s={"median": 0.05})]
    two = bench_model.model_targets(bb)
    assert [(ln["target"], ln["verdict"]) for ln in two] == [
        ("T3 IEMOCAP batch speed-up", "PASS"), ("T3 IEMOCAP batch speed-up, back-to-back steps", "MISS")]
    assert two[1]["values"]["speedup"] == pytest.approx(0.05 / 0.012)
    skipped = dict(bb[1], pipelined_s={"status": "skipped", "reason": "budget"})
    assert len(bench_model.model_targets([bb[0], skipped])) == 1
    # an A/B stage's records (compiled, opt-in kernels) say so in their verdict lines
    ab = dict(recs[0], compile_backend="inductor", cuda_ffma_dtiles="8", cuda_rows_fsplit="4")
    assert bench_model.model_targets([ab, recs[1]])[0]["case"] == (
        "cuda compiled (ffma_dtiles 8, rows_fsplit 4) float32 16xIEMOCAP (N = 800)")
    # a fast result that failed its correctness check passes nothing (T1, T2, T3)
    bad = {"ok": False, "max_rel_err": 0.36, "tol": 0.03, "against": "reference"}
    assert bench_model.model_targets([dict(recs[0], check=bad), recs[1]])[0]["verdict"] == (
        "MISS (cuda failed its check (max rel err 0.36 > 0.03))")
    assert bench_model.model_targets([recs[0], dict(recs[1], fingerprint_check=dict(bad, against="cuda"))])[0][
        "verdict"].startswith("MISS (original failed its fingerprint check")
    t1 = bench_ops.bandwidth_targets([dict(r, check=bad) if r["provider"] == "cuda" else r for r in recs_bw])
    assert [ln["verdict"] for ln in t1 if ln["case"].startswith("cuda")] == [
        "MISS (cuda failed its check (max rel err 0.36 > 0.03))", "MISS (a correctness check failed)"]
    t2 = bench_ops.shift_targets([dict(prop, check=bad), layer, fast], copy_bw=3000.0)
    assert t2[0]["verdict"].startswith("MISS (cuda failed its check")
    # the kernel options of an A/B run are named in its T1/T2 lines
    tc = bench_ops.bandwidth_targets([dict(recs_bw[0], cuda_tensor_cores=False, cuda_tc_dtiles="4")])
    assert tc[0]["case"].startswith("cuda (tensor_cores False) float32 D=512")
    tf = [dict(recs[0], tf32=True), dict(recs[1], tf32=True)]  # --tf32: both providers' products in TF32
    assert bench_model.model_targets(tf)[0]["case"] == "cuda float32 tf32 16xIEMOCAP (N = 800)"
    assert bench_ab.variant_of(tf[1]) == (("tf32", True),) and bench_ab.variant_of(recs[1]) == ()
    assert bench_ab.variant_of(dict(recs[1], tf32=False)) == ()
    # the original skipped by the memory guard cannot run; skipped by the time limit: not measured
    guard = _rec("train_step", "original", "16x1000", status="skipped", reason="skipped: would need ~147 GB, 80 GB available")
    late = _rec("train_step", "original", "16x1000", status="skipped", reason="skipped: --time-limit-s 300 reached")
    ours = _rec("train_step", "cuda", "16x1000", t=0.1)
    assert bench_model.model_targets([ours, guard])[0]["verdict"] == "PASS"
    assert bench_model.model_targets([ours, late])[0]["verdict"].startswith("n/a")
    assert bench_ops.failed_verdict(dict(late, provider="cuda")).startswith("n/a") and bench_ops.failed_verdict(dict(ours, status="oom")) == "MISS"


def test_bench_epoch_targets():
    """T4: the verdict is on the training epoch's GPU time (CUDA events), on the full set only."""
    def rec(path, gpu, kern, dialogues=120, phase="train", device="cuda"):
        return dict(path=path, phase=phase, device=device, train_dialogues=dialogues, train_utterances=5810, batch_size=16,
                    time_s={"median": 0.25}, gpu_time_s={"median": gpu} if gpu is not None else None, kernel_time_s=kern)

    lines = bench_epoch.epoch_targets([rec("device", 0.25, 0.09), rec("device", 0.25, 0.09, phase="eval"),
                                       rec("compiled", 0.08, 0.05), rec("device", 0.05, 0.04, dialogues=16),
                                       rec("device", None, None, device="cpu")])
    assert [ln["verdict"] for ln in lines] == ["MISS", "PASS", "n/a (16 dialogues, not 120)", "n/a (not a GPU)"]
    assert "GPU time 250" in lines[0]["measured"] and "kernels alone 90" in lines[0]["measured"]
    assert lines[1]["values"] == {"gpu_time_s": 0.08, "kernel_time_s": 0.05, "wall_s": 0.25}



def _ab_rec(op, case, fwd, bwd, date, commit="c0ffee1", provider="cuda", **opts):
    """A bench/ops.py-shaped GPU record with kernel times (for bench/ab.py)."""
    return {**dict(bench="ops", op=op, provider=provider, case=case, D=512, dtype="float32", device="cuda",
                   device_name="NVIDIA H200", status="ok", date=date, git_commit=commit, run_id=date,
                   fwd_s={"median": 2 * fwd}, bwd_s={"median": 2 * bwd}, kernel_s={"fwd": fwd, "bwd": bwd},
                   cuda_tensor_cores=True, cuda_tc_dtiles="4", cuda_shift_nll="auto", cuda_fast_math=False), **opts}


def test_ab_tables(tmp_path):
    """bench/ab.py puts each case's option variants side by side (ratios to the defaults' run)
    and says per variant whether it was faster in the forward and the backward everywhere."""
    recs = [
        _ab_rec("propagate", "16x3200", 1.0e-3, 2.0e-3, "2026-12-01T10:00"),
        _ab_rec("propagate", "1x60000", 1.2e-3, 2.4e-3, "2026-12-01T10:01"),
        # FFMA_DTILES=8: faster in both parts, in both cases
        _ab_rec("propagate", "16x3200", 0.5e-3, 1.0e-3, "2026-12-01T10:02", cuda_ffma_dtiles="8"),
        _ab_rec("propagate", "1x60000", 0.6e-3, 2.0e-3, "2026-12-01T10:03", cuda_ffma_dtiles="8"),
        # =2: faster forward, slower backward in one case
        _ab_rec("propagate", "16x3200", 0.8e-3, 2.5e-3, "2026-12-01T10:04", cuda_ffma_dtiles="2"),
        _ab_rec("propagate", "1x60000", 0.9e-3, 2.0e-3, "2026-12-01T10:05", cuda_ffma_dtiles="2"),
        # the cuda_* options do not act on triton: its record is a case of its own with one variant
        _ab_rec("propagate", "16x3200", 0.7e-3, 3.0e-3, "2026-12-01T10:06", provider="triton", cuda_ffma_dtiles="8"),
        # an older commit's record is left out
        _ab_rec("propagate", "16x3200", 9e-3, 9e-3, "2026-11-01T10:00", commit="0ld0000", cuda_ffma_dtiles="8"),
    ]
    model = [dict(bench="model", op="train_step", provider="cuda", case="16xIEMOCAP", dtype="float32", device="cuda",
                  device_name="NVIDIA H200", status="ok", git_commit="c0ffee1", date=f"2026-12-01T11:0{i}",
                  time_s={"median": t}, pipelined_s={"median": p}, **opts)
             for i, (t, p, opts) in enumerate([(0.020, 0.015, {}), (0.012, 0.010, {"compile_backend": "inductor"}),
                                               (0.010, 0.008, {"compile_backend": "inductor", "cuda_ffma_dtiles": "8",
                                                               "cuda_rows_fsplit": "4"})])]
    (tmp_path / "ops.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "model.jsonl").write_text("".join(json.dumps(r) + "\n" for r in model))
    loaded, commit = bench_ab.load(tmp_path, "cuda", "H200", None)
    assert commit == "c0ffee1" and len(loaded["ops"]) == 7 and loaded["epoch"] == []
    result = bench_ab.compare(loaded)
    groups = {(g["bench"], g["key"]): g for g in result["groups"]}
    assert set(groups) == {("ops propagate", "cuda 16x3200 D=512 float32"), ("ops propagate", "cuda 1x60000 D=512 float32"),
                           ("model train_step", "cuda 16xIEMOCAP float32")}
    rows = {r["variant"]: r for r in groups[("ops propagate", "cuda 16x3200 D=512 float32")]["rows"]}
    assert list(rows) == ["defaults", "ffma_dtiles=2", "ffma_dtiles=8"]
    assert rows["ffma_dtiles=8"]["ratios"] == pytest.approx((2.0, 2.0)) and rows["ffma_dtiles=2"]["ratios"] == pytest.approx((1.25, 0.8))
    assert "kernels alone" in groups[("ops propagate", "cuda 16x3200 D=512 float32")]["what"]
    summary = {(s["bench"], s["variant"]): s for s in result["summary"]}
    assert summary[("ops propagate", "ffma_dtiles=8")]["faster_everywhere"] is True
    assert summary[("ops propagate", "ffma_dtiles=8")]["second"]["worst"] == pytest.approx(1.2)
    assert summary[("ops propagate", "ffma_dtiles=2")]["faster_everywhere"] is False
    assert summary[("ops propagate", "ffma_dtiles=2")]["second"]["faster"] == 1
    best = summary[("model train_step", "compile_backend=inductor, ffma_dtiles=8, rows_fsplit=4")]
    assert best["faster_everywhere"] and best["first"]["geomean"] == pytest.approx(2.0)
    # the script: tables and the per-variant lines; another commit by prefix; errors name the file
    out = _run([str(BENCH / "ab.py"), "--results-dir", str(tmp_path)])
    assert "FASTER EVERYWHERE" in out and "ffma_dtiles=2" in out and "not faster everywhere" in out
    old = _run([str(BENCH / "ab.py"), "--results-dir", str(tmp_path), "--commit", "0ld"])
    assert "(no variant was run beside the defaults)" in old
    p = subprocess.run([sys.executable, str(BENCH / "ab.py"), "--results-dir", str(tmp_path), "--commit", "ffff"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "no records of commit 'ffff'" in p.stderr and "c0ffee1" in p.stderr
    (tmp_path / "epoch.jsonl").write_text("{not json\n")
    p = subprocess.run([sys.executable, str(BENCH / "ab.py"), "--results-dir", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "epoch.jsonl:1: not a JSON line" in p.stderr


def test_ab_never_pairs_cards_quick_runs_or_other_settings():
    """A variant is compared only with the defaults' run on the same card, at the same size
    (--quick apart) and workload settings (layers, shift_win, ...)."""
    recs = [_ab_rec("propagate", "16x3200", 1.0e-3, 2.0e-3, "2026-12-01T10:00"),
            _ab_rec("propagate", "16x3200", 0.5e-3, 1.0e-3, "2026-12-01T10:01", cuda_tc_dtiles="1",
                    device_name="NVIDIA H100 80GB HBM3"),
            _ab_rec("propagate", "16x3200", 0.5e-3, 1.0e-3, "2026-12-01T10:02", cuda_tc_dtiles="1", quick=True),
            _ab_rec("propagate", "16x3200", 0.5e-3, 1.0e-3, "2026-12-01T10:03", cuda_tc_dtiles="1", layers=1)]
    result = bench_ab.compare({"ops": recs})
    assert result["groups"] == [] and result["summary"] == []      # every variant alone in its group
    recs.append(_ab_rec("propagate", "16x3200", 2.0e-3, 4.0e-3, "2026-12-01T10:04", device_name="NVIDIA H100 80GB HBM3"))
    groups = bench_ab.compare({"ops": recs})["groups"]
    assert len(groups) == 1 and groups[0]["key"].startswith("cuda 16x3200 D=512 float32 [device=NVIDIA H100 80GB HBM3")
    assert groups[0]["rows"][1]["ratios"] == pytest.approx((4.0, 4.0))


def test_ab_model_kernels_alone():
    """Model records with a profiled step compare back-to-back steps and kernels alone; a case
    whose records lack profiles keeps the phase-timed pair, tallied apart (not mixed)."""
    def rec(case, t, p, k, i, **opts):
        r = dict(bench="model", op="train_step", provider="cuda", case=case, dtype="float32", device="cuda",
                 device_name="NVIDIA H200", status="ok", git_commit="c0ffee1", date=f"2026-12-01T11:0{i}",
                 time_s={"median": t}, pipelined_s={"median": p}, **opts)
        if k is not None:
            r["kernels"] = {"kernel_time_s": k, "launches": 600, "kinds": {}, "top_kernels": []}
        return r

    recs = [rec("16xIEMOCAP", 0.020, 0.014, 0.0128, 0), rec("16xIEMOCAP", 0.019, 0.012, 0.0064, 1, cuda_rows_fsplit="auto"),
            rec("16x1000", 0.085, 0.084, None, 2), rec("16x1000", 0.086, 0.085, None, 3, cuda_rows_fsplit="auto")]
    result = bench_ab.compare({"model": recs})
    groups = {g["key"]: g for g in result["groups"]}
    small = groups["cuda 16xIEMOCAP float32"]
    assert small["parts"] == ("back-to-back", "kernels") and "kernels alone" in small["what"]
    assert small["rows"][1]["ratios"] == pytest.approx((14 / 12, 2.0))
    assert groups["cuda 16x1000 float32"]["parts"] == ("step", "back-to-back")
    lines = [(s["variant"], s["parts"], s["cases"]) for s in result["summary"]]
    assert lines == [("rows_fsplit=auto", ("back-to-back", "kernels"), 1), ("rows_fsplit=auto", ("step", "back-to-back"), 1)]


def test_ab_epoch_paths(tmp_path):
    """bench/epoch.py's records: one case per phase, its data paths (and kernel options) the
    variants, against the device-resident path with the defaults."""
    def rec(path, gpu, kern, phase="train", date="2026-12-01T12:00", **opts):
        return dict(bench="epoch", path=path, phase=phase, device="cuda", device_name="NVIDIA H200", git_commit="c0ffee1",
                    date=date, gpu_time_s={"median": gpu}, kernel_time_s=kern, time_s={"median": gpu},  # no status, as written
                    cuda_tensor_cores=True, cuda_tc_dtiles="4", cuda_shift_nll="auto", cuda_fast_math=False, **opts)

    recs = [rec("loader", 0.30, 0.11), rec("device", 0.25, 0.10), rec("compiled", 0.10, 0.05),
            rec("device", 0.20, 0.08, date="2026-12-01T12:05", cuda_rows_fsplit="auto"),
            rec("device", 0.02, 0.004, phase="eval")]
    result = bench_ab.compare({"epoch": recs})
    assert [(g["bench"], g["key"]) for g in result["groups"]] == [("epoch", "train")]  # eval: one variant only
    rows = {r["variant"]: r for r in result["groups"][0]["rows"]}
    assert list(rows) == ["defaults", "path=compiled", "path=loader", "rows_fsplit=auto"]
    assert rows["path=compiled"]["ratios"] == pytest.approx((2.5, 2.0))
    summary = {s["variant"]: s["faster_everywhere"] for s in result["summary"]}
    assert summary == {"path=compiled": True, "path=loader": False, "rows_fsplit=auto": True}


def test_ab_on_the_first_h200_run():
    """The stored records of the first H200 run (commit aa7c69d): the A/B of the tensor-core
    kernels and of the shift loss, as decided in bench/GPU_NOTES.md from them."""
    recs, commit = bench_ab.load(BENCH / "results", "cuda", "H200", "aa7c69d")
    summary = {(s["bench"], s["variant"]): s for s in bench_ab.compare(recs)["summary"]}
    # restaging the coefficients per feature tile (TC_DTILES=1) was slower in the forward in both cases
    tc1 = summary[("ops propagate", "tc_dtiles=1")]
    assert tc1["cases"] == 2 and tc1["first"]["faster"] == 0 and not tc1["faster_everywhere"]
    # fast math: the shift loss's forward faster, its backward not: stays opt-in
    fm = summary[("ops shift_loss", "shift_nll=tiled, fast_math=True")]
    assert fm["first"]["geomean"] > 1.5 and fm["second"]["faster"] == 0
    # the epoch's DataLoader path against the device-resident one (no status field in those records)
    loader = summary[("epoch", "path=loader")]
    assert loader["cases"] == 2 and not loader["faster_everywhere"]

def test_kernel_time_helpers():
    """Device-busy time is the union of the profiled intervals; kernel bandwidth comes from it."""
    assert bench_ops._busy_ns([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17 and bench_ops._busy_ns([]) == 0
    r = _rec("propagate", "cuda", "16x3200", nodes=102_400, E=ops.num_edges([3200] * 16, 2, 17, 17), t=1e-3)
    nb = bench_ops.propagate_bytes(r["nodes"], 512, r["E"], 4)
    r["kernel_s"] = {"fwd": nb["fwd"] / 2.5e12, "bwd": nb["bwd"] / 2.0e12}
    bench_ops.add_bandwidth(r, {"gpu_peak_bw_gbps": 3350.0})
    bw = r["bandwidth"]
    assert bw["kernel_fwd_GBps"] == pytest.approx(2500) and bw["kernel_bwd_frac_of_peak"] == pytest.approx(2000 / 3350)
    line = bench_ops.bandwidth_targets([r], worst=False)[0]
    assert "kernels alone" in line["measured"] and line["values"]["kernel_fwd_GBps"] == pytest.approx(2500)


def test_kernel_kinds():
    """A profiled step's device time sorted by kind: graphsmile's CUDA and Triton kernels, the
    cuBLAS / CUTLASS products, the optimiser, inductor, copies, the rest of aten."""
    names = {
        "void graphsmile::gpu::window_spmm_rows_kernel<float, 4>(float const*, long)": "graph ops",
        "void graphsmile::gpu::write_param_chunk_kernel(graphsmile::gpu::ParamChunk)": "graph ops",
        "_spmm_bwd_rows_kernel": "graph ops",
        "_pair_nll_fwd_kernel": "graph ops",
        "sm90_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x128x16_warpgroupsize1x1x1": "GEMM",
        "void cutlass::Kernel2<cutlass_80_simt_sgemm_128x64_8x5_nn_align1>(Params)": "GEMM",
        "ampere_sgemm_64x32_sliced1x4_tn": "GEMM",
        "void splitKreduce_kernel<32, 16, int, float, float, float, float, true, false, false>": "GEMM",
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 5>>": "optimiser",
        "triton_poi_fused_add_leaky_relu_0": "inductor",
        "triton_red_fused_sum_1": "inductor",
        "Memcpy HtoD (Pinned -> Device)": "copies",
        "Memset (Device)": "copies",
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, std::array<char*, 3>>": "aten",
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float>>>": "aten",
        "void (anonymous namespace)::softmax_warp_forward<float, float, float, 3, true, false>": "aten",
        "void cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 512, true, 1>": "aten",
        "some_library_kernel": "other",
    }
    for name, kind in names.items():
        assert common.kernel_kind(name) == kind, name
    per_name = {"void graphsmile::gpu::window_spmm_rows_kernel<float>": (21, 6e-3),
                "void graphsmile::gpu::window_spmm_forward_kernel<float>": (21, 2e-3),
                "ampere_sgemm_64x32_sliced1x4_tn": (120, 3e-3),
                "void at::native::vectorized_elementwise_kernel<4, add>": (300, 1.5e-3),
                "Memset (Device)": (3, 5e-6)}
    prof = common.summarise_kernels(per_name, top=2)
    assert prof["kernel_time_s"] == pytest.approx(0.012505) and prof["launches"] == 465
    assert list(prof["kinds"]) == ["graph ops", "GEMM", "aten", "copies"]  # largest first
    assert prof["kinds"]["graph ops"] == [42, pytest.approx(8e-3)]
    assert [t[0] for t in prof["top_kernels"]] == ["void graphsmile::gpu::window_spmm_rows_kernel<float>",
                                                   "ampere_sgemm_64x32_sliced1x4_tn"]
    line = common.kernel_kinds_line(prof)
    assert line.startswith("12.5 ms in 465 launches: graph ops 8.0 ms (64%), GEMM 3.0 ms (24%), aten 1.5 ms (12%)")
    assert "copies" not in line  # under 1% of the total
    assert common.kernel_kinds_line(common.summarise_kernels({})) == "0 us in 0 launches"  # nothing ran on the device
    if not torch.cuda.is_available():  # the profiler's API as kernel_profile reads it; on the CPU no device events
        a = torch.randn(64, 64)
        empty = common.kernel_profile(lambda: a @ a)
        assert empty["kernel_time_s"] == 0 and empty["launches"] == 0 and empty["kinds"] == {} and empty["top_kernels"] == []


def test_model_bench_prints_kernels(capsys):
    """bench/model.py: each profiled provider's step by kind and its largest kernels; a failed
    profile is named, not fatal; records without a profile (CPU) print nothing."""
    prof = common.summarise_kernels({"void graphsmile::gpu::window_spmm_rows_kernel<float>": (21, 6e-3),
                                     "ampere_sgemm_64x32_sliced1x4_tn": (120, 3e-3)})
    group = [dict(provider="cuda", kernels=prof), dict(provider="triton", kernels={"status": "error", "reason": "RuntimeError: x"}),
             dict(provider="original")]
    bench_model.print_kernels(group)
    out = capsys.readouterr().out
    assert "cuda       9.0 ms in 141 launches: graph ops 6.0 ms (67%), GEMM 3.0 ms (33%)" in out
    assert "6.0 ms  66.7%    21x  void graphsmile::gpu::window_spmm_rows_kernel<float>" in out
    assert "triton     profile failed: RuntimeError: x" in out and "original" not in out
    bench_model.print_kernels([dict(provider="cpu")])
    assert capsys.readouterr().out == ""


def test_epoch_records_carry_kernel_kinds():
    """bench/epoch.py's records take the profile's total, launches, kinds and top kernels."""
    prof = common.summarise_kernels({"ampere_sgemm_64x32_sliced1x4_tn": (10, 1e-3), "Memset (Device)": (2, 1e-6)})
    ph = dict(wall=[0.2, 0.25], gpu=[0.19, 0.24], loss=[1.0, 0.9], syncs=2, profile=prof)
    r = dict(train=ph, data_on_device=True, setup_s=0.1, peak_mem_bytes=1, batches=8)
    args = types.SimpleNamespace(no_eval=True)
    (rec,) = bench_epoch._records("device", r, None, dict(bench="epoch"), args)
    assert rec["kernel_time_s"] == pytest.approx(1.001e-3) and rec["kernel_launches"] == 12
    assert list(rec["kernel_kinds"]) == ["GEMM", "copies"] and rec["top_kernels"][0][0] == "ampere_sgemm_64x32_sliced1x4_tn"
    (bare,) = bench_epoch._records("device", dict(r, train=dict(ph, profile=None)), None, dict(bench="epoch"), args)
    assert bare["kernel_time_s"] is None and bare["kernel_kinds"] is None  # CPU / --no-profile


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
