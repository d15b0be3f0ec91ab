"""The CUDA device code (kernels/*.cuh), run on the CPU by an emulator, against the pure-torch
reference backend: every kernel of window_norm, window_spmm and shift_pair_sum, forward and
backward, and of the fused shift loss shift_pair_nll, on every commit and without a GPU.

How: tests/cuda_emu/cuda_emu.h makes the unmodified .cuh files compile as host C++ with g++;
tests/cuda_emu/emu_main.cpp runs them with the launch sequences of csrc/cuda/*.cu (grid
shapes, kernel order, temp buffers, zeroing). Blocks run one after another; the threads of a
block are fibers under a deterministic scheduler with exact __syncthreads / __shfl_xor_sync
semantics (warp lanes independent, as under Volta's independent thread scheduling).

What it checks: the device code's logic as written -- index math (edge ids, windows,
transposed windows, chunks, tiles spanning dialogues, D tails), the reductions and their
barriers, the output masks and the launchers' buffer handling -- in float64 (tight tolerance),
float32 and bfloat16 (scalar_t != acc_t). Each job also runs under several schedules (blocks
and threads in order, reversed, shuffled): the results must be bit-identical, which finds
missing barriers and cross-block write conflicts as order dependence. Shared memory is filled
with NaN before each block and every output / temp buffer starts as NaN (like at::empty), so
reads of memory nobody wrote show up. Where the sanitizer runtimes exist the emulator is built
with AddressSanitizer (every device buffer is its own allocation: out-of-bounds global reads
and writes fail) and UBSan (misaligned vector loads, integer overflow). Divergent barriers,
deadlocks and full-mask shuffles with exited lanes are reported as errors.

What it cannot check: timing, occupancy, memory coalescing or bank conflicts; races that only
show with real concurrency inside one scheduling step (the emulator switches threads only at
barriers and shuffles, so it finds a race when reordering whole inter-barrier segments changes
the result); fused multiply-add (nvcc contracts a*b+c, g++ here does not: float results differ
from the GPU's in the last bits); shared-memory out-of-bounds accesses that stay inside the
block's static arrays; float16 (not emulated). The launch sequences are mirrored by hand in
emu_main.cpp: a change to csrc/cuda/*.cu must be repeated there.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from graphsmile.ops import num_edges, num_shift_pairs, reference, shift_pair_index

sys.path.insert(0, str(Path(__file__).resolve().parent / "cuda_emu"))
import emu_io  # noqa: E402
from conftest import assert_rounded_once  # noqa: E402

F64, F32, BF16 = torch.float64, torch.float32, torch.bfloat16
DT_IDS = {F64: "f64", F32: "f32", BF16: "bf16"}
MODES = {"per_edge": 0, "relative": 1}
# Scheduling policies (cuda_emu.h): in order, reversed, shuffled.
POLICIES = (0, 1, 7)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def emu():
    if emu_io.compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): the CUDA emulator cannot be built")
    binary, sanitized = emu_io.build("emu_main.cpp")  # a compile error is a failure, not a skip
    if not sanitized:
        warnings.warn("CUDA emulator built without AddressSanitizer/UBSan (runtimes missing): "
                      "out-of-bounds accesses of the kernels are not checked")
    return binary


def _run(emu, jobs):
    out, _ = emu_io.run(emu, jobs, POLICIES)
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def _split_policies(job_out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Outputs of the first policy; asserts that every other policy gave the same bits."""
    first = {k.split(".", 1)[1]: v for k, v in job_out.items() if k.startswith(f"{POLICIES[0]}.")}
    for k, v in job_out.items():
        pol, name = k.split(".", 1)
        assert torch.equal(_bits(v), _bits(first[name])), (
            f"{name}: schedule {pol} gives other bits than schedule {POLICIES[0]} "
            "(a race: missing barrier or two writers of one element)")
    return first


def _compare(name, got, exact, theirs, dtype):
    """float64: tight; float32: 1e-4 of the scale; bfloat16: error vs the float64 result at most
    2x that of the reference backend run in bfloat16, plus one ulp (as tests/test_cuda.py)."""
    got = got.reshape(-1)
    exact = exact.reshape(-1).double()
    assert got.numel() == exact.numel(), f"{name}: {got.numel()} elements, expected {exact.numel()}"
    if dtype == F64:
        torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-12, equal_nan=True, msg=lambda m: f"{name}: {m}")
    elif dtype == F32:
        scale = exact.abs().max().item() if exact.numel() else 0.0
        torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=1e-4 * max(1.0, scale), equal_nan=True,
                                   msg=lambda m: f"{name}: {m}")
    else:
        if exact.numel() == 0:
            return
        assert not torch.isnan(got).any(), f"{name}: NaN (an element no kernel wrote?)"
        scale = exact.abs().max().item()
        e_ours = (got.double() - exact).abs().max().item()
        e_theirs = (theirs.reshape(-1).double() - exact).abs().max().item()
        atol = torch.finfo(dtype).eps * max(scale, 1e-3)
        assert e_ours <= 2 * e_theirs + atol, f"{name}: error {e_ours:.3g} > 2 x torch's {e_theirs:.3g} + {atol:.3g}"


# --- window_norm / window_spmm ------------------------------------------------------------------

# (lengths, M, win_p, win_f, D, mode, dtype). Tiles are 32 rows (kTileRows), source chunks 32
# (kChunk), feature tiles 64 (kTileD) and 32 (kDotD): [37, 1, 18, 5] has a tile spanning four
# dialogues and a dialogue spanning two tiles; a dialogue of 70 with windows 17/17 or unbounded
# walks its band in several chunks; D = 70, 130 leave feature tails; D = 0 has no feature tile.
WINDOW_CASES = [
    ([37, 1, 18, 5], 2, 17, 17, 5, "per_edge", F64),
    ([37, 1, 18, 5], 3, -1, -1, 64, "per_edge", F32),
    ([37, 1, 18, 5], 3, 0, 0, 1, "relative", F64),
    ([37, 1, 18, 5], 2, 3, -1, 70, "per_edge", F64),
    ([37, 1, 18, 5], 3, 2, 5, 130, "relative", F32),
    ([70], 2, 17, 17, 130, "per_edge", F64),
    ([70], 3, 17, 17, 70, "relative", F64),
    ([70], 2, -1, -1, 64, "per_edge", F32),
    ([70, 1], 2, 2, 5, 5, "relative", F32),
    ([5, 3], 2, 0, -1, 33, "per_edge", F64),
    ([150, 130, 3], 2, 3, 1, 5, "relative", F64),  # N > kReduceThreads: strided reduce loop
    ([1], 2, 0, 0, 1, "per_edge", F64),
    ([4, 2], 2, 1, 1, 0, "per_edge", F64),
    ([37, 1, 18, 5], 2, 17, 17, 70, "per_edge", BF16),
    ([70], 2, 2, 5, 64, "relative", BF16),
    ([70, 9], 3, -1, -1, 130, "per_edge", BF16),  # tensor-core forward: many chunks, 3 feature tiles
]
_rng = random.Random(31)
for _ in range(3):
    _wp, _wf = _rng.choice([-1, 0, 1, 17, 40]), _rng.choice([-1, 0, 2, 17])
    _mode = "relative" if _wp >= 0 and _wf >= 0 and _rng.random() < 0.5 else "per_edge"
    WINDOW_CASES.append(([_rng.randint(1, 40) for _ in range(_rng.randint(1, 5))], _rng.choice([2, 3]), _wp, _wf,
                         _rng.choice([1, 5, 33, 64, 70, 130]), _mode, _rng.choice([F64, F32])))
# (need grad_x, grad_edge_weight, grad_norm): every output mask of window_spmm_backward.
MASKS = [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 0)]


def _wid(case):
    lens, M, wp, wf, D, mode, dtype = case
    return f"{'-'.join(map(str, lens))}-M{M}-w{wp},{wf}-D{D}-{mode}-{DT_IDS[dtype]}"


def _mask_id(mask):
    return "".join("xws"[i] if mask[i] else "-" for i in range(3))


def _window_inputs(lens, M, wp, wf, D, mode, seed):
    gen = torch.Generator().manual_seed(seed)
    N = sum(lens)
    x = torch.randn(M * N, D, dtype=F64, generator=gen)
    if mode == "per_edge":  # longer than E: the unused entries must get a zero gradient
        w = torch.rand(num_edges(lens, M, wp, wf) + 7, dtype=F64, generator=gen) + 0.25
    else:
        w = torch.rand(M, M - 1, wp + wf + 1, dtype=F64, generator=gen) + 0.25
    g = torch.randn(M * N, D, dtype=F64, generator=gen)
    gs = torch.randn(M * N, dtype=F64, generator=gen)
    return x, w, g, gs


def _leaf(t, dt):
    return t.detach().to(dt).clone().requires_grad_()


def _window_reference(dt, x, w, g, gs, s, lens, M, wp, wf, mode):
    """Every output of the emulated jobs, by the reference backend + autograd, in dtype dt."""
    m = MODES[mode]
    ww = _leaf(w, dt)
    norm = reference.window_norm(ww, lens, M, wp, wf, m)
    norm.backward(gs.to(dt))
    xx, w2, ss = _leaf(x, dt), _leaf(w, dt), _leaf(s, dt)
    y = reference.window_spmm(xx, w2, ss, lens, M, wp, wf, m)
    y.backward(g.to(dt))
    return {"s": norm.detach(), "gw_norm": ww.grad, "y": y.detach(), "gx": xx.grad, "gw": w2.grad, "gs": ss.grad}


def _window_jobs(dt, x, w, g, gs, s, lens, M, wp, wf, D, mode, masks):
    L = torch.tensor(lens, dtype=torch.long)
    ints = dict(M=M, wp=wp, wf=wf, mode=MODES[mode], D=D)
    w, s = w.to(dt).reshape(-1), s.to(dt)
    jobs = [
        ("norm", "window_norm", dt, ints, dict(lengths=L, w=w)),
        ("norm_bwd", "window_norm_backward", dt, ints, dict(lengths=L, w=w, s=s, gs=gs.to(dt))),
        ("spmm", "window_spmm", dt, ints, dict(lengths=L, w=w, s=s, x=x.to(dt))),
    ]
    for mask in masks:
        jobs.append((f"bwd_{_mask_id(mask)}", "window_spmm_backward", dt,
                     dict(ints, need_gx=mask[0], need_gw=mask[1], need_gs=mask[2]),
                     dict(lengths=L, w=w, s=s, x=x.to(dt), g=g.to(dt))))
    return jobs


@pytest.mark.parametrize("case", WINDOW_CASES, ids=_wid)
def test_window_kernels(emu, case):
    lens, M, wp, wf, D, mode, dt = case
    idx = WINDOW_CASES.index(case)
    x, w, g, gs = _window_inputs(lens, M, wp, wf, D, mode, seed=1000 + idx)
    s = reference.window_norm(w, lens, M, wp, wf, MODES[mode])  # the norm fed to the spmm jobs
    masks = [MASKS[0], MASKS[1 + idx % 6]]
    out = _run(emu, _window_jobs(dt, x, w, g, gs, s, lens, M, wp, wf, D, mode, masks))
    exact = _window_reference(F64, x, w, g, gs, s, lens, M, wp, wf, mode)
    theirs = _window_reference(dt, x, w, g, gs, s, lens, M, wp, wf, mode) if dt == BF16 else exact
    E = num_edges(lens, M, wp, wf)

    got = _split_policies(out["norm"])
    _compare("window_norm", got["s"], exact["s"], theirs["s"], dt)
    got = _split_policies(out["norm_bwd"])
    _compare("window_norm_backward", got["gw"], exact["gw_norm"], theirs["gw_norm"], dt)
    if dt == BF16:  # s recomputed in fp32 (kRecomputeNorm): the exact gradient rounded once
        wr = w.to(dt).double().requires_grad_()  # exact for the bf16 inputs the job got
        reference.window_norm(wr, lens, M, wp, wf, MODES[mode]).backward(gs.to(dt).double())
        assert_rounded_once("window_norm_backward", got["gw"].reshape(-1), wr.grad.reshape(-1), dt)
    if mode == "per_edge":
        assert torch.all(got["gw"][E:] == 0), "window_norm_backward: entries past E must be 0"
    got = _split_policies(out["spmm"])
    _compare("window_spmm", got["y"], exact["y"], theirs["y"], dt)
    for mask in masks:
        job = f"bwd_{_mask_id(mask)}"
        got = _split_policies(out[job])
        assert sorted(got) == sorted(n for n, r in zip(("gx", "gw", "gs"), mask) if r), job
        for name in got:
            _compare(f"window_spmm_backward[{_mask_id(mask)}] {name}", got[name], exact[name], theirs[name], dt)
        if mode == "per_edge" and "gw" in got:
            assert torch.all(got["gw"][E:] == 0), f"{job}: entries past E must be 0"


BF16_WINDOW_CASES = [([37, 1, 18, 5], 2, 17, 17, 70), ([70, 40], 3, -1, 3, 16), ([33], 2, 0, 0, 64),
                     ([100], 2, 17, 17, 130)]


@pytest.mark.parametrize("tensor_cores", ["1", "0"])
def test_window_spmm_bf16_kernels(emu, monkeypatch, tensor_cores):
    """Both 16-bit kernel sets of window_spmm forward and backward: tensor cores (the launchers'
    default on sm_80+: the forward and backward pass A) and FFMA (GRAPHSMILE_CUDA_TENSOR_CORES=0),
    against torch's own error in bf16."""
    monkeypatch.setenv("GRAPHSMILE_CUDA_TENSOR_CORES", tensor_cores)
    for k, (lens, M, wp, wf, D) in enumerate(BF16_WINDOW_CASES):
        x, w, g, gs = _window_inputs(lens, M, wp, wf, D, "per_edge", seed=7000 + k)
        s = reference.window_norm(w, lens, M, wp, wf, 0)
        L = torch.tensor(lens, dtype=torch.long)
        ints = dict(M=M, wp=wp, wf=wf, mode=0, D=D)
        bw = dict(lengths=L, w=w.to(BF16), s=s.to(BF16), x=x.to(BF16))
        jobs = [("spmm", "window_spmm", BF16, ints, bw),
                ("bwd", "window_spmm_backward", BF16, dict(ints, need_gx=1, need_gw=1, need_gs=1), dict(bw, g=g.to(BF16)))]
        out = _run(emu, jobs)
        exact = _window_reference(F64, x, w, g, gs, s, lens, M, wp, wf, "per_edge")
        theirs = _window_reference(BF16, x, w, g, gs, s, lens, M, wp, wf, "per_edge")
        tag = f"bf16 (tensor cores {tensor_cores}) {lens} M={M} win {wp},{wf} D={D}"
        _compare(f"window_spmm {tag}", _split_policies(out["spmm"])["y"], exact["y"], theirs["y"], BF16)
        got = _split_policies(out["bwd"])
        for name in ("gx", "gw", "gs"):
            _compare(f"window_spmm_backward {name} {tag}", got[name], exact[name], theirs[name], BF16)


def test_window_spmm_tc_forward_feature_tiles(emu, monkeypatch):
    """The tensor-core forward with 4 feature tiles per block (the launcher's default), 1 (the
    coefficients restaged for every tile) and 3 (GRAPHSMILE_CUDA_TC_DTILES): the same bits (a
    chunk's coefficients and products do not depend on the tiling), within bf16's bar of the
    reference. Where the band's chunks over all other modalities fit the kernel's 6 coefficient
    tiles (windows 17/17 and -1/3: 3 chunks per modality at M = 3) they are staged once and
    reused; the windows 40/40 band at M = 3 (4 chunks each, 8 in all) restages them; D = 300 needs
    two blocks along the features, the second with one tile. Forward only: the feature tiles are
    the forward's."""
    monkeypatch.setenv("GRAPHSMILE_CUDA_TENSOR_CORES", "1")
    cases = BF16_WINDOW_CASES + [([40, 30], 3, 17, 17, 300), ([100], 3, 40, 40, 70)]
    for k, (lens, M, wp, wf, D) in enumerate(cases):
        x, w, g, gs = _window_inputs(lens, M, wp, wf, D, "per_edge", seed=7100 + k)
        s = reference.window_norm(w, lens, M, wp, wf, 0)
        arrays = dict(lengths=torch.tensor(lens, dtype=torch.long), w=w.to(BF16), s=s.to(BF16), x=x.to(BF16))
        ys = {}
        variants = ("4", "1", "3") if D > 3 * 64 else ("4", "1")  # up to 3 feature tiles, 3 is 4's launch
        for d_tiles in variants:
            monkeypatch.setenv("GRAPHSMILE_CUDA_TC_DTILES", d_tiles)
            out = _run(emu, [("spmm", "window_spmm", BF16, dict(M=M, wp=wp, wf=wf, mode=0, D=D), arrays)])
            ys[d_tiles] = _split_policies(out["spmm"])["y"]
        tag = f"{lens} M={M} win {wp},{wf} D={D}"
        for d_tiles in variants[1:]:
            assert torch.equal(_bits(ys[d_tiles]), _bits(ys["4"])), f"window_spmm tc {tag}: d_tiles {d_tiles} != 4"
        exact = _window_reference(F64, x, w, g, gs, s, lens, M, wp, wf, "per_edge")
        theirs = _window_reference(BF16, x, w, g, gs, s, lens, M, wp, wf, "per_edge")
        _compare(f"window_spmm tc {tag}", ys["4"], exact["y"], theirs["y"], BF16)


@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_window_spmm_staged_kernels_same_bits(emu, monkeypatch, dt):
    """The staged fp32/fp64 forward and backward passes A and B (GRAPHSMILE_CUDA_FFMA_DTILES = 1,
    3, 8: coefficients staged once per block for its feature tiles, x / grad_y with 16-byte loads
    where D % 4 == 0) give the original FFMA kernels' bits (same per-thread sums in the same order), in
    every output: y, grad_x, grad_w, and grad_norm through pass A's per-tile partials. Cases: the band's
    chunks cached (windows 17/17, M = 2; fp32 also M = 3) and restaged (windows 40/40 at M = 3;
    fp64 keeps 2 tiles), D = 300 (vector loads, a partial last tile), D = 130 and 33 (scalar
    loads), the relative mode, a singleton dialogue."""
    cases = [([37, 1, 18, 5], 2, 17, 17, 300, "per_edge"), ([40, 30], 3, 17, 17, 130, "per_edge"),
             ([100], 3, 40, 40, 68, "per_edge"), ([70, 9], 2, 2, 5, 33, "relative"), ([1], 2, 0, 0, 4, "per_edge")]
    for k, (lens, M, wp, wf, D, mode) in enumerate(cases):
        x, w, g, gs = _window_inputs(lens, M, wp, wf, D, mode, seed=7300 + k)
        s = reference.window_norm(w, lens, M, wp, wf, MODES[mode])
        arrays = dict(lengths=torch.tensor(lens, dtype=torch.long), w=w.to(dt).reshape(-1), s=s.to(dt), x=x.to(dt))
        ints = dict(M=M, wp=wp, wf=wf, mode=MODES[mode], D=D)
        bwd = dict(ints, need_gx=1, need_gw=1, need_gs=1)
        outs = {}
        for d_tiles in ("0", "1", "3", "8"):
            monkeypatch.setenv("GRAPHSMILE_CUDA_FFMA_DTILES", d_tiles)
            out = _run(emu, [("spmm", "window_spmm", dt, ints, arrays),
                             ("bwd", "window_spmm_backward", dt, bwd, dict(arrays, g=g.to(dt)))])
            outs[d_tiles] = dict(_split_policies(out["spmm"]), **_split_policies(out["bwd"]))
        tag = f"{lens} M={M} win {wp},{wf} D={D} {mode}"
        for d_tiles in ("1", "3", "8"):
            for name in ("y", "gx", "gw", "gs"):  # gs sums pass A's per-tile partials
                assert torch.equal(_bits(outs[d_tiles][name]), _bits(outs["0"][name])), (
                    f"staged {name} {tag}: d_tiles {d_tiles} != original")
        exact = _window_reference(F64, x, w, g, gs, s, lens, M, wp, wf, mode)
        for name in ("y", "gx", "gw", "gs"):
            _compare(f"staged {name} {tag}", outs["8"][name], exact[name], exact[name], dt)


@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_window_spmm_split_pass_b(emu, monkeypatch, dt):
    """Backward pass B split over the features (GRAPHSMILE_CUDA_ROWS_FSPLIT = f 32-feature steps
    per block; partial dots per edge and split, summed in split order by the finish kernel):
    grad_w and grad_norm match the reference (and the unsplit kernel to rounding), the bits do not
    depend on the schedule, and every output is written (NaN-poisoned buffers). Splits of 1, 2
    and 3 steps over D = 300 (the last split partial), D = 33 (one split, scalar loads), the
    relative mode, both staged settings of the other passes."""
    cases = [([37, 1, 18, 5], 2, 17, 17, 300, "per_edge"), ([40, 30], 3, 17, 17, 33, "per_edge"),
             ([70, 9], 2, 2, 5, 96, "relative")]
    for k, (lens, M, wp, wf, D, mode) in enumerate(cases):
        x, w, g, gs = _window_inputs(lens, M, wp, wf, D, mode, seed=7400 + k)
        s = reference.window_norm(w, lens, M, wp, wf, MODES[mode])
        arrays = dict(lengths=torch.tensor(lens, dtype=torch.long), w=w.to(dt).reshape(-1), s=s.to(dt), x=x.to(dt),
                      g=g.to(dt))
        bwd = dict(M=M, wp=wp, wf=wf, mode=MODES[mode], D=D, need_gx=1, need_gw=1, need_gs=1)
        exact = _window_reference(F64, x, w, g, gs, s, lens, M, wp, wf, mode)
        monkeypatch.setenv("GRAPHSMILE_CUDA_ROWS_FSPLIT", "0")
        plain = _split_policies(_run(emu, [("bwd", "window_spmm_backward", dt, bwd, arrays)])["bwd"])
        for f_steps, ffma in (("1", "0"), ("2", "8"), ("3", "0")):
            monkeypatch.setenv("GRAPHSMILE_CUDA_ROWS_FSPLIT", f_steps)
            monkeypatch.setenv("GRAPHSMILE_CUDA_FFMA_DTILES", ffma)
            got = _split_policies(_run(emu, [("bwd", "window_spmm_backward", dt, bwd, arrays)])["bwd"])
            tag = f"split {f_steps} {lens} M={M} win {wp},{wf} D={D} {mode}"
            assert torch.equal(_bits(got["gx"]), _bits(plain["gx"])), f"{tag}: grad_x is pass A's"
            for name in ("gw", "gs"):
                _compare(f"{tag} {name}", got[name], exact[name], exact[name], dt)
                torch.testing.assert_close(got[name], plain[name], rtol=1e-5 if dt == F32 else 1e-12,
                                           atol=1e-5 if dt == F32 else 1e-12)
            if mode == "per_edge":
                E = num_edges(lens, M, wp, wf)
                assert torch.all(got["gw"][E:] == 0), f"{tag}: entries past E must be 0"


def test_rows_auto_split_choice(emu):
    """GRAPHSMILE_CUDA_ROWS_FSPLIT=auto (gpu::rows_auto_feature_steps): unsplit from 512 row tiles
    on and where D is one 32-feature step; below, about 1024 blocks in all, each at least one step."""
    table = [  # (row tiles, D, 32-feature steps per block; 0: unsplit)
        (48, 512, 1),     # 16 IEMOCAP-length dialogues (N = 759), M = 2: 16 splits, 768 blocks
        (250, 512, 4),    # 16x250: 5 splits wanted, 4 of 4 steps
        (511, 512, 6),    # 3 splits wanted: 6 + 6 + 4 steps
        (512, 512, 0),    # 16x256 and up (16x1000: 1000 tiles): unsplit
        (1250, 512, 0),   # 1x20000
        (4, 300, 1),      # 10 steps, at most 10 splits
        (100, 32, 0),     # one step: nothing to split
        (600, 33, 0),
        (1023, 64, 0),
        (400, 64, 1),     # ceil(1024 / 400) = 3 splits wanted, 2 steps: 2 splits of 1
    ]
    job = ("auto", "rows_auto_split", torch.int64, {},
           {"row_tiles": torch.tensor([t for t, _, _ in table]), "D": torch.tensor([d for _, d, _ in table])})
    got = _split_policies(_run(emu, [job])["auto"])["f_steps"].tolist()
    assert got == [f for _, _, f in table], list(zip(table, got))


@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_window_spmm_split_pass_b_auto(emu, monkeypatch, dt):
    """GRAPHSMILE_CUDA_ROWS_FSPLIT=auto on a small batch takes the split path with the steps of
    the table above: the same bits as FSPLIT set to that number."""
    lens, M, wp, wf, D, mode = [37, 1, 18, 5], 2, 17, 17, 300, "per_edge"  # 4 row tiles: 1 step per block
    x, w, g, _ = _window_inputs(lens, M, wp, wf, D, mode, seed=7500)
    s = reference.window_norm(w, lens, M, wp, wf, MODES[mode])
    arrays = dict(lengths=torch.tensor(lens, dtype=torch.long), w=w.to(dt).reshape(-1), s=s.to(dt), x=x.to(dt), g=g.to(dt))
    bwd = dict(M=M, wp=wp, wf=wf, mode=MODES[mode], D=D, need_gx=1, need_gw=1, need_gs=1)
    outs = {}
    for setting in ("auto", "1", "0"):
        monkeypatch.setenv("GRAPHSMILE_CUDA_ROWS_FSPLIT", setting)
        outs[setting] = _split_policies(_run(emu, [("bwd", "window_spmm_backward", dt, bwd, arrays)])["bwd"])
    for name in ("gx", "gw", "gs"):
        assert torch.equal(_bits(outs["auto"][name]), _bits(outs["1"][name])), name
    # and not the unsplit kernel's bits (another association of each dot): auto did split
    assert not torch.equal(_bits(outs["auto"]["gw"]), _bits(outs["0"]["gw"]))


def test_window_zero_and_negative_degrees(emu):
    """d == 0 gives s = 0 and a zero gradient through the degree; d < 0 gives NaN (the original's
    masked rsqrt), in the norm kernels; spmm with a zero-degree row."""
    lens, M, wp, wf, D, mode = [3, 4], 2, 0, 1, 6, "per_edge"
    x, w, g, gs = _window_inputs(lens, M, wp, wf, D, mode, seed=5)
    w_zero = w.clone()
    w_zero[:2] = 0.0  # edges 0, 1 (pair 0->1, dialogue 0, row 0): node 0 has degree 0
    w_neg = w_zero.clone()
    w_neg[5] = -3.0  # edge 5 (pair 1->0, row 0): node N has a negative degree
    L = torch.tensor(lens)
    ints = dict(M=M, wp=wp, wf=wf, mode=0, D=D)
    s_zero = reference.window_norm(w_zero, lens, M, wp, wf, 0)
    s_neg = reference.window_norm(w_neg, lens, M, wp, wf, 0)
    assert (s_zero == 0).any() and torch.isnan(s_neg).any()
    jobs = [
        ("norm_neg", "window_norm", F64, ints, dict(lengths=L, w=w_neg)),
        ("norm_bwd_neg", "window_norm_backward", F64, ints, dict(lengths=L, w=w_neg, s=s_neg, gs=gs)),
        ("norm_zero", "window_norm", F64, ints, dict(lengths=L, w=w_zero)),
        ("spmm_neg", "window_spmm", F64, ints, dict(lengths=L, w=w_neg, s=s_neg, x=x)),
    ] + _window_jobs(F64, x, w_zero, g, gs, s_zero, lens, M, wp, wf, D, mode, [MASKS[0]])[1:]
    out = _run(emu, jobs)
    ww = _leaf(w_neg, F64)
    reference.window_norm(ww, lens, M, wp, wf, 0).backward(gs)
    _compare("norm (d < 0)", _split_policies(out["norm_neg"])["s"], s_neg, None, F64)
    _compare("norm_backward (d < 0)", _split_policies(out["norm_bwd_neg"])["gw"], ww.grad, None, F64)
    _compare("norm (d == 0)", _split_policies(out["norm_zero"])["s"], s_zero, None, F64)
    # a NaN norm reaches exactly its own row and the rows with an edge into it (coefficients
    # outside a window are exact zeros, never 0 * NaN)
    y_neg = reference.window_spmm(x, w_neg, s_neg, lens, M, wp, wf, 0)
    got = _split_policies(out["spmm_neg"])["y"].view_as(y_neg)
    assert torch.isnan(y_neg).any() and torch.equal(torch.isnan(got), torch.isnan(y_neg))
    _compare("spmm (d < 0)", got, y_neg, None, F64)
    exact = _window_reference(F64, x, w_zero, g, gs, s_zero, lens, M, wp, wf, mode)
    _compare("norm_backward (d == 0)", _split_policies(out["norm_bwd"])["gw"], exact["gw_norm"], None, F64)
    _compare("spmm (d == 0)", _split_policies(out["spmm"])["y"], exact["y"], None, F64)
    for name, t in _split_policies(out["bwd_xws"]).items():
        assert torch.isfinite(t).all(), name
        _compare(f"spmm_backward (d == 0) {name}", t, exact[name], None, F64)


# --- shift pairs --------------------------------------------------------------------------------

# (lengths, shift_win, C, dtype). Warps of 8 utterances per block (kShiftWarps); column sums in
# segments of kColSeg = 256 chunk rows: a chunk of 300 takes the partial + combine path, with
# chunks of one segment in the same batch; C = 33 takes the lanes-over-classes branch.
SHIFT_CASES = [
    ([37, 1, 18, 5], 4, 3, F64),
    ([300], -1, 2, F32),
    ([300, 3, 40], -1, 1, F64),
    ([7, 2, 9], 3, 33, F64),
    ([5], 9, 2, F32),
    ([260, 17], 100, 2, F64),
    ([37, 1, 18, 5], -1, 3, BF16),
]
SHIFT_MASKS = [(1, 1), (1, 0), (0, 1)]


def _sid(case):
    lens, sw, C, dt = case
    return f"{'-'.join(map(str, lens))}-w{sw}-C{C}-{DT_IDS[dt]}"


def _shift_reference(dt, a, b, g, lens, sw):
    aa, bb = _leaf(a, dt), _leaf(b, dt)
    out = reference.shift_pair_sum(aa, bb, lens, sw)
    out.backward(g.to(dt))
    return {"out": out.detach(), "ga": aa.grad, "gb": bb.grad}


@pytest.mark.parametrize("case", SHIFT_CASES, ids=_sid)
def test_shift_pair_kernels(emu, case):
    lens, sw, C, dt = case
    gen = torch.Generator().manual_seed(2000 + SHIFT_CASES.index(case))
    N, P = sum(lens), num_shift_pairs(lens, sw)
    a = torch.randn(N, C, dtype=F64, generator=gen)
    b = torch.randn(N, C, dtype=F64, generator=gen)
    g = torch.randn(P, C, dtype=F64, generator=gen)
    L = torch.tensor(lens)
    ints = dict(shift_win=sw, C=C)
    jobs = [("sum", "shift_pair_sum", dt, ints, dict(lengths=L, a=a.to(dt), b=b.to(dt)))]
    for ma, mb in SHIFT_MASKS:
        jobs.append((f"bwd_{ma}{mb}", "shift_pair_sum_backward", dt, dict(ints, need_ga=ma, need_gb=mb),
                     dict(lengths=L, grad=g.to(dt))))
    out = _run(emu, jobs)
    exact = _shift_reference(F64, a, b, g, lens, sw)
    theirs = _shift_reference(dt, a, b, g, lens, sw)
    # a_i + b_j added in acc_t and rounded once: the same bits as torch in that dtype.
    got = _split_policies(out["sum"])["out"]
    assert torch.equal(_bits(got), _bits(theirs["out"].reshape(-1))), "shift_pair_sum: not bitwise torch's a_i + b_j"
    for ma, mb in SHIFT_MASKS:
        got = _split_policies(out[f"bwd_{ma}{mb}"])
        assert sorted(got) == sorted(n for n, r in (("ga", ma), ("gb", mb)) if r)
        for name in got:
            _compare(f"shift_pair_sum_backward[{ma}{mb}] {name}", got[name], exact[name], theirs[name], dt)


# --- the fused shift loss -----------------------------------------------------------------------

# (lengths, shift_win, dtype) of shift_pair_nll, each run by both kernels. Two-pass: rows kernel
# warps of 8 utterances per block; columns kernel segments of kColSeg = 256 chunk rows, so the
# chunks of 300 / 270 take the partial + combine path, next to one-segment chunks of the same
# batch. Tiled (64 x 64 squares at these sizes): chunks of 300 / 270 / 260 have 5 bands, the last
# one short. Lengths 1 give one-pair chunks, shift_win 4 / 100 / 3 / 200 leave a short last chunk.
NLL_CASES = [
    ([37, 1, 18, 5], 4, F64),
    ([37, 1, 18, 5], -1, F64),
    ([300, 3, 1, 40], -1, F64),
    ([1], -1, F64),
    ([260, 17, 1], 100, F32),
    ([300], -1, F32),
    ([5, 1], 9, F32),
    ([37, 1, 18, 5], -1, BF16),
    ([270, 2, 1], -1, BF16),
    ([7, 2, 9], 3, BF16),
    ([500, 3], 200, F32),  # tiled: a short last chunk (100) with fewer bands (2) than the others (4)
]


def _nid(case):
    lens, sw, dt = case
    return f"{'-'.join(map(str, lens))}-w{sw}-{DT_IDS[dt]}"


def _nll_inputs(lens, seed, scale=2.0, classes=3):
    gen = torch.Generator().manual_seed(seed)
    N = sum(lens)
    a = scale * torch.randn(N, 2, dtype=F64, generator=gen)
    b = scale * torch.randn(N, 2, dtype=F64, generator=gen)
    s = torch.randint(0, classes, (N,), generator=gen)
    return a, b, s


def _nll_reference(dt, a, b, s, lens, sw):
    """The op's outputs by reference.shift_pair_nll in dtype dt, the residual sums by autograd:
    row_r = d loss / d a[:, 1] = -d loss / d a[:, 0], col_r = d loss / d b[:, 1]."""
    aa, bb = _leaf(a, dt), _leaf(b, dt)
    loss, confusion = reference.shift_pair_nll(aa, bb, s, lens, sw)
    ga, gb = torch.autograd.grad(loss, (aa, bb))
    return {"loss": loss.detach(), "confusion": confusion, "row_r": ga[:, 1], "row_r0": -ga[:, 0], "col_r": gb[:, 1]}


def _nll_per_row(dt, a, b, s, lens, sw):
    """Per-row values in float64 from the logits rounded to dt (z = a_i + b_j in dt, as the
    kernels round them): row_loss, counts [N, 4] and the residual sums. Exact up to float64 sums,
    so a kernel that skips the rounding, or errs in one row, is seen."""
    idx = shift_pair_index(lens, sw)
    N = sum(lens)
    z = (a.to(dt).index_select(0, idx[0]) + b.to(dt).index_select(0, idx[1])).double().requires_grad_()
    y = (s[idx[0]] != s[idx[1]]).long()
    per_pair = torch.nn.functional.cross_entropy(z, y, reduction="none")
    (gz,) = torch.autograd.grad(per_pair.sum(), z)
    cell = 2 * y + (z[:, 1] > z[:, 0]).long()
    counts = torch.zeros(N, 4, dtype=torch.long).index_put_((idx[0], cell), torch.ones_like(cell), accumulate=True)
    zeros = torch.zeros(N, dtype=F64)
    return {"row_loss": zeros.index_add(0, idx[0], per_pair.detach()), "counts": counts,
            "row_r": zeros.index_add(0, idx[0], gz[:, 1]), "col_r": zeros.index_add(0, idx[1], gz[:, 1])}


# The launcher's kernels (emu_main.cpp, job int "kernel"): the two-pass rows + columns kernels,
# the tiled single-pass kernel, and the tiled kernel with kFast (whose intrinsics are the accurate
# functions in the emulator: the logic is checked here, the approximations on a GPU).
NLL_KERNELS = {"two_pass": 0, "tiled": 1, "tiled_fast": 2}


def _nll_jobs(dt, a, b, s, lens, sw, kernel="two_pass", min_bands=None):
    arrays = dict(lengths=torch.tensor(lens), a=a.to(dt), b=b.to(dt), sentiment=s)
    ints = dict(kernel=NLL_KERNELS[kernel])
    if min_bands is not None:
        ints["min_bands"] = min_bands
    return [(f"nll_g{g}", "shift_pair_nll", dt, dict(shift_win=sw, with_grad=g, **ints), arrays) for g in (1, 0)]


def _tiled_spans(lens, sw, min_bands=32):
    """The tiled kernel's square side of every dialogue, as kernels/shift_pair.cuh's nll_span:
    64, doubled while the chunk keeps at least min_bands bands of the doubled side, at most 1024."""
    spans = []
    for L in lens:
        w, S = (L if sw < 0 else min(sw, L)), 64
        while S < 1024 and w >= 2 * S * min_bands:
            S *= 2
        spans.append(S)
    return spans


def _check_nll(out, dt, a, b, s, lens, sw, tag):
    """Both jobs of _nll_jobs against the reference: the same bits under every schedule, the
    confusion and per-row counts exact, the sums within _compare's tolerances (float32 and
    bfloat16 against the float64 results)."""
    exact = _nll_reference(F64, a, b, s, lens, sw)
    theirs = _nll_reference(dt, a, b, s, lens, sw) if dt != F64 else exact
    rows = _nll_per_row(dt, a, b, s, lens, sw)
    acc = F64 if dt == F64 else F32
    got = _split_policies(out["nll_g1"])
    nograd = _split_policies(out["nll_g0"])
    N = sum(lens)
    for k, v in got.items():
        assert v.dtype == (torch.int64 if k in ("confusion", "counts", "spans") else acc), (tag, k, v.dtype)
    assert got["row_r"].numel() == N and got["col_r"].numel() == N
    assert nograd["row_r"].numel() == 0 and nograd["col_r"].numel() == 0, f"{tag}: with_grad=0 gives [0] residuals"
    for k in ("loss", "confusion", "row_loss", "counts"):
        assert torch.equal(_bits(got[k]), _bits(nograd[k])), f"{tag}: {k} depends on with_grad"
    # counts: exact, per row and in total (the reference's confusion in dt: the same rounded logits)
    assert torch.equal(got["counts"].view(N, 4), rows["counts"]), f"{tag}: per-row confusion counts"
    assert torch.equal(got["confusion"].view(2, 2), theirs["confusion"]), f"{tag}: confusion"
    assert got["confusion"].sum().item() == num_shift_pairs(lens, sw)
    # sums: against the float64 sums over the dt-rounded logits (tight in every dtype) ...
    tight = F64 if dt == F64 else F32
    _compare(f"{tag} row_loss", got["row_loss"], rows["row_loss"], None, tight)
    _compare(f"{tag} loss", got["loss"], rows["row_loss"].sum(), None, tight)
    for k in ("row_r", "col_r"):
        _compare(f"{tag} {k} (rounded logits)", got[k], rows[k], None, tight)
    # ... and against reference.shift_pair_nll + autograd (bf16: at most 2x torch's own error)
    _compare(f"{tag} loss (reference)", got["loss"], exact["loss"], theirs["loss"], dt)
    for k, ref in (("row_r", "row_r"), ("row_r", "row_r0"), ("col_r", "col_r")):
        _compare(f"{tag} {k} (reference d/d{ref})", got[k], exact[ref], theirs[ref], dt)


@pytest.mark.parametrize("kernel", ["two_pass", "tiled"])
@pytest.mark.parametrize("case", NLL_CASES, ids=_nid)
def test_shift_pair_nll_kernels(emu, case, kernel):
    lens, sw, dt = case
    a, b, s = _nll_inputs(lens, seed=3000 + NLL_CASES.index(case))
    out = _run(emu, _nll_jobs(dt, a, b, s, lens, sw, kernel))
    _check_nll(out, dt, a, b, s, lens, sw, f"shift_pair_nll {kernel} {_nid(case)}")
    if kernel == "tiled":  # the launcher's kNllMinBands = 32: 64 x 64 squares at these sizes
        assert _split_policies(out["nll_g1"])["spans"].tolist() == _tiled_spans(lens, sw) == [64] * len(lens)


# (lengths, shift_win, min_bands): larger squares (the launcher takes them from chunks of 4,096 on,
# too slow to emulate; min_bands lowered instead), where one block walks several row tiles (its
# column partials added in row-tile order) and several column tiles, with short last bands, a
# short last chunk with fewer bands than the others, and dialogues of different sides in one batch.
NLL_SPAN_CASES = [
    ([300], -1, 2),  # S = 128: bands 128, 128, 44
    ([300, 3, 1], -1, 1),  # S = 256, 64, 64
    ([500, 17, 1], 200, 1),  # S = 128: chunks 200 (bands 128, 72), 200, 100 (one band)
    ([700, 70], -1, 1),  # S = 512 (8 x 8 tiles in a square), 64
    ([256, 255], -1, 2),  # the rule's boundary: w = 2 x 64 x min_bands doubles (128), one less does not
]


@pytest.mark.parametrize("dt", [F64, F32, BF16], ids=lambda d: DT_IDS[d])
@pytest.mark.parametrize("case", NLL_SPAN_CASES, ids=lambda c: f"{'-'.join(map(str, c[0]))}-w{c[1]}-m{c[2]}")
def test_shift_pair_nll_tiled_squares(emu, case, dt):
    lens, sw, min_bands = case
    a, b, s = _nll_inputs(lens, seed=4000 + NLL_SPAN_CASES.index(case))
    out = _run(emu, _nll_jobs(dt, a, b, s, lens, sw, "tiled", min_bands=min_bands))
    spans = _split_policies(out["nll_g1"])["spans"].tolist()
    assert spans == _tiled_spans(lens, sw, min_bands) and max(spans) > 64, spans
    _check_nll(out, dt, a, b, s, lens, sw, f"shift_pair_nll tiled S={spans} {DT_IDS[dt]}")


@pytest.mark.parametrize("kernel", list(NLL_KERNELS))
@pytest.mark.parametrize("dt", [F64, F32, BF16], ids=lambda d: DT_IDS[d])
def test_shift_pair_nll_ties_and_large_logits(emu, dt, kernel):
    """Ties z_0 == z_1 (small-integer logits: prediction 0, as argmax) and logits up to about
    +-400 (exp(-|x|) underflows; loss = x, residual +-1 or 0), with two sentiment classes.
    tiled_fast: kFast in float (the accurate path for float64)."""
    lens, sw = [20, 9, 33, 70], -1
    gen = torch.Generator().manual_seed(11)
    N = sum(lens)
    a = torch.randint(-1, 2, (N, 2), generator=gen).double()
    b = torch.randint(-1, 2, (N, 2), generator=gen).double()
    s = torch.randint(0, 2, (N,), generator=gen)
    rows = _nll_per_row(dt, a, b, s, lens, sw)
    assert rows["counts"][:, 0].sum() > 0 and rows["counts"][:, 2].sum() > 0  # ties predict 0 for both labels
    out = _run(emu, _nll_jobs(dt, a, b, s, lens, sw, kernel))
    _check_nll(out, dt, a, b, s, lens, sw, f"shift_pair_nll {kernel} ties {DT_IDS[dt]}")
    a, b, s = _nll_inputs(lens, seed=12, scale=100.0, classes=2)
    out = _run(emu, _nll_jobs(dt, a, b, s, lens, sw, kernel))
    _check_nll(out, dt, a, b, s, lens, sw, f"shift_pair_nll {kernel} large {DT_IDS[dt]}")


@pytest.mark.parametrize("kernel", ["tiled", "tiled_fast"])
def test_shift_pair_nll_tiled_nan_rows(emu, kernel):
    """A NaN logit poisons exactly the loss and residual sums of the pairs it is in (its row and
    its column), never the masked padding of a tile: the tiled kernel masks with selects, and
    the fast term keeps NaN (no fmaxf / fminf, which would drop it)."""
    lens, sw = [70, 5], -1
    a, b, s = _nll_inputs(lens, seed=13)
    a[3, 1] = float("nan")
    out = _split_policies(_run(emu, _nll_jobs(F32, a, b, s, lens, sw, kernel))["nll_g1"])
    bad_row = torch.zeros(sum(lens), dtype=torch.bool)
    bad_row[3] = True
    assert torch.isnan(out["row_loss"][bad_row]).all() and not torch.isnan(out["row_loss"][~bad_row]).any()
    assert torch.isnan(out["row_r"][bad_row]).all() and not torch.isnan(out["row_r"][~bad_row]).any()
    # every column of dialogue 0 pairs with row 3; dialogue 1's columns do not
    assert torch.isnan(out["col_r"][:70]).all() and not torch.isnan(out["col_r"][70:]).any()
    assert out["counts"].view(-1, 4).sum().item() == num_shift_pairs(lens, sw)


# --- the by-value upload of the launchers' metadata ----------------------------------------------


def test_upload_by_value_chunks(emu):
    """cuda_host::write_by_value (upload_meta's path for small tables and under CUDA-graph
    capture, and the op upload_by_value): the table cut into kernel-argument chunks of 480
    values, each written by one block. Every value lands once, in place, at chunk edges too."""
    gen = torch.Generator().manual_seed(0)
    jobs = []
    sizes = (1, 2, 479, 480, 481, 960, 961, 2000)
    for n in sizes:
        values = torch.randint(-2**62, 2**62, (n,), dtype=torch.int64, generator=gen)
        jobs.append((f"up{n}", "upload_by_value", torch.int64, {}, {"values": values}))
    out = _run(emu, jobs)
    for (name, _, _, _, arrays), n in zip(jobs, sizes):
        got = _split_policies(out[name])
        assert torch.equal(got["out"], arrays["values"]), n
        assert got["launches"].item() == -(-n // 480), n


# --- the emulator itself ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def selftest():
    if emu_io.compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): the CUDA emulator cannot be built")
    binary, sanitized = emu_io.build("selftest.cpp")
    return binary, sanitized


def _selftest(binary, name, policy=0):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:halt_on_error=1", UBSAN_OPTIONS="halt_on_error=1")
    r = subprocess.run([str(binary), name, str(policy)], capture_output=True, text=True, env=env, timeout=60)
    return r.returncode, [float(v) for v in r.stdout.split()] if r.returncode == 0 else [], r.stderr


def test_emulator_selftest(selftest):
    """The emulator's shuffles are exact, and it catches what it claims to catch."""
    binary, sanitized = selftest
    rc, vals, err = _selftest(binary, "shfl")
    assert rc == 0, err
    k = 0
    for width in (1, 2, 4, 8, 16, 32):
        for m in range(32):
            for t in range(64):
                lane = t & 31
                src = lane ^ m
                src = lane if src >= (lane // width + 1) * width else src  # later groups: own value
                assert vals[k * 64 + t] == 100 * (t >> 5) + src, (width, m, t)
            k += 1
    rc, vals, err = _selftest(binary, "group_sum")
    assert rc == 0, err
    for off, width in ((0, 32), (64, 16), (128, 8)):
        for t in range(64):
            g0 = t - t % width
            assert vals[off + t] == sum(1.0 + i for i in range(g0, g0 + width))
    # a missing barrier makes the result schedule-dependent; with the barrier it is not
    race = [_selftest(binary, "race", p)[1] for p in POLICIES]
    assert any(str(r) != str(race[0]) for r in race[1:])
    norace = [_selftest(binary, "norace", p)[1] for p in POLICIES]
    assert all(r == norace[0] for r in norace) and norace[0] == [float((t + 1) % 64) for t in range(64)]
    # shared memory the block did not write reads as NaN, not as the previous block's value
    rc, vals, err = _selftest(binary, "stale")
    assert rc == 0 and vals[0] == 1.0 and vals[1] != vals[1], (vals, err)
    for name, msg in (("divergent_sync", "divergent __syncthreads"), ("deadlock", "deadlock"),
                      ("shfl_exited", "a lane of the warp has exited")):
        rc, _, err = _selftest(binary, name)
        assert rc == 3 and msg in err, (name, rc, err[-2000:])
    if sanitized:
        rc, _, err = _selftest(binary, "oob")
        assert rc != 0 and "heap-buffer-overflow" in err, err[-2000:]
