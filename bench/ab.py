"""Side-by-side tables of one GPU session's records, by kernel option: the A/B decisions.

    python bench/ab.py                          # the newest GPU commit's records in bench/results/
    python bench/ab.py --commit aa7c69d         # the records of one commit (a prefix is enough)
    python bench/ab.py --results-dir DIR --device-name H200

``scripts/gpu_session.sh`` runs the same benchmarks several times, each time with other opt-in
options of the CUDA backend set in the environment (``GRAPHSMILE_CUDA_FFMA_DTILES``,
``..._ROWS_FSPLIT``, ``..._TENSOR_CORES``, ``..._TC_DTILES``, ``..._SHIFT_NLL``,
``..._FAST_MATH``) or with ``--compile``. Every record carries the options it ran with
(bench/common.py ``env_info``; ``compile_backend`` in bench/model.py). This script puts the
variants of each measured case side by side, with each variant's time relative to the defaults',
and ends with one line per (benchmark, variant): in how many cases it was faster than the
defaults in the forward and in the backward (geometric mean and worst ratio). That line is the
rule of ``bench/GPU_NOTES.md`` "What to decide from the next GPU run": a setting becomes the
default only if it is faster in the forward and the backward.

Ratios are ``default time / variant time`` (> 1: the variant is faster). For ``bench/ops.py``
records the kernels' own device time (``kernel_s``, from ``--kernel-times``) is compared where
both have it, else the CUDA-event time; the column says which. Nothing here times anything.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import fmt_s  # noqa: E402

#: the options a record may carry, and their values when not set (the backend's defaults)
OPTION_DEFAULTS: "OrderedDict[str, Any]" = OrderedDict([
    ("compile_backend", None),
    *common.CUDA_OPTION_DEFAULTS.items(),
    ("path", "device"),   # bench/epoch.py's data path (loader, device, compiled)
    ("tf32", False),      # bench/model.py --tf32: every provider's fp32 products in TF32
])
#: the options that act on a provider other than the CUDA backend (the cuda_* ones do not)
OTHER_OPTIONS = ("compile_backend", "path", "tf32")
FILES = ("ops", "model", "epoch", "graphed")


def variant_of(rec: Dict[str, Any]) -> Tuple[Tuple[str, Any], ...]:
    """The options of ``rec`` that differ from the defaults, as sorted (name, value) pairs;
    ``()`` for a run with the defaults. Only options that act on the record's provider count;
    bench/epoch.py's records name none: they run the model's default backend, on a GPU (fp32)
    the CUDA one."""
    keys = tuple(OPTION_DEFAULTS) if rec.get("provider", "cuda") == "cuda" else OTHER_OPTIONS
    return tuple((k, rec[k]) for k in keys if common.differs_from_default(rec.get(k), OPTION_DEFAULTS[k]))


def variant_label(variant: Tuple[Tuple[str, Any], ...]) -> str:
    if not variant:
        return "defaults"
    return ", ".join(f"{k.replace('cuda_', '')}={v}" for k, v in variant)


def load(results_dir: Path, device: str, device_name: Optional[str], commit: Optional[str]) -> Tuple[Dict[str, List[Dict[str, Any]]], str]:
    """The records of ``FILES`` in ``results_dir`` on ``device`` (and whose device name contains
    ``device_name``), of the git commit starting with ``commit`` (default: the commit of the
    newest such record). Returns ({file: records}, the commit)."""
    recs: Dict[str, List[Dict[str, Any]]] = {}
    for name in FILES:
        path = results_dir / f"{name}.jsonl"
        rows = []
        if path.exists():
            for i, line in enumerate(path.read_text().splitlines()):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{i + 1}: not a JSON line ({exc})") from None
                if r.get("device") == device and (device_name is None or device_name in str(r.get("device_name"))):
                    rows.append(r)
        recs[name] = rows
    everything = [r for rows in recs.values() for r in rows]
    if not everything:
        raise ValueError(f"no records on device {device!r}" + (f" named like {device_name!r}" if device_name else "")
                         + f" in {results_dir}/{{{','.join(FILES)}}}.jsonl")
    if commit is None:
        commit = str(max(everything, key=lambda r: str(r.get("date")))["git_commit"])
    chosen = {name: [r for r in rows if str(r.get("git_commit", "")).startswith(commit)] for name, rows in recs.items()}
    if not any(chosen.values()):
        known = sorted({str(r.get("git_commit"))[:10] for r in everything})
        raise ValueError(f"no records of commit {commit!r}; the records here are of {known}")
    full = next(str(r["git_commit"]) for rows in chosen.values() for r in rows)
    return chosen, full


def _ratio(default: Optional[float], variant: Optional[float]) -> Optional[float]:
    if default is None or variant is None or variant <= 0:
        return None
    return default / variant


def _fmt_ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _newest_per_variant(rows: Iterable[Dict[str, Any]]) -> "OrderedDict[tuple, Dict[str, Any]]":
    by: "OrderedDict[tuple, Dict[str, Any]]" = OrderedDict()
    for r in sorted(rows, key=lambda r: str(r.get("date"))):
        if r.get("status", "ok") == "ok":  # bench/epoch.py writes no status: its records are all measurements
            by[variant_of(r)] = r
    return OrderedDict(sorted(by.items(), key=lambda kv: (kv[0] != (), variant_label(kv[0]))))


def _ops_times(r: Dict[str, Any], use_kernels: bool) -> Tuple[Optional[float], Optional[float]]:
    if use_kernels:
        k = r.get("kernel_s") or {}
        return k.get("fwd"), k.get("bwd")
    return (r.get("fwd_s") or {}).get("median"), (r.get("bwd_s") or {}).get("median")


def _ops_parts(rows: List[Dict[str, Any]]):
    """bench/ops.py: forward and backward, by the kernels' own time when every ok record has it."""
    ok = [r for r in rows if r.get("status") == "ok"]
    use_k = bool(ok) and all(isinstance((r.get("kernel_s") or {}).get("fwd"), float) for r in ok)
    return (lambda r: _ops_times(r, use_k)), "fwd, bwd (" + ("kernels alone" if use_k else "CUDA events") + ")", ("fwd", "bwd")


def _median(r: Dict[str, Any], key: str) -> Optional[float]:
    return (r.get(key) or {}).get("median")


def _model_parts(rows: List[Dict[str, Any]]):
    """bench/model.py: the back-to-back step and the profiled step's kernels alone when every ok
    record has a profile (runs from 2026-11-28 on); otherwise the phase-timed and the
    back-to-back step."""
    ok = [r for r in rows if r.get("status") == "ok"]
    use_k = bool(ok) and all(isinstance((r.get("kernels") or {}).get("kernel_time_s"), float) for r in ok)
    if use_k:
        return ((lambda r: (_median(r, "pipelined_s"), (r.get("kernels") or {}).get("kernel_time_s"))),
                "step back-to-back, kernels alone (profiled step)", ("back-to-back", "kernels"))
    return (lambda r: (_median(r, "time_s"), _median(r, "pipelined_s"))), "step phase-timed, back-to-back", ("step", "back-to-back")


#: workload settings beside the case name: records that differ in one are never compared
SETTINGS = ("layers", "shift_win", "shift_loss", "win_p", "win_f", "B", "hidden_dim")

#: per results file: the benchmark's name, a record's case within it, and (from the case's
#: records) the function giving a record's two compared times, what they are, and their two
#: column names
GROUPINGS = (
    ("ops", lambda r: f"ops {r.get('op')}", lambda r: f"{r.get('provider')} {r.get('case')} D={r.get('D')} {r.get('dtype')}",
     _ops_parts),
    ("model", lambda r: "model train_step", lambda r: f"{r.get('provider')} {r.get('case')} {r.get('dtype')}",
     _model_parts),
    ("epoch", lambda r: "epoch", lambda r: f"{r.get('phase')}",
     lambda rows: ((lambda r: (_median(r, "gpu_time_s"), r.get("kernel_time_s"))), "GPU time, kernels alone", ("GPU time", "kernels"))),
)


def compare(recs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """The comparison tables: {"groups": [...], "summary": [...]}. A group is one measured case
    (benchmark, op, provider, case, D, dtype) with at least two variants; each of its rows a
    variant with its times and its ratios to the defaults' run (``None`` where it has none)."""
    groups: List[Dict[str, Any]] = []
    # (bench, variant label, the two times' names) -> list of (first ratio, second ratio) over
    # the groups (a case whose records lack a time the others have compares other times: its
    # ratios are tallied apart)
    tally: "OrderedDict[Tuple[str, str, Tuple[str, str]], List[Tuple[Optional[float], Optional[float]]]]" = OrderedDict()

    def add(bench: str, key: str, rows: List[Dict[str, Any]], times, what: str, parts: Tuple[str, str]):
        by = _newest_per_variant(rows)
        if len(by) < 2:
            return
        base = by.get(())
        out_rows = []
        for variant, r in by.items():
            t = times(r)
            b = times(base) if base is not None else (None,) * len(t)
            ratios = tuple(_ratio(x, y) for x, y in zip(b, t))
            out_rows.append({"variant": variant_label(variant), "times": t, "ratios": ratios, "run_id": r.get("run_id")})
            if variant and base is not None:
                tally.setdefault((bench, variant_label(variant), parts), []).append(ratios)
        groups.append({"bench": bench, "key": key, "what": what, "parts": parts, "rows": out_rows, "has_defaults": base is not None})

    for name, bench_of, key_of, times_of in GROUPINGS:
        grouped: "OrderedDict[tuple, List[Dict[str, Any]]]" = OrderedDict()
        for r in recs.get(name, []):
            # never compare across cards, --quick sizes or other workload settings
            apart = (("device", r.get("device_name")), ("quick", bool(r.get("quick"))),
                     *((f, r.get(f)) for f in SETTINGS if r.get(f) is not None))
            grouped.setdefault((bench_of(r), key_of(r), apart), []).append(r)
        shared = Counter((bench, key) for bench, key, _ in grouped)
        for (bench, key, apart), rows in grouped.items():
            if shared[(bench, key)] > 1:   # name what sets this group apart from its namesakes
                others = [a for b, k, a in grouped if (b, k) == (bench, key) and a != apart]
                differs = [f"{f}={v}" for f, v in apart if any(dict(o).get(f) != v for o in others)]
                key = f"{key} [{', '.join(differs)}]"
            add(bench, key, rows, *times_of(rows))

    summary = []
    for (bench, label, parts), pairs in tally.items():
        line = {"bench": bench, "variant": label, "parts": parts, "cases": len(pairs)}
        for i, part in enumerate(("first", "second")):
            xs = [p[i] for p in pairs if p[i] is not None]
            line[part] = {"n": len(xs), "faster": sum(x > 1 for x in xs),
                          "geomean": math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None,
                          "worst": min(xs) if xs else None}
        f, s = line["first"], line["second"]
        line["faster_everywhere"] = bool(f["n"]) and f["faster"] == f["n"] and (s["n"] == 0 or s["faster"] == s["n"])
        summary.append(line)
    graphed = [r for r in recs.get("graphed", []) if r.get("status") == "ok"]
    return {"groups": groups, "summary": summary, "graphed": graphed}


def print_report(result: Dict[str, Any], commit: str, device_names: List[str]) -> None:
    print(f"A/B of the records of commit {commit[:10]} on {', '.join(device_names) or '?'}")
    print("(ratio = defaults' time / variant's time: > 1 means the variant is faster)")
    for g in result["groups"]:
        a, b = g["parts"]
        print(f"\n{g['bench']} | {g['key']} | {g['what']}" + ("" if g["has_defaults"] else " | no run with the defaults"))
        print(f"  {'variant':44} {a:>12} {b:>12} {'vs defaults':>22}")
        for row in g["rows"]:
            t0, t1 = row["times"]
            r0, r1 = row["ratios"]
            print(f"  {row['variant'][:44]:44} {fmt_s(t0):>12} {fmt_s(t1):>12} {_fmt_ratio(r0):>10} {_fmt_ratio(r1):>11}")
    if result["graphed"]:
        print("\nCUDA graphs (bench/graphed.py): eager step vs the same step replayed from a graph")
        for r in result["graphed"]:
            print(f"  {r.get('provider', '?'):8} {r.get('case', '?'):14} eager {fmt_s(r.get('eager_s')):>10}  graphed "
                  f"{fmt_s(r.get('graphed_s')):>10}  eager / graphed {r.get('ratio', float('nan')):.2f}x")
    print("\nper variant, against the defaults (n: cases with both runs; faster: in how many; geomean, worst ratio):")
    if not result["summary"]:
        print("  (no variant was run beside the defaults)")
    for s in result["summary"]:
        a, b = s["parts"]
        cells = []
        for part, name in (("first", a), ("second", b)):
            p = s[part]
            if p["n"]:
                cells.append(f"{name} faster in {p['faster']}/{p['n']} (geomean {_fmt_ratio(p['geomean'])}, worst {_fmt_ratio(p['worst'])})")
        verdict = "FASTER EVERYWHERE" if s["faster_everywhere"] else "not faster everywhere"
        print(f"  {s['bench']:18} {s['variant'][:40]:40} {verdict}: " + "; ".join(cells))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results-dir", default=str(common.RESULTS), help="folder of the *.jsonl files (default bench/results)")
    ap.add_argument("--commit", default=None, help="git commit (prefix) of the records (default: that of the newest record)")
    ap.add_argument("--device", default="cuda", help="the records' device (default cuda)")
    ap.add_argument("--device-name", default=None, help="only records whose device name contains this (e.g. H200)")
    ap.add_argument("--json", action="store_true", help="print the comparison as JSON instead of tables")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        recs, commit = load(Path(args.results_dir), args.device, args.device_name, args.commit)
    except ValueError as exc:
        print(f"ab.py: {exc}", file=sys.stderr)
        return 2
    result = compare(recs)
    if args.json:
        print(json.dumps({"commit": commit, **result}, indent=1, default=str))
        return 0
    names = sorted({str(r.get("device_name")) for rows in recs.values() for r in rows})
    print_report(result, commit, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
