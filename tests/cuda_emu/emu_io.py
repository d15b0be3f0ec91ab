"""Build and drive the CPU emulator of the CUDA kernels (tests/cuda_emu/emu_main.cpp).

Used by tests/test_cuda_emulated.py; also runnable by hand::

    python tests/cuda_emu/emu_io.py          # builds (or finds) the binary, prints its path

Environment: CXX (compiler, default g++), GRAPHSMILE_EMU_CACHE (where binaries are cached,
default $TMPDIR/graphsmile-cuda-emu-$UID), GRAPHSMILE_EMU_KERNELS (build against another
kernels/ directory, e.g. a copy with a planted bug, to see that the tests catch it).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# GRAPHSMILE_EMU_KERNELS: another kernels/ directory (e.g. a mutated copy, to check that the
# tests catch a planted bug).
KERNELS = Path(os.environ.get("GRAPHSMILE_EMU_KERNELS", ROOT / "kernels")).resolve()
HEADERS = [HERE / "cuda_emu.h"] + sorted(KERNELS.glob("*.cuh")) + sorted(KERNELS.glob("*.h"))

BASE_FLAGS = ["-std=c++20", "-pthread", "-fno-strict-aliasing", "-ffp-contract=off", "-Wall", "-Wextra",
              "-Wno-unknown-pragmas", f"-I{KERNELS}", f"-I{HERE}"]
# AddressSanitizer bounds-checks the kernels' global-memory accesses (every device buffer is its
# own heap allocation); UBSan catches misaligned vector loads and integer overflow in the index
# math. -O0: these instrumented builds compile twice as fast as -O1 and the tiny cases still run fast.
SAN_FLAGS = ["-O0", "-g1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
PLAIN_FLAGS = ["-O1"]

_TYPES = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.int64: "i64"}
_DTYPES = {v: k for k, v in _TYPES.items()}


class BuildError(RuntimeError):
    pass


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def _key(cxx: str, flags: list[str], source: Path) -> str:
    h = hashlib.sha256()
    h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.encode())
    h.update(" ".join(flags).encode())
    for p in [source] + HEADERS:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def build(source: str = "emu_main.cpp", sanitize: bool = True) -> tuple[Path, bool]:
    """Compiles tests/cuda_emu/SOURCE (cached in the temp dir under a hash of the sources and flags).
    Returns (binary, sanitized): falls back to a plain build where the sanitizer runtimes are
    missing. Raises BuildError if the sources do not compile."""
    cxx = compiler()
    if cxx is None:
        raise FileNotFoundError("no C++ compiler (g++ or $CXX)")
    cache = Path(os.environ.get("GRAPHSMILE_EMU_CACHE", Path(tempfile.gettempdir()) / f"graphsmile-cuda-emu-{os.getuid()}"))
    errors = []
    for san in ([True, False] if sanitize else [False]):
        flags = BASE_FLAGS + (SAN_FLAGS if san else PLAIN_FLAGS)
        src = HERE / source
        out = cache / _key(cxx, flags, src) / src.stem
        if out.exists():
            return out, san
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{src.stem}.{os.getpid()}.tmp")
        r = subprocess.run([cxx, *flags, str(src), "-o", str(tmp)], capture_output=True, text=True)
        if r.returncode == 0:
            os.replace(tmp, out)  # atomic: concurrent sessions never see a half-written binary
            return out, san
        errors.append(f"{cxx} {' '.join(flags)}:\n{r.stderr[-4000:]}")
        if san and "-fsanitize" not in r.stderr and "asan" not in r.stderr and "ubsan" not in r.stderr:
            break  # a real compile error, not missing sanitizer runtimes
    raise BuildError("building the CUDA emulator failed:\n" + "\n".join(errors))


def write_jobs(path: Path, jobs) -> None:
    """jobs: iterable of (name, op, dtype, ints: dict, arrays: dict of tensors)."""
    with open(path, "wb") as f:
        for name, op, dtype, ints, arrays in jobs:
            f.write(f"job {name} {op} {_TYPES[dtype]}\n".encode())
            for k, v in ints.items():
                f.write(f"int {k} {int(v)}\n".encode())
            for k, t in arrays.items():
                t = t.detach().to("cpu").contiguous().reshape(-1)
                raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
                f.write(f"arr {k} {_TYPES[t.dtype]} {t.numel()}\n".encode())
                f.write(raw.numpy().tobytes())
                f.write(b"\n")
            f.write(b"end\n")


def read_outputs(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{job name: {"POLICY.KEY": 1-D tensor}}."""
    data = Path(path).read_bytes()
    out: dict[str, dict[str, torch.Tensor]] = {}
    pos, cur = 0, None
    while pos < len(data):
        nl = data.index(b"\n", pos)
        line = data[pos:nl].decode()
        pos = nl + 1
        if not line:
            continue
        parts = line.split()
        if parts[0] == "job":
            cur = out.setdefault(parts[1], {})
        elif parts[0] == "arr":
            key, typ, count = parts[1], parts[2], int(parts[3])
            dtype = _DTYPES[typ]
            nbytes = count * torch.empty((), dtype=dtype).element_size()
            raw = bytearray(data[pos:pos + nbytes])
            pos += nbytes
            if dtype == torch.bfloat16:
                t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16) if count else torch.empty(0, dtype=dtype)
            else:
                t = torch.frombuffer(raw, dtype=dtype) if count else torch.empty(0, dtype=dtype)
            cur[key] = t.clone()
        elif parts[0] == "end":
            cur = None
        else:
            raise ValueError(f"bad emulator output line {line!r}")
    return out


def run(binary: Path, jobs, policies=(0, 1), workdir: Path | None = None, timeout: float = 600):
    """Runs the jobs under each scheduling policy. Returns (outputs, stderr)."""
    tmpdir = tempfile.TemporaryDirectory() if workdir is None else None
    wd = Path(tmpdir.name if tmpdir else workdir)
    try:
        inp, outp = wd / "jobs.in", wd / "jobs.out"
        write_jobs(inp, jobs)
        env = dict(os.environ)
        # LeakSanitizer needs ptrace (refused in many containers) and there is nothing to leak-check.
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        r = subprocess.run([str(binary), str(inp), str(outp), ",".join(map(str, policies))], capture_output=True,
                           text=True, env=env, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"CUDA emulator failed (exit {r.returncode}):\n{r.stderr[-6000:]}")
        return read_outputs(outp), r.stderr
    finally:
        if tmpdir:
            tmpdir.cleanup()


if __name__ == "__main__":
    b, san = build()
    print(b, "(sanitized)" if san else "(no sanitizers)")
    sys.exit(0)
