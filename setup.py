"""Builds graphsmile._C: the C++ CPU kernels always, the CUDA kernels when torch has CUDA and
nvcc is found.

Environment knobs:
  USE_CUDA=0                skip the CUDA sources even where they could be built
  GRAPHSMILE_FORCE_CUDA=1   build the CUDA sources on a machine without a GPU (CI, containers)
  TORCH_CUDA_ARCH_LIST      target architectures (default on a GPU-less forced build: "8.0;9.0+PTX":
                            sm_80 and sm_90 code, and PTX that newer GPUs compile at load)
  DEBUG=1                   -O0 -g
  MAX_JOBS                  parallel compile jobs (ninja)

The module uses only CPython's limited API (it has no Python functions: importing it runs the
TORCH_LIBRARY registrations), so it is built as ``graphsmile/_C.abi3.so`` and one build loads
on every CPython >= 3.10 (3.9 with torch < 2.6) with the same torch -- e.g. a build made with Python 3.11 against
torch 2.11 runs on a GPU machine's Python 3.12 with torch 2.11 (scripts/build_prebuilt.sh).
"""
import glob
import os
import sys

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
# CPython's stable ABI (see the docstring). torch >= 2.6 defines Py_LIMITED_API itself for a
# py_limited_api extension; older torch needs the macro from us.
_TORCH_MAJOR_MINOR = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
DEFINE_MACROS = [] if _TORCH_MAJOR_MINOR >= (2, 6) else [("Py_LIMITED_API", "0x03090000")]
# csrc/graphsmile.cpp defines the Python module's init only here (not in the CMake library)
DEFINE_MACROS.append(("GRAPHSMILE_PYTHON_MODULE", None))
# The wheel tag of that ABI: torch >= 2.6 targets CPython 3.10's limited API.
ABI_TAG = "cp310" if _TORCH_MAJOR_MINOR >= (2, 6) else "cp39"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda() -> tuple[bool, str]:
    if os.environ.get("USE_CUDA", "1") == "0":
        return False, "USE_CUDA=0"
    if torch.version.cuda is None:
        return False, "the installed torch has no CUDA"
    if cpp_extension.CUDA_HOME is None:
        return False, "nvcc / CUDA_HOME not found"
    if torch.cuda.is_available() or _flag("GRAPHSMILE_FORCE_CUDA"):
        return True, ""
    return False, "no GPU visible (set GRAPHSMILE_FORCE_CUDA=1 to build the CUDA kernels anyway)"


def extensions():
    debug = _flag("DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # No -std flag: torch.utils.cpp_extension picks the standard the installed torch needs
    # (C++17 for torch <= 2.13, C++20 for 2.14+).
    cxx = list(opt)
    if sys.platform != "win32":
        # lets GCC if-convert floating-point selects, so the shift-loss row loop vectorises
        # (csrc/cpu/shift_pair_cpu.cpp); we never unmask FP exceptions
        cxx += ["-fno-trapping-math"]
    ldflags = []
    if torch.backends.openmp.is_available() and sys.platform != "darwin":
        # at::parallel_for expands to an OpenMP region inside our translation units.
        cxx += ["-fopenmp"]
        ldflags += ["-fopenmp"]
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "kernels"), os.path.join(ROOT, "include")]
    use_cuda, why = _want_cuda()
    if use_cuda:
        cu = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        nvcc = opt + ["--expt-relaxed-constexpr", "-lineinfo"]
        # torch's CUDA headers include cuBLAS/cuSPARSE headers; with pip-installed CUDA torch
        # they live in the nvidia-* wheels.
        try:
            import nvidia

            for base in nvidia.__path__:
                for inc in glob.glob(os.path.join(base, "*", "include")):
                    include_dirs.append(inc)
        except ImportError:
            pass
        print(f"graphsmile: building CPU + CUDA kernels for TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(detected)')}")
        return [
            cpp_extension.CUDAExtension(
                "graphsmile._C",
                sources + cu,
                include_dirs=include_dirs,
                extra_compile_args={"cxx": cxx + ["-DGRAPHSMILE_WITH_CUDA"], "nvcc": nvcc},
                extra_link_args=ldflags,
                define_macros=DEFINE_MACROS,
                py_limited_api=True,
            )
        ]
    print(f"graphsmile: building CPU kernels only ({why})")
    return [
        cpp_extension.CppExtension(
            "graphsmile._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx}, extra_link_args=ldflags,
            define_macros=DEFINE_MACROS, py_limited_api=True,
        )
    ]


setup(
    packages=find_packages(include=["graphsmile", "graphsmile.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)},
    options={"bdist_wheel": {"py_limited_api": ABI_TAG}},
)
