"""A full training epoch of GraphSmile on a synthetic IEMOCAP-6-sized set, per data path.

    python bench/epoch.py                          # CPU: 120 training dialogues, 2 timed epochs
    python bench/epoch.py --device cuda            # GPU: also CUDA-event time, host syncs, kernel time
    python bench/epoch.py --quick                  # 16 training dialogues (one batch), 1 timed epoch (< 1 min on 2 cores)
    python bench/epoch.py --device cuda --epochs 5 --warmup 2 --out /tmp/epoch.jsonl

Data: ``graphsmile.data.synthesize("IEMOCAP")`` -- 120 training / 31 test dialogues with the real
length distribution (8..110 utterances, mean about 49; 5,810 training utterances) and the real
feature widths (text 1024 x 4 sets, visual 342, audio 1582); training uses all 120 (no
validation split). The file is written once into ``--data-dir`` and reused. Model and
optimisation: the IEMOCAP preset of :mod:`graphsmile.config` (hidden 512, 7+7+7 graph layers,
win 17/17, shift_win 19, batch 16, AdamW amsgrad).

Both data paths of :class:`graphsmile.train.Trainer` run side by side, same seed, so they train
on the same batches in the same order:

- ``loader``: a DataLoader collates each batch on the host, copies it to the device, and each
  step reads its loss and predictions back (``data_on_device=False``);
- ``device``: the splits live on the device, batches are gathered there from index tensors
  uploaded once per epoch, and nothing is read back until the epoch ends
  (``data_on_device=True``);
- ``compiled`` (opt-in: ``--paths loader,device,compiled``): the device path with the model under
  ``torch.compile`` (``Trainer(compile=True)``): fewer, fused kernels per step. Its first epochs
  compile (the warm-up epoch holds most of that: about 50 s on 2 CPU cores). Its losses differ
  from the other paths' (about 1e-3 in the quick CPU run): compiled code draws its dropout masks
  from its own random streams, and fuses arithmetic.

Per path and phase (``train``: :meth:`Trainer.train_epoch`; ``eval``: :meth:`Trainer.evaluate`
on the 31 test dialogues), after ``--warmup`` untimed epochs, over ``--epochs`` epochs:
wall time (device synchronised before and after); on CUDA also the CUDA-event time between
the phase's start and end (``gpu_time_s``: the stream's elapsed time, idle gaps included),
then one more epoch with ``torch.cuda.set_sync_debug_mode("warn")`` counting the synchronising
calls (``host_syncs``), and one under ``torch.profiler`` summing the CUDA kernel times
(``kernel_time_s``: the GPU's busy time; ``--no-profile`` skips it), by kind (``kernel_kinds``:
graphsmile's graph ops, GEMM, aten, optimiser, ... as ``bench/common.kernel_kind`` sorts them)
and listing the kernels that took the most of it (``top_kernels``: name, launches, total time),
which says what a step is made of. The training losses of the paths are compared (``same_losses``: bitwise equal; expected on
the CPU for ``device`` against ``loader``).

Results: one JSON line per (path, phase) appended to ``--out`` (default
``bench/results/epoch.jsonl``), with device name, date, torch version and git commit.

Verdicts (issue #8 target 4, printed last and appended to ``epoch_targets.jsonl`` next to the
results): per path, the training epoch's GPU time (the CUDA-event time above) under 0.1 s, on
the full 120-dialogue set; the kernels' busy time and the wall time are shown beside it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import fmt_s  # noqa: E402

import torch  # noqa: E402

PATHS = ("loader", "device", "compiled")
TARGET_EPOCH_S = 0.1   # issue #8 target 4: a full IEMOCAP-6-sized training epoch in < 0.1 s on the GPU
TARGET_DIALOGUES = 120
DEFAULT_PATHS = ("loader", "device")
FULL = {"n_dialogues": (120, 31), "epochs": 2, "warmup": 1}
QUICK = {"n_dialogues": (16, 4), "epochs": 1, "warmup": 1}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs per path (default 2; --quick 1)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed epochs first (default 1)")
    ap.add_argument("--quick", action="store_true", help="16 training / 4 test dialogues (IEMOCAP lengths: one batch each), 1 timed epoch")
    ap.add_argument("--paths", default=",".join(DEFAULT_PATHS),
                    help="comma list of data paths: loader, device, compiled (default loader,device)")
    ap.add_argument("--no-eval", action="store_true", help="time the training epoch only")
    ap.add_argument("--no-profile", action="store_true", help="CUDA: skip the torch.profiler epoch (kernel time)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="where the synthetic file is written and reused "
                                                     "(default: <tmp>/graphsmile-bench)")
    ap.add_argument("--out", default=None, help="JSON-lines file to append to (default bench/results/epoch.jsonl, "
                    "or quick/epoch.jsonl with --quick)")
    args = ap.parse_args(argv)
    if args.out is None:   # quick runs never land in the results the README and ab.py read
        args.out = str(common.RESULTS / ("quick" if args.quick else "") / "epoch.jsonl")
    d = QUICK if args.quick else FULL
    args.epochs = d["epochs"] if args.epochs is None else args.epochs
    args.warmup = d["warmup"] if args.warmup is None else args.warmup
    args.n_dialogues = d["n_dialogues"]
    if args.epochs < 1 or args.warmup < 0:
        ap.error(f"--epochs must be >= 1 and --warmup >= 0, got {args.epochs} and {args.warmup}")
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    # the loader path first: the others' records compare with it as they are written
    args.paths.sort(key=lambda p: p != "loader")
    bad = [p for p in args.paths if p not in PATHS]
    if bad or not args.paths:
        ap.error(f"--paths: unknown {bad}; choose from {list(PATHS)}")
    return args


def load_data(args):
    """The synthetic IEMOCAP file (written on first use) and its splits, all of ``trainVid`` for
    training."""
    from graphsmile.data import load_dataset, synthesize

    folder = Path(args.data_dir) if args.data_dir else Path(tempfile.gettempdir()) / "graphsmile-bench"
    tr, te = args.n_dialogues
    path = folder / f"iemocap_synth_s{args.seed}_{tr}x{te}.pkl"
    if not path.exists():
        t0 = time.time()
        print(f"writing the synthetic IEMOCAP file {path} ...", end="", flush=True)
        synthesize("IEMOCAP", path, seed=args.seed, n_dialogues=(tr, te))
        print(f" {time.time() - t0:.1f} s")
    return load_dataset(path, "IEMOCAP", valid_from="none"), path


class _Timer:
    """Wall time (device synchronised around it) and, on CUDA, the CUDA-event time."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.device = device

    def __enter__(self):
        common.sync(self.device)
        if self.cuda:
            self.ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self.ev[0].record()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.ev[1].record()
        common.sync(self.device)
        self.wall = time.perf_counter() - self.t0
        self.gpu = self.ev[0].elapsed_time(self.ev[1]) / 1e3 if self.cuda else None
        return False


def count_syncs(fn) -> int:
    """Synchronising CUDA calls made by ``fn()`` (``set_sync_debug_mode("warn")`` warnings)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def run_path(path: str, splits, cfg, args) -> Dict[str, Any]:
    from graphsmile.train import Trainer

    dev = args.device
    t0 = time.perf_counter()
    trainer = Trainer(cfg, splits, seed=args.seed, device=torch.device(dev), data_on_device=path != "loader",
                      compile=path == "compiled")
    common.sync(dev)
    setup_s = time.perf_counter() - t0
    res: Dict[str, Any] = {"setup_s": setup_s, "train": {"wall": [], "gpu": [], "loss": []}, "eval": {"wall": [], "gpu": []}}
    epoch = 0

    def train_epoch():
        return trainer.train_epoch(epoch)

    def evaluate():
        return trainer.evaluate(splits.test, epoch)

    for _ in range(args.warmup):
        train_epoch()
        if not args.no_eval:
            evaluate()
        epoch += 1
    for _ in range(args.epochs):
        with _Timer(dev) as t:
            rec = train_epoch()
        res["train"]["wall"].append(t.wall)
        res["train"]["gpu"].append(t.gpu)
        res["train"]["loss"].append(rec["loss"])
        res["batches"] = rec["batches"]
        res["utterances"] = rec["utterances"]
        if not args.no_eval:
            with _Timer(dev) as t:
                evaluate()
            res["eval"]["wall"].append(t.wall)
            res["eval"]["gpu"].append(t.gpu)
        epoch += 1
    if dev.startswith("cuda"):
        res["train"]["syncs"] = count_syncs(train_epoch)
        if not args.no_eval:
            res["eval"]["syncs"] = count_syncs(evaluate)
        epoch += 1
        if not args.no_profile:
            res["train"]["profile"] = common.kernel_profile(train_epoch)
            if not args.no_eval:
                res["eval"]["profile"] = common.kernel_profile(evaluate)
            epoch += 1
        res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    res["data_on_device"] = trainer.data_on_device
    del trainer
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return res


def _records(path: str, r: Dict[str, Any], ref: Optional[Dict[str, Any]], base: Dict[str, Any], args) -> List[Dict[str, Any]]:
    """The records of one path's run ``r`` (``ref``: the loader path's, when it ran before)."""
    out = []
    for phase in ("train",) + (() if args.no_eval else ("eval",)):
        ph = r[phase]
        prof = ph.get("profile") or {}  # CUDA only, unless --no-profile
        rec = {**base, "path": path, "phase": phase, "data_on_device": r["data_on_device"], "setup_s": r["setup_s"],
               "time_s": common.summarize(ph["wall"]),
               "gpu_time_s": common.summarize(ph["gpu"]) if ph["gpu"] and ph["gpu"][0] is not None else None,
               "host_syncs": ph.get("syncs"), "kernel_time_s": prof.get("kernel_time_s"), "kernel_launches": prof.get("launches"),
               "kernel_kinds": prof.get("kinds"), "top_kernels": prof.get("top_kernels"),
               "peak_mem_bytes": r.get("peak_mem_bytes"), "batches": r.get("batches")}
        if phase == "train":
            rec["losses"] = ph["loss"]
            if ref is not None and path != "loader":
                rec["same_losses"] = ph["loss"] == ref["train"]["loss"]
                rec["max_loss_diff"] = max(abs(a - b) for a, b in zip(ph["loss"], ref["train"]["loss"]))
        if ref is not None and path != "loader":
            rec["speedup_vs_loader"] = common.percentile(ref[phase]["wall"], 50) / rec["time_s"]["median"]
        out.append(rec)
    return out


def epoch_targets(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Target 4 per path: the training epoch's GPU time (CUDA-event time of the stream from the
    epoch's start to its end, idle gaps included, median over the timed epochs) under
    ``TARGET_EPOCH_S``. The kernels' busy time and the wall time are shown beside it; the verdict
    is on the GPU time. n/a off a GPU and for a set other than the full 120 dialogues."""
    out = []
    for r in records:
        if r["phase"] != "train":
            continue
        what = f"{r['path']} path, {r['train_dialogues']} dialogues ({r['train_utterances']} utterances), batch {r['batch_size']}"
        line = {"target": "T4 training epoch", "case": what, "threshold": f"< {fmt_s(TARGET_EPOCH_S)} of GPU time per epoch"}
        gpu = (r.get("gpu_time_s") or {}).get("median")
        kern = r.get("kernel_time_s")
        parts = [f"GPU time {fmt_s(gpu)}" if gpu is not None else "GPU time not measured",
                 f"kernels alone {fmt_s(kern)}" if kern is not None else None, f"wall {fmt_s(r['time_s']['median'])}"]
        line["measured"] = ", ".join(p for p in parts if p) + " per epoch"
        line["values"] = {"gpu_time_s": gpu, "kernel_time_s": kern, "wall_s": r["time_s"]["median"]}
        if r.get("device") != "cuda" or gpu is None:
            line["verdict"] = "n/a (not a GPU)"
        elif r["train_dialogues"] != TARGET_DIALOGUES:
            line["verdict"] = f"n/a ({r['train_dialogues']} dialogues, not {TARGET_DIALOGUES})"
        else:
            line["verdict"] = "PASS" if gpu < TARGET_EPOCH_S else "MISS"
        out.append(line)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if not common.start(args):
        return 2
    from graphsmile.config import GraphSmileConfig

    env = common.env_info(args.device, "float32")
    run_id = common.new_run_id()
    splits, data_path = load_data(args)
    cfg = GraphSmileConfig.preset("IEMOCAP")
    print(f"GraphSmile epoch benchmark (IEMOCAP preset, synthetic), run {run_id}: {env['device_name']} ({args.device}, "
          f"{env['threads']} threads), torch {env['torch']}, git {str(env['git_commit'])[:10]}")
    print(f"  {len(splits.train)} training dialogues ({splits.train.num_utterances} utterances), {len(splits.test)} test "
          f"dialogues; batch {cfg.batch_size}; warm-up {args.warmup}, timed {args.epochs} epoch(s); paths {args.paths} "
          f"-> {args.out}")
    results: Dict[str, Dict[str, Any]] = {}
    records: List[Dict[str, Any]] = []
    base = dict(bench="epoch", run_id=run_id, quick=args.quick, preset="IEMOCAP", data=str(data_path),
                train_dialogues=len(splits.train), train_utterances=splits.train.num_utterances,
                test_dialogues=len(splits.test), test_utterances=splits.test.num_utterances,
                batch_size=cfg.batch_size, epochs=args.epochs, warmup=args.warmup, **env)
    for path in args.paths:
        t0 = time.time()
        print(f"  [{path}] ...", end="", flush=True)
        r = results[path] = run_path(path, splits, cfg, args)
        print(f" {time.time() - t0:.1f} s", flush=True)
        # each path's records are written as soon as it is done: a run cut short keeps them
        new = _records(path, r, results.get("loader"), base, args)
        common.append_jsonl(Path(args.out), new)
        records += new

    def cell(v, f=fmt_s):
        return "-" if v is None else f(v)

    print(f"\n{'path':8} {'phase':6} {'wall/epoch':>11} {'(min)':>10} {'gpu (events)':>13} {'kernels':>9} {'syncs':>6} "
          f"{'speed-up':>9}")
    for rec in records:
        gpu = rec["gpu_time_s"]["median"] if rec["gpu_time_s"] else None
        print(f"{rec['path']:8} {rec['phase']:6} {fmt_s(rec['time_s']['median']):>11} {fmt_s(rec['time_s']['min']):>10} {cell(gpu):>13} "
              f"{cell(rec['kernel_time_s']):>9} {cell(rec['host_syncs'], str):>6} "
              f"{cell(rec.get('speedup_vs_loader'), lambda x: f'{x:.2f}x'):>9}")
    for rec in records:
        if "same_losses" in rec:
            print(f"training losses of '{rec['path']}' vs 'loader': " + ("bitwise equal" if rec["same_losses"]
                                                                         else f"max diff {rec['max_loss_diff']:.3g}"))
    print("(wall: median over the timed epochs; speed-up: of the medians)")
    for rec in records:
        if rec.get("top_kernels"):
            total = rec["kernel_time_s"] or 1.0
            print(f"\nkernels of one {rec['phase']} epoch, path {rec['path']}: "
                  + common.kernel_kinds_line({"kernel_time_s": rec["kernel_time_s"], "launches": rec.get("kernel_launches") or 0,
                                              "kinds": rec.get("kernel_kinds") or {}}))
            for name, n, t in rec["top_kernels"]:
                print(f"  {fmt_s(t):>9} {100 * t / total:5.1f}% {n:6d}x  {name[:110]}")
    print(f"\n{len(records)} records appended to {args.out}")
    import ops as opbench  # bench/ops.py: the verdict lines' printing and file, as the other benchmarks

    lines = epoch_targets(records)
    tpath = opbench.write_targets(lines, Path(args.out), dict(bench="epoch", run_id=run_id, device_name=env["device_name"],
                                                              date=env["date"], git_commit=env["git_commit"],
                                                              git_dirty=env["git_dirty"]))
    opbench.print_targets(lines, f"targets, {env['device_name']}, run {run_id}" + (f" (also in {tpath})" if tpath else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
