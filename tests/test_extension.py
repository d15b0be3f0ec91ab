"""The compiled extension: registration per dispatch key, and the pure-torch fallback when it
cannot be loaded."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import graphsmile.ops as ops

REPO = Path(__file__).resolve().parents[1]
OPS = ["window_norm", "window_norm_backward", "window_spmm", "window_spmm_backward", "shift_pair_sum", "shift_pair_sum_backward",
       "shift_pair_nll"]


def test_schemas_and_cpu_kernels_registered():
    assert ops.HAS_EXTENSION, f"graphsmile._C did not load: {ops._ext.LOAD_ERROR}"
    for name in OPS:
        op = getattr(torch.ops.graphsmile, name)
        assert op.default._schema.name == f"graphsmile::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"graphsmile::{name}", "CPU")


def test_autograd_of_every_op_is_registered_in_cpp():
    """Every forward and backward op has a C++ autograd kernel (csrc/autograd.cpp), so a C++
    program gets gradients through the dispatcher with no Python; the Python side registers
    fake implementations only."""
    for name in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"graphsmile::{name}", "Autograd"), name
    registry = (REPO / "graphsmile" / "ops" / "_registry.py").read_text()
    assert "register_autograd" not in registry


def test_cpp_api_version_is_the_package_version():
    """include/graphsmile/graphsmile.h's GRAPHSMILE_VERSION (the C++ API's and the CMake
    package's version) is graphsmile.__version__."""
    import re

    import graphsmile

    header = (REPO / "include" / "graphsmile" / "graphsmile.h").read_text()
    found = re.findall(r'^#define GRAPHSMILE_VERSION "([^"]+)"$', header, flags=re.M)
    assert found == [graphsmile.__version__]


def test_auto_backend_is_cpu_kernel_on_cpu():
    assert ops._backend.resolve("auto", torch.device("cpu")) == "cpu"


def test_auto_backend_on_gpu_by_dtype(monkeypatch):
    """On a GPU, "auto" takes Triton for fp16/bf16 window ops (measured faster there) and the
    CUDA kernels otherwise; the shift ops (no preference) keep the CUDA kernels."""
    from graphsmile.ops import _backend

    monkeypatch.setattr(_backend._ext, "has_kernel", lambda key: True)
    monkeypatch.setattr(_backend, "_TRITON", True)
    cuda = torch.device("cuda")
    for dt in (torch.float16, torch.bfloat16):
        assert _backend.resolve("auto", cuda, dt, prefer_triton_low_precision=True) == "triton"
        assert _backend.resolve("auto", cuda, dt) == "cuda"
        assert _backend.resolve("cuda", cuda, dt, prefer_triton_low_precision=True) == "cuda"
    for dt in (torch.float32, torch.float64):
        assert _backend.resolve("auto", cuda, dt, prefer_triton_low_precision=True) == "cuda"
    monkeypatch.setattr(_backend, "_TRITON", False)  # no triton: the CUDA kernels in every dtype
    assert _backend.resolve("auto", cuda, torch.bfloat16, prefer_triton_low_precision=True) == "cuda"


def _run(code: str, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env, timeout=120)


def test_extension_without_the_shift_ops_autograd_is_refused():
    """An extension built before the shift ops' autograd moved to C++ has the window ops'
    autograd but not theirs: loaded, the shift head would get no gradient (torch only warns).
    It is refused like one that does not load, naming the ops. (Simulated: the dispatcher is
    told to report no autograd kernel for the shift ops before graphsmile is imported.)"""
    proc = _run(
        """
        import warnings
        import torch
        real = torch._C._dispatch_has_kernel_for_dispatch_key
        def stale(name, key):
            if key == "Autograd" and name.startswith("graphsmile::shift_pair"):
                return False
            return real(name, key)
        torch._C._dispatch_has_kernel_for_dispatch_key = stale
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import graphsmile.ops as ops
        assert not ops.HAS_EXTENSION
        assert "older sources" in ops._ext.LOAD_ERROR and "shift_pair_nll" in ops._ext.LOAD_ERROR, ops._ext.LOAD_ERROR
        assert "window_spmm" not in ops._ext.LOAD_ERROR, ops._ext.LOAD_ERROR
        assert any("could not be loaded" in str(c.message) for c in caught)
        assert ops._backend.resolve("auto", torch.device("cpu")) == "reference"
        print("refused")
        """
    )
    assert proc.returncode == 0 and "refused" in proc.stdout, proc.stdout + proc.stderr


def test_fallback_without_extension_warns_once_and_works():
    proc = _run(
        """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import graphsmile, graphsmile.ops as ops
            import torch
            x = torch.randn(10, 4, dtype=torch.float64)
            w = torch.rand(100, dtype=torch.float64) + 0.5
            y = ops.window_propagate(x, w, [3, 2], 2, 1, 1)
            ref = ops.window_propagate(x, w, [3, 2], 2, 1, 1, backend="dense")
            assert torch.allclose(y, ref)
            assert ops._backend.resolve("auto", torch.device("cpu")) == "reference"
            try:
                ops.window_propagate(x, w, [3, 2], 2, 1, 1, backend="cpu")
            except RuntimeError as e:
                assert "graphsmile._C" in str(e), e
            else:
                raise AssertionError("backend='cpu' without the extension must fail")
        ours = [str(c.message) for c in caught if "graphsmile" in str(c.message)]
        assert len(ours) == 1, ours
        assert "fall back to the pure-torch reference" in ours[0], ours
        assert "unset GRAPHSMILE_NO_EXTENSION" in ours[0], ours
        print("fallback ok")
        """,
        GRAPHSMILE_NO_EXTENSION="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "fallback ok" in proc.stdout


def test_fallback_warning_names_a_package_without_its_compiled_module(tmp_path):
    """A graphsmile/ with no _C*.so (a source tree hiding an installed copy, or never built): the
    warning names the folder and both ways out, instead of only 'rebuild'."""
    copy = tmp_path / "tree"
    shutil.copytree(REPO / "graphsmile", copy / "graphsmile",
                    ignore=shutil.ignore_patterns("__pycache__", "_C*.so"))
    # without the editable install's finder, which would fetch this checkout's _C for the copy
    code = ("import sys, warnings\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in getattr(f, '__name__', type(f).__name__)]\n"
            "warnings.simplefilter('always')\nimport graphsmile.ops as o\nprint(o.HAS_EXTENSION)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(copy)))
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
    assert f"there is no compiled module in {copy / 'graphsmile'}" in proc.stderr, proc.stderr
    assert "run from outside the source tree" in proc.stderr


def test_shift_loss_row_loop_vectorises(tmp_path):
    """The fused shift loss's float32 rows are fast only if GCC vectorises their loop (branch-free
    selects, -fno-trapping-math from setup.py): compile csrc/cpu/shift_pair_cpu.cpp with the
    extension's flags and ask GCC whether it did, so an edit that breaks it fails here instead of
    silently costing 4-8x."""
    import shutil
    import sysconfig

    import pytest
    from torch.utils.cpp_extension import include_paths

    cxx = shutil.which("g++")
    if cxx is None or sys.platform != "linux":
        pytest.skip("needs g++ on Linux (the compiler and platform the check is written for)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(repo, "csrc", "cpu", "shift_pair_cpu.cpp")
    lines = open(src).read().splitlines()
    marker = next(i for i, ln in enumerate(lines) if "GS-VECTORISED-LOOP" in ln)
    loop_line = marker + 2  # 1-based number of the line after the marker
    std = "-std=c++20" if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 14) else "-std=c++17"
    cmd = [cxx, "-O3", std, "-fno-trapping-math", "-fPIC", "-fopenmp", "-fopt-info-vec-optimized", "-c", src,
           "-o", str(tmp_path / "x.o"), "-I" + os.path.join(repo, "csrc"), "-I" + os.path.join(repo, "kernels"),
           "-I" + sysconfig.get_paths()["include"]] + ["-I" + p for p in include_paths()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = [ln for ln in (proc.stdout + proc.stderr).splitlines() if f"shift_pair_cpu.cpp:{loop_line}:" in ln]
    # x86-64: the default (SSE2) and the AVX2 clone of the function must both vectorise it
    import platform

    want = 2 if platform.machine() in ("x86_64", "AMD64") else 1
    assert sum("loop vectorized" in ln for ln in report) >= want, (
        f"GCC did not vectorise the row loop at shift_pair_cpu.cpp:{loop_line} ({want} clone(s) expected):\n"
        + "\n".join(report))


def test_sdist_carries_every_source_and_header(tmp_path):
    """A source distribution must hold every file the extension compiles from: setup.py names
    only the .cpp/.cu files, so the headers (csrc/*.h, kernels/*) come from MANIFEST.in."""
    import glob
    import tarfile

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(repo, "setup.py")):
        import pytest

        pytest.skip("not a source tree")
    import shutil

    # a copy without *.egg-info: setuptools would otherwise reuse an earlier SOURCES.txt
    src = tmp_path / "src"
    src.mkdir()
    for name in ("csrc", "kernels", "graphsmile"):
        shutil.copytree(os.path.join(repo, name), src / name,
                        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.egg-info"))
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "CMakeLists.txt"):
        if os.path.exists(os.path.join(repo, name)):
            shutil.copy(os.path.join(repo, name), src / name)
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(dist)], cwd=src,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, USE_CUDA="0"))
    assert r.returncode == 0, r.stderr[-2000:]
    (archive,) = dist.glob("*.tar.gz")
    with tarfile.open(archive) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    wanted = [os.path.relpath(p, repo) for pattern in ("csrc/**/*.*", "kernels/*.*")
              for p in glob.glob(os.path.join(repo, pattern), recursive=True)]
    wanted += ["CMakeLists.txt", "setup.py", "pyproject.toml"]
    missing = sorted(set(wanted) - names)
    assert not missing, f"missing from the sdist: {missing}"


def test_host_to_device_goes_by_value_while_capturing(monkeypatch):
    """While a CUDA graph is being captured, host tables go by value (the op upload_by_value),
    not through pinned memory that a replay would read again; otherwise unchanged."""
    from graphsmile.ops import index

    t = torch.arange(6).view(2, 3)
    assert torch.equal(index.host_to_device(t, "cpu"), t)
    calls = []
    monkeypatch.setattr(index, "upload_by_value", lambda t, device: calls.append((t, device)) or "by value")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert index.host_to_device(t, "cuda") == "by value" and calls[0][0] is t
    assert torch.equal(index.host_to_device(t, "cpu"), t) and len(calls) == 1  # CPU targets: never by value


def test_upload_by_value_checks():
    """Integer tables only; on an extension without CUDA kernels, a clear error instead of the
    dispatcher's. (With them, tests/test_cuda.py checks the values on a GPU.)"""
    from graphsmile.ops import index

    with pytest.raises(TypeError, match="integer tensor, got torch.float32"):
        index.upload_by_value(torch.ones(3), "cuda")
    has = torch._C._dispatch_has_kernel_for_dispatch_key("graphsmile::upload_by_value", "CompositeExplicitAutograd")
    assert has == ops._ext.has_kernel("CUDA"), "upload_by_value is built with the CUDA kernels, and only with them"
    if not has:
        with pytest.raises(RuntimeError, match="needs graphsmile._C built with CUDA"):
            index.upload_by_value(torch.arange(3), "cuda")


def test_capture_cuda_graph_checks():
    """Without a CUDA device, or with a negative warm-up count: a clear error, fn never called.
    (On a GPU, tests/test_cuda.py captures the ops and a training step with it.)"""
    from graphsmile.ops import index

    calls = []
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="capture_cuda_graph needs a CUDA device"):
            index.capture_cuda_graph(lambda: calls.append(1))
    with pytest.raises(ValueError, match="warmup must be >= 0, got -1"):
        index.capture_cuda_graph(lambda: calls.append(1), warmup=-1)
    assert calls == []
