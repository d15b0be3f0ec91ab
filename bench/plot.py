"""Figures and markdown tables from the stored benchmark results.

    python bench/plot.py                 # bench/results/{ops,model}.jsonl -> bench/results/*.png + README.md
    python bench/plot.py --quick         # bench/results/quick/
    python bench/plot.py --results-dir DIR --device-name H100 --run-id 20260101-120000-abcdef

From each results file it keeps one configuration (by default the one of the newest record:
same device, dtype and problem sizes) and, for every (section, provider, case), the newest
record of that configuration, so a partial re-run replaces just what it measured. Draws time and
peak memory against the dialogue length (log-log, median with p20-p80 bars; the single-dialogue
case as a star) per section, and writes ``README.md`` in the results folder with the tables
(median and min time, peak memory, ratios) and, on a CPU, the SPEC 9 targets.
"""
from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import fmt_bytes, fmt_s  # noqa: E402

OURS_ORDER = ("cuda", "cpu", "triton", "reference")
PROVIDER_ORDER = OURS_ORDER + ("unfused", "dense", "original", "scatter", "floor")
STYLE = {
    "cpu": ("tab:blue", "o"), "cuda": ("tab:blue", "o"), "triton": ("tab:cyan", "D"), "reference": ("tab:purple", "v"),
    "dense": ("tab:red", "s"), "original": ("tab:red", "s"), "scatter": ("tab:orange", "^"), "floor": ("tab:gray", "x"),
    "unfused": ("tab:olive", "P"),
}
SECTION_TITLES = {
    "stack": "graph module stack, forward + backward",
    "shift": "shift-pair logits, forward + backward",
    "shift_loss": "shift head + loss (mean NLL, confusion counts), forward + backward",
    "propagate": "one propagation layer (window_spmm), forward + backward (grads x, w, s)",
    "train_step": "GraphSmile training step (forward, backward, AdamW)",
}


def _title(section: str, recs: List[Dict[str, Any]]) -> str:
    """Section title; ``propagate`` records written before grads to w and s were timed say so."""
    if section == "propagate" and recs and not any((r.get("bandwidth") or {}).get("bwd_bytes") for r in recs):
        return "window_spmm alone, forward + backward (grad x)"
    return SECTION_TITLES.get(section, section)


# SPEC 9 (2-core CPU, fp32, B=16, D=512, K=7, win 17/17): minimum speed-up of ours over the
# original at each L, max ours/floor, min ratio to scatter at L=250, L=1000 absolute limits.
SPEC9_MIN_VS_ORIGINAL = {50: 3.5, 110: 9.0, 250: 30.0}
SPEC9_MAX_VS_FLOOR = 1.2
SPEC9_MIN_VS_SCATTER = {250: 12.0}
SPEC9_L1000 = (7.5, 2.5e9)


def _config_key(r: Dict[str, Any]) -> Tuple:
    shift_win = r.get("shift_win")
    if shift_win is None and r.get("bench") == "model":
        shift_win = 19  # model records before 2026-11-27 carry no shift_win: all used the preset's 19
    # the CUDA kernel variants of the A/B stages (scripts/gpu_session.sh ab_ffma, ab_tc, ab_nll) are other
    # configurations: their records must never stand in for the defaults' in a table
    variant = tuple(r.get(k) for k in ("cuda_tensor_cores", "cuda_tc_dtiles", "cuda_shift_nll", "cuda_fast_math",
                                       "cuda_ffma_dtiles", "cuda_rows_fsplit"))
    return (r.get("bench"), r.get("device_name"), r.get("dtype"), r.get("D"), r.get("layers"), r.get("win_p"),
            r.get("win_f"), shift_win, r.get("preset") or r.get("bench_preset"), r.get("threads"), variant)


def select(records: List[Dict[str, Any]], run_id: Optional[str], device_name: Optional[str]) -> List[Dict[str, Any]]:
    """One configuration (newest, or that of ``run_id``), newest record per (op, provider, case)."""
    recs = [r for r in records if not device_name or device_name.lower() in str(r.get("device_name", "")).lower()]
    if not recs:
        return []
    if run_id:
        anchor = [r for r in recs if r.get("run_id") == run_id]
        if not anchor:
            return []
        recs = anchor
    return _newest_of_config(recs, _config_key(_newest(recs)))


def _stamp(r: Dict[str, Any]) -> Tuple[str, str]:
    return (r.get("date", ""), r.get("run_id", ""))


def _newest(recs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The newest record; of equal stamps (one run shares one date) the last in file order."""
    best = recs[0]
    for r in recs:
        if _stamp(r) >= _stamp(best):
            best = r
    return best


def _newest_of_config(recs: List[Dict[str, Any]], key: Tuple) -> List[Dict[str, Any]]:
    newest: Dict[Tuple, Dict[str, Any]] = {}
    for r in recs:
        if _config_key(r) != key:
            continue
        k = (r.get("op"), r.get("provider"), r.get("case"))
        if k not in newest or _stamp(r) >= _stamp(newest[k]):
            newest[k] = r
    return list(newest.values())


def select_configs(records: List[Dict[str, Any]], run_id: Optional[str], device_name: Optional[str]) -> List[List[Dict[str, Any]]]:
    """Every configuration of one run (``run_id``, or the newest record's run) -- a preset run has
    several (D, dtype, layers, shift_win) -- each as in :func:`select`: the newest record per
    (op, provider, case) of that configuration, from any run."""
    recs = [r for r in records if not device_name or device_name.lower() in str(r.get("device_name", "")).lower()]
    if not recs:
        return []
    anchor = run_id or _newest(recs).get("run_id")
    keys = list(OrderedDict.fromkeys(_config_key(r) for r in recs if r.get("run_id") == anchor))
    if run_id and not keys:
        return []
    if not keys:
        keys = [_config_key(_newest(recs))]
    return [_newest_of_config(recs, k) for k in keys]


def _config_slug(r: Dict[str, Any]) -> str:
    parts = [f"D{r['D']}" if r.get("D") is not None else "", str(r.get("dtype") or ""),
             f"K{r['layers']}" if r.get("layers") is not None else "", f"sw{r['shift_win']}" if r.get("shift_win") is not None else ""]
    return "_" + "-".join(p for p in parts if p)


def _case_sort(case: str) -> Tuple[int, int]:
    """Batches of equal dialogues by L, then drawn-length batches (``16xIEMOCAP``) first of all,
    single dialogues last."""
    b, _, l = case.partition("x")
    if not (b.isdigit() and l.isdigit()):
        return (-1, 0)
    return (int(b) == 1 and 1 or 0, int(l))


def _uniform(r: Dict[str, Any]) -> bool:
    """A batch of equal dialogues (``BxL``), not a drawn-length batch such as ``16xIEMOCAP``."""
    b, _, l = str(r.get("case", "")).partition("x")
    return b.isdigit() and l.isdigit()


def _providers(recs) -> List[str]:
    present = {r["provider"] for r in recs}
    return [p for p in PROVIDER_ORDER if p in present] + sorted(present - set(PROVIDER_ORDER))


def _ours(recs) -> Optional[str]:
    for p in OURS_ORDER:
        if any(r["provider"] == p and r["status"] == "ok" for r in recs):
            return p
    return None


# --- figures ------------------------------------------------------------------------------


def draw(section: str, recs: List[Dict[str, Any]], path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.6))
    notes = []
    batch = {r["B"] for r in recs if r["B"] != 1} or {1}
    for p in _providers(recs):
        color, marker = STYLE.get(p, ("black", "."))
        rows = sorted((r for r in recs if r["provider"] == p), key=lambda r: _case_sort(r["case"]))
        multi = [r for r in rows if r["status"] == "ok" and _uniform(r) and (r["B"] != 1 or batch == {1})]
        single = [r for r in rows if r["status"] == "ok" and r["B"] == 1 and batch != {1}]
        for r in rows:  # drawn-length batches (16xIEMOCAP) at their mean length, as a plus
            if r["status"] == "ok" and not _uniform(r):
                ax_t.plot([r["L"]], [r["time_s"]["median"]], color=color, marker="P", markersize=10, linestyle="none")
                if r.get("peak_mem_bytes"):
                    ax_m.plot([r["L"]], [r["peak_mem_bytes"] / 1e6], color=color, marker="P", markersize=10, linestyle="none")
        if multi:
            x = [r["L"] for r in multi]
            med = [r["time_s"]["median"] for r in multi]
            lo = [max(0.0, r["time_s"]["median"] - r["time_s"]["p20"]) for r in multi]
            hi = [max(0.0, r["time_s"]["p80"] - r["time_s"]["median"]) for r in multi]
            ax_t.errorbar(x, med, yerr=[lo, hi], color=color, marker=marker, capsize=3, label=p)
            mem = [(r["L"], r.get("peak_mem_bytes")) for r in multi if r.get("peak_mem_bytes")]
            if mem:
                ax_m.plot([m[0] for m in mem], [m[1] / 1e6 for m in mem], color=color, marker=marker, label=p)
        for r in single:
            ax_t.plot([r["L"]], [r["time_s"]["median"]], color=color, marker="*", markersize=12, linestyle="none")
            if r.get("peak_mem_bytes"):
                ax_m.plot([r["L"]], [r["peak_mem_bytes"] / 1e6], color=color, marker="*", markersize=12, linestyle="none")
        bad = [r for r in rows if r["status"] != "ok"]
        if bad:
            notes.append(f"{p}: " + ", ".join(f"{r['case']} {r['status']}" for r in bad))
    for ax, ylabel in ((ax_t, "time per run (s), median, p20-p80"), (ax_m, "peak memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"dialogue length L ({'x'.join(str(b) for b in sorted(batch))} dialogues; star: one dialogue; "
                      "plus: IEMOCAP-drawn lengths at their mean)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    r0 = recs[0]
    fig.suptitle(f"{_title(section, recs)} -- {device}, {r0.get('dtype')}, {r0.get('threads')} threads, "
                 f"torch {r0.get('torch')}, git {str(r0.get('git_commit'))[:8]}", fontsize=10)
    if notes:
        fig.text(0.01, 0.01, "not measured: " + "; ".join(notes), fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.05 if notes else 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- tables -------------------------------------------------------------------------------


def _cell_time(r: Optional[Dict[str, Any]]) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return r["status"]
    return f"{fmt_s(r['time_s']['median'])} ({fmt_s(r['time_s']['min'])})"


def _cell_mem(r: Optional[Dict[str, Any]]) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return r["status"] if r["status"] != "skipped" else "skipped"
    return fmt_bytes(r.get("peak_mem_bytes"))


def table(section: str, recs: List[Dict[str, Any]]) -> List[str]:
    provs = _providers(recs)
    ours = _ours(recs)
    by = {(r["case"], r["provider"]): r for r in recs}
    cases = sorted({r["case"] for r in recs}, key=_case_sort)
    lines = [f"### {_title(section, recs)}", ""]
    ratio_cols = []
    if ours:
        if "floor" in provs:
            ratio_cols.append(("floor", f"{ours} / floor", lambda o, b: o / b))
        for p in provs:
            if p not in (ours, "floor"):
                ratio_cols.append((p, f"{p} / {ours}", lambda o, b: b / o))
    head = ["case"] + provs + [c[1] for c in ratio_cols]
    lines.append("Time per run, median (min):")
    lines.append("")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for c in cases:
        row = [c] + [_cell_time(by.get((c, p))) for p in provs]
        for p, _, f in ratio_cols:
            o, b = by.get((c, ours)), by.get((c, p))
            if o and b and o["status"] == "ok" and b["status"] == "ok":
                row.append(f"{f(o['time_s']['median'], b['time_s']['median']):.2f}x")
            else:
                row.append("")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Peak memory" + (" / achieved bandwidth" if section == "propagate" else "") + ":", ""]
    head = ["case"] + provs + ["utterances/s (" + ours + ")" if ours else "utterances/s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for c in cases:
        row = [c]
        for p in provs:
            r = by.get((c, p))
            cell = _cell_mem(r)
            if r is not None and r.get("bandwidth"):
                bw = r["bandwidth"]
                for ph in ("fwd", "bwd"):
                    if ph + "_GBps" in bw:
                        cell += f"; {ph} {bw[ph + '_GBps']:.3g} GB/s" + (
                            f" = {100 * bw[ph + '_frac_of_peak']:.0f}% of peak" if bw.get(ph + "_frac_of_peak") else "")
            row.append(cell)
        o = by.get((c, ours)) if ours else None
        row.append(f"{o['utt_per_s']:.0f}" if o and o["status"] == "ok" else "")
        lines.append("| " + " | ".join(row) + " |")
    flagged = [r for r in recs if (r.get("check") or {}).get("ok") is False or (r.get("fingerprint_check") or {}).get("ok") is False]
    if flagged:
        lines += ["", "**Correctness flags:** " + "; ".join(
            f"{r['provider']} {r['case']}: " + ("check failed" if (r.get("check") or {}).get("ok") is False else "fingerprint mismatch")
            for r in flagged)]
    return lines + [""]


def spec9_targets(recs: List[Dict[str, Any]]) -> List[str]:
    """The CPU targets of SPEC 9 on the stack section (meaningful for B=16, D=512, K=7, fp32)."""
    ours = _ours(recs)
    if not ours:
        return []
    by = {(r["L"], r["provider"]): r for r in recs if r["B"] != 1 and _uniform(r)}
    Ls = sorted({r["L"] for r in recs if r["B"] != 1 and _uniform(r)})
    if not Ls:
        return []
    out = ["### SPEC 9 targets (CPU)", "", f"ours = `{ours}`; ratios of medians (of minima, as SPEC 9's best-of-3, in brackets).", "",
           "| L | ours / floor <= 1.2 | original / ours | scatter / ours | L=1000: <= 7.5 s, <= 2.5 GB |", "|---|---|---|---|---|"]

    def ok(r):
        return r is not None and r["status"] == "ok"

    def mark(v: bool) -> str:
        return "yes" if v else "**NO**"

    for L in Ls:
        o = by.get((L, ours))
        if not ok(o):
            continue
        f, d, s = by.get((L, "floor")), by.get((L, "dense")), by.get((L, "scatter"))
        cells = [str(L)]
        if ok(f):
            r, rmin = o["time_s"]["median"] / f["time_s"]["median"], o["time_s"]["min"] / f["time_s"]["min"]
            cells.append(f"{r:.2f}x [{rmin:.2f}x] {mark(rmin <= SPEC9_MAX_VS_FLOOR)}")
        else:
            cells.append("")
        if ok(d):
            r, rmin = d["time_s"]["median"] / o["time_s"]["median"], d["time_s"]["min"] / o["time_s"]["min"]
            need = SPEC9_MIN_VS_ORIGINAL.get(L)
            cells.append(f"{r:.1f}x [{rmin:.1f}x]" + (f" (need >= {need:g}x) {mark(rmin >= need)}" if need else ""))
        else:
            cells.append(d["status"] if d is not None else "")
        if ok(s):
            r, rmin = s["time_s"]["median"] / o["time_s"]["median"], s["time_s"]["min"] / o["time_s"]["min"]
            need = SPEC9_MIN_VS_SCATTER.get(L)
            cells.append(f"{r:.1f}x [{rmin:.1f}x]" + (f" (need >= {need:g}x) {mark(rmin >= need)}" if need else ""))
        else:
            cells.append(s["status"] if s is not None else "")
        if L == 1000:
            mem = o.get("peak_mem_bytes")
            cells.append(f"{fmt_s(o['time_s']['min'])}, {fmt_bytes(mem)} "
                         + mark(o["time_s"]["min"] <= SPEC9_L1000[0] and (mem is not None and mem <= SPEC9_L1000[1])))
        else:
            cells.append("")
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def header(recs: List[Dict[str, Any]], what: str) -> List[str]:
    r0 = max(recs, key=lambda r: r.get("date", ""))
    dates = sorted({r.get("date", "")[:10] for r in recs})
    commits = sorted({str(r.get("git_commit"))[:10] + ("+dirty" if r.get("git_dirty") else "") for r in recs})
    dev = r0.get("device_name")
    lines = [f"## {what}", "",
             f"Device: **{dev}** ({r0.get('device')}, {r0.get('threads')} torch threads of {r0.get('cpu_count')} CPUs), "
             f"{r0.get('dtype')}, torch {r0.get('torch')}, git {', '.join(commits)}, {', '.join(dates)}."]
    if r0.get("bench") == "ops":
        lines.append(f"D = {r0.get('D')}, K = {r0.get('layers')} layers, win = ({r0.get('win_p')}, {r0.get('win_f')}), "
                     f"shift_win = {r0.get('shift_win')}; case `BxL` = B dialogues of L utterances.")
    mm = {r.get("mem_method") for r in recs if r.get("mem_method")}
    if mm:
        lines.append("Peak memory: " + "; ".join(sorted(mm)) + ".")
    if r0.get("gpu_peak_bw_gbps"):
        lines.append(f"Device peak bandwidth (data sheet): {r0['gpu_peak_bw_gbps']:.0f} GB/s.")
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="use bench/results/quick/")
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--run-id", default=None, help="the configurations of this run (default: of the newest record's run)")
    ap.add_argument("--device-name", default=None, help="only records whose device name contains this")
    ap.add_argument("--no-png", action="store_true", help="tables only")
    args = ap.parse_args(argv)
    rdir = Path(args.results_dir) if args.results_dir else common.RESULTS / ("quick" if args.quick else "")
    md = ["# graphsmile benchmark results", "",
          "Generated by `python bench/plot.py` from the JSON-lines files in this folder; see bench/README.md for what is "
          "measured. Times: median over repetitions after warm-up (minimum in brackets).", ""]
    drawn = []
    for fname, what in (("ops.jsonl", "Graph ops (bench/ops.py)"), ("model.jsonl", "Training step (bench/model.py)")):
        configs = select_configs(common.read_jsonl(rdir / fname), args.run_id, args.device_name)
        for recs in configs:
            slug = _config_slug(recs[0]) if len(configs) > 1 else ""
            r0 = recs[0]
            md += header(recs, what + (f": D = {r0.get('D')}, {r0.get('dtype')}, K = {r0.get('layers')}, shift_win = {r0.get('shift_win')}"
                                       if slug and r0.get("bench") == "ops" else f": {r0.get('dtype')}" if slug else ""))
            for section in OrderedDict.fromkeys(r["op"] for r in recs):
                srecs = [r for r in recs if r["op"] == section]
                md += table(section, srecs)
                if section == "stack" and srecs[0].get("device") == "cpu":
                    md += spec9_targets(srecs)
                if args.no_png:
                    continue
                png = rdir / f"{fname.split('.')[0]}_{section}{slug}.png"
                try:
                    draw(section, srecs, png, srecs[0].get("device_name", ""))
                    drawn.append(png)
                    md += [f"![{section}]({png.name})", ""]
                except Exception as exc:  # a figure must not cost the table
                    print(f"warning: figure {png.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    if len(md) <= 4:
        print(f"no results in {rdir} (run bench/ops.py or bench/model.py first)", file=sys.stderr)
        return 1
    (rdir / "README.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"\nwrote {rdir / 'README.md'}" + "".join(f", {p.name}" for p in drawn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
