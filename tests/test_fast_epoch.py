"""The device-resident, sync-free training path (``Trainer(data_on_device=True)``,
``graphsmile train --data_on_device``) against the DataLoader path.

- its batches hold exactly what ``collate_dialogues`` gives, for any batch list;
- whole runs are bitwise identical to the loader path on the CPU (losses, metrics, selection,
  final weights, optimizer and RNG states), alone and under torchrun DDP;
- no device-to-host read happens inside the batch loops (structurally on the CPU: counted
  reads from graphsmile code; on a GPU: ``torch.cuda.set_sync_debug_mode("error")``);
- a non-finite loss still raises, naming the epoch; the CLI flag; ``torch.compile``;
- ``bench/epoch.py --quick --device cpu`` runs.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import graphsmile
import graphsmile.model as gmodel
import graphsmile.ops as ops
import graphsmile.train.trainer as gtrainer
from graphsmile.cli import main
from graphsmile.config import GraphSmileConfig
from graphsmile.data import collate_dialogues, load_dataset, synthesize
from graphsmile.data.collate import DeviceDialogues, DevicePlan, shift_pair_counts_np, shift_pairs_np
from graphsmile.model import packed_index
from graphsmile.train import Trainer, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
DIMS = (16, 12, 10)
TINY = ["--hidden_dim", "16", "--heter_n_layers", "1", "1", "1", "--win", "3", "3", "--shift_win", "5",
        "--batch_size", "3", "--dims", "infer", "--lr", "1e-3", "--edge_capacity", "4096"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Tiny files: IEMOCAP layout (12 train, 1 of them valid, + 4 test dialogues) and IEMOCAP4
    (one stored text set, shared by the four slots)."""
    d = tmp_path_factory.mktemp("fast")
    synthesize("IEMOCAP", d / "tiny.pkl", seed=3, dims=DIMS, n_dialogues=(12, 4), min_len=4, max_len=24, mean_len=12)
    synthesize("IEMOCAP4", d / "tiny4.pkl", seed=4, dims=DIMS, n_dialogues=(10, 3), min_len=2, max_len=15, mean_len=8)
    return d


def tiny_config(dataset: str = "IEMOCAP", **kw) -> GraphSmileConfig:
    base = dict(hidden_dim=16, heter_n_layers=(1, 1, 1), win=(3, 3), shift_win=5, batch_size=3, epochs=3, lr=3e-3,
                edge_capacity=4096, dim_t=DIMS[0], dim_v=DIMS[1], dim_a=DIMS[2])
    base.update(kw)
    return GraphSmileConfig.preset(dataset, **base)


def _history(tr):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in tr.history]


# --- the batches ------------------------------------------------------------------------------


def test_device_batches_equal_collate(data):
    sp = load_dataset(data / "tiny.pkl", "IEMOCAP", dims="infer")
    ds = sp.train
    store = DeviceDialogues(ds, "cpu", shift_win=4)
    assert store.texts[0] is not store.texts[1]
    rng = random.Random(0)
    batches = [[0], list(range(len(ds)))] + [rng.sample(range(len(ds)), rng.randint(1, 5)) for _ in range(20)]
    plan = store.plan(batches)
    assert isinstance(plan, DevicePlan) and len(plan) == len(batches)
    for idx, b, e in zip(batches, plan, plan.entries):
        ref = collate_dialogues([ds[i] for i in idx])
        for k in range(4):
            assert torch.equal(b.texts[k], ref.model_inputs()[k])
        assert torch.equal(b.visual, ref.visual) and torch.equal(b.audio, ref.audio)
        assert torch.equal(b.emotion, ref.emotion) and torch.equal(b.sentiment, ref.sentiment)
        assert torch.equal(b.shift_labels, ops.shift_pair_labels(ref.sentiment, ref.lengths, 4))
        assert torch.equal(b.pack_index, packed_index(ref.lengths, len(idx)))
        assert b.lengths == ref.lengths and b.ids == ref.ids and b.num_pairs == b.shift_labels.numel()
        assert all(isinstance(L, int) for L in b.lengths)
        # host copies of the labels, for metrics without a read-back
        assert np.array_equal(store.emotion_np[e.rows], ref.emotion.numpy())
        assert np.array_equal(store.shift_labels_np[e.pairs], b.shift_labels.numpy())
    with pytest.raises(IndexError, match="outside"):
        store.plan([[0, len(ds)]])
    with pytest.raises(ValueError, match="at least one dialogue"):
        store.plan([[]])


def test_shared_text_set_is_gathered_once(data):
    sp = load_dataset(data / "tiny4.pkl", "IEMOCAP4", dims="infer")
    store = DeviceDialogues(sp.train, "cpu", shift_win=3, text_sets=(0, 1, 2, 3))
    assert all(t is store.texts[0] for t in store.texts)
    b = store.plan([[2, 0, 5]]).batch(0)
    assert all(t is b.texts[0] for t in b.texts)
    assert torch.equal(b.texts[3], collate_dialogues([sp.train[i] for i in (2, 0, 5)]).textf3)
    only0 = DeviceDialogues(sp.train, "cpu", shift_win=3, text_sets=(0,))
    assert only0.texts[1:] == (None, None, None) and only0.nbytes < store.nbytes + 1
    assert DeviceDialogues.estimate_bytes(sp.train, DIMS, 1, 3) >= only0.nbytes


def test_shift_pairs_numpy_matches_ops():
    rng = random.Random(1)
    for _ in range(50):
        lens = [rng.randint(1, 30) for _ in range(rng.randint(1, 6))]
        w = rng.choice([-1, 1, 2, 5, 19])
        i, j = shift_pairs_np(lens, w)
        ref = ops.shift_pair_index(lens, w)
        assert np.array_equal(i, ref[0].numpy()) and np.array_equal(j, ref[1].numpy())
        assert int(shift_pair_counts_np(lens, w).sum()) == ops.num_shift_pairs(lens, w)
    with pytest.raises(ValueError, match="shift_win"):
        shift_pair_counts_np([3], 0)


def test_model_pack_index_argument(data):
    sp = load_dataset(data / "tiny.pkl", "IEMOCAP", dims="infer")
    model = gmodel.GraphSmile(tiny_config()).eval()
    b = collate_dialogues([sp.train[i] for i in (1, 4, 2)])
    ref = model(*b.model_inputs())
    got = model(*b.model_inputs(), pack_index=packed_index(b.lengths, 3))
    assert all(torch.equal(x, y) for x, y in zip(ref, got))
    with pytest.raises(ValueError, match="pack_index"):
        model(*b.model_inputs(), pack_index=packed_index(b.lengths, 3).int())
    with pytest.raises(ValueError, match="pack_index"):
        model(*b.model_inputs(), pack_index=packed_index(b.lengths, 3)[:-1])


# --- identical runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", [
    dict(),
    dict(loss_type="auto", textf_mode="concat2", bn_include_padding=True, edge_weights="relative"),
    dict(loss_type="epoch", max_train_batches=2),
    dict(dataset="IEMOCAP4", textf_mode="sum4", shift_win=-1, loss_type="emo_sen"),
])
def test_device_path_bitwise_equals_loader(data, case):
    case = dict(case)
    max_batches = case.pop("max_train_batches", None)
    name = case.get("dataset", "IEMOCAP")
    sp = load_dataset(data / ("tiny4.pkl" if name == "IEMOCAP4" else "tiny.pkl"), name, dims="infer")
    cfg = tiny_config(**case)
    runs = {}
    for on in (False, True):
        tr = Trainer(cfg, sp, seed=1, data_on_device=on, max_train_batches=max_batches)
        assert tr.data_on_device is on
        for _ in range(3):
            tr.run_epoch()
        runs[on] = (tr, torch.get_rng_state())
    (a, rng_a), (b, rng_b) = runs[False], runs[True]
    assert _history(a) == _history(b)                       # losses and every metric, exactly
    assert a.best == b.best
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    for k, v in a.loss_fn.state_dict().items():
        assert torch.equal(v, b.loss_fn.state_dict()[k]), k
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)
    assert torch.equal(rng_a, rng_b)                         # same draws (dropout, DataLoader seeds)
    ea, eb = a.evaluate(sp.test), b.evaluate(sp.test)
    assert ea.metrics == eb.metrics and ea.ids == eb.ids and ea.lengths == eb.lengths
    assert np.array_equal(ea.emo_probs, eb.emo_probs) and np.array_equal(ea.sen_probs, eb.sen_probs)
    assert np.array_equal(ea.emo_labels, eb.emo_labels)
    fa, fb = a.final_results(), b.final_results()
    assert fa["test"]["metrics"] == fb["test"]["metrics"] and fa["test"]["report"] == fb["test"]["report"]


def test_data_on_device_auto_and_bad_value(data):
    sp = load_dataset(data / "tiny.pkl", "IEMOCAP", dims="infer")
    tr = Trainer(tiny_config(), sp, seed=0)
    assert tr.data_on_device is False and "auto" in tr.data_on_device_reason   # auto: CUDA only
    with pytest.raises(ValueError, match="data_on_device"):
        Trainer(tiny_config(), sp, data_on_device="yes")
    with pytest.raises(ValueError, match="compile"):
        Trainer(tiny_config(), sp, compile="")


def test_ddp_device_path_equals_loader_path(data, tmp_path):
    """Two CPU processes under torchrun: the device path (global loss counts from the sampler's
    batch list, no all-reduce) trains bitwise as the loader path. batch_size 4 over 11 training
    dialogues gives 3 batches, padded to 4 so that each rank steps twice."""
    script = tmp_path / "ddp_eq.py"
    script.write_text(f'''
import sys, torch
from graphsmile.config import GraphSmileConfig
from graphsmile.data import load_dataset
from graphsmile.train import Trainer, init_distributed
sp = load_dataset(sys.argv[1], "IEMOCAP", dims="infer")
cfg = GraphSmileConfig.preset("IEMOCAP", hidden_dim=16, heter_n_layers=(1, 1, 1), win=(3, 3), shift_win=5, batch_size=4,
                              epochs=2, lr=3e-3, edge_capacity=4096, dim_t={DIMS[0]}, dim_v={DIMS[1]}, dim_a={DIMS[2]},
                              loss_type="auto")
ctx, device = init_distributed("cpu")
res = {{}}
try:
    for on in (False, True):
        tr = Trainer(cfg, sp, seed=2, ctx=ctx, device=device, data_on_device=on)
        for _ in range(2):
            tr.run_epoch()
        res[on] = {{"history": [{{k: v for k, v in r.items() if k != "time_s"}} for r in tr.history],
                    "model": {{k: v.clone() for k, v in tr.model.state_dict().items()}},
                    "loss": {{k: v.clone() for k, v in tr.loss_fn.state_dict().items()}}}}
    if ctx.is_main:
        torch.save(res, sys.argv[2])
    ctx.barrier()   # as graphsmile train: every rank done before the group is destroyed
finally:
    ctx.close()
''')
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script),
           str(data / "tiny.pkl"), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = torch.load(out, weights_only=False)
    a, b = res[False], res[True]
    assert a["history"] == b["history"]
    assert a["history"][0]["train"]["batches"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["loss"]["awl.params"], b["loss"]["awl.params"])


# --- no host sync in the batch loops --------------------------------------------------------------

_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")
_PKG = str(Path(graphsmile.__file__).resolve().parent)


@contextlib.contextmanager
def count_reads(monkeypatch):
    """Counts device-to-host reads (``Tensor.item/tolist/cpu/numpy`` and conversions to Python
    scalars) made *by graphsmile code* while ``state["in_loop"]`` is set. torch's own host-side
    reads (e.g. AdamW's CPU step counters) are not device reads on a GPU and are not counted."""
    state = {"in_loop": False, "reads": []}
    for name in _READS:
        orig = getattr(torch.Tensor, name)

        def wrapper(self, *a, _orig=orig, _name=name, **kw):
            if state["in_loop"]:
                f = sys._getframe(1)
                if f.f_code.co_filename.startswith(_PKG):
                    state["reads"].append(f"{_name} at {Path(f.f_code.co_filename).name}:{f.f_lineno}")
            return _orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    yield state


def _mark_loop(monkeypatch, state, cls, attr):
    """Set ``state["in_loop"]`` while the iterator returned by ``cls.attr`` is being consumed
    (from before the first batch to after the last step)."""
    orig = getattr(cls, attr)

    def wrapped(self):
        it = orig(self)
        state["in_loop"] = True
        try:
            yield from it
        finally:
            state["in_loop"] = False

    monkeypatch.setattr(cls, attr, wrapped)


@pytest.mark.parametrize("shift_loss", ["logits", "fused"])
def test_no_host_reads_inside_the_batch_loops(data, monkeypatch, shift_loss):
    sp = load_dataset(data / "tiny.pkl", "IEMOCAP", dims="infer")
    cfg = tiny_config(loss_type="auto", shift_loss=shift_loss)
    calls = {"packed_index": 0, "shift_pair_labels": 0}

    def counting(name, fn):
        def f(*a, **kw):
            calls[name] += 1
            return fn(*a, **kw)
        return f

    monkeypatch.setattr(gmodel, "packed_index", counting("packed_index", gmodel.packed_index))
    monkeypatch.setattr(gtrainer, "shift_pair_labels", counting("shift_pair_labels", gtrainer.shift_pair_labels))
    with count_reads(monkeypatch) as state:
        # the instrument sees the loader path's per-batch reads ...
        _mark_loop(monkeypatch, state, torch.utils.data.DataLoader, "__iter__")
        loader = Trainer(cfg, sp, seed=0, data_on_device=False)
        loader.run_epoch()
        n_loader = len(state["reads"])
        assert n_loader >= 3 * loader.history[-1]["train"]["batches"], state["reads"]
        assert calls["packed_index"] > 0
        # the logits path builds the pair labels per batch; the fused loss needs none
        assert (calls["shift_pair_labels"] > 0) == (shift_loss == "logits")
        # ... and none in the device path's loops (training, validation, test)
        state["reads"].clear()
        calls.update(packed_index=0, shift_pair_labels=0)
        _mark_loop(monkeypatch, state, DevicePlan, "__iter__")
        dev = Trainer(cfg, sp, seed=0, data_on_device=True)
        dev.run_epoch()
        dev.run_epoch()
        assert state["reads"] == []
        assert calls == {"packed_index": 0, "shift_pair_labels": 0}
    assert _history(loader)[0] == _history(dev)[0]


@pytest.mark.parametrize("on", [False, True])
def test_fused_and_logits_shift_loss_train_alike(data, on):
    """config.shift_loss 'fused' (default) and 'logits' are the same math: one epoch of training
    gives the same losses up to rounding, and the same shift metrics (from confusion counts)."""
    sp = load_dataset(data / "tiny.pkl", "IEMOCAP", dims="infer")
    recs = {}
    for mode in ("logits", "fused"):
        tr = Trainer(tiny_config(shift_loss=mode, shift_win=-1), sp, seed=0, data_on_device=on)
        assert tr.fused_shift == (mode == "fused")
        recs[mode], _ = tr.run_epoch()
        if on:   # the fused path keeps no per-pair labels on the device
            assert all((st.shift_labels is None) == (mode == "fused") for _, st in tr._stores)
    for split in ("train", "valid", "test"):
        a, b = recs["logits"][split], recs["fused"][split]
        assert a.keys() == b.keys()
        for k in a:
            if k.startswith("loss"):
                assert b[k] == pytest.approx(a[k], rel=1e-4), (split, k)
            elif k.startswith("sft") or k in ("batches", "utterances", "dialogues"):
                assert b[k] == pytest.approx(a[k], abs=1e-9), (split, k)


# --- errors, CLI, compile ---------------------------------------------------------------------


@pytest.mark.parametrize("on", [False, True])
def test_nonfinite_loss_raises_naming_the_epoch(data, on):
    sp = load_dataset(data / "tiny.pkl", "IEMOCAP", dims="infer")
    tr = Trainer(tiny_config(), sp, seed=0, data_on_device=on)
    tr.run_epoch()
    with torch.no_grad():
        tr.model.emo_output.bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite training loss nan at epoch 2 .*dialogues"):
        tr.run_epoch()
    assert tr.epoch == 1 and len(tr.history) == 1      # the failed epoch is not recorded


def test_cli_data_on_device_flag(data, tmp_path, monkeypatch, capsys):
    used = []
    orig = Trainer._train_epoch_device

    def spy(self, epoch):
        used.append(epoch)
        return orig(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch_device", spy)
    common = ["train", "--dataset", "IEMOCAP", "--data", data / "tiny.pkl", *TINY, "--epochs", 2, "--seed", 3]
    a, b = tmp_path / "off", tmp_path / "on"
    assert main([str(x) for x in common + ["--out", a, "--data_on_device", "off"]]) == 0
    assert used == []
    assert main([str(x) for x in common + ["--out", b, "--data_on_device", "on"]]) == 0
    assert used == [0, 1]
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731
    assert strip(ra["history"]) == strip(rb["history"])
    for k in ("best_epoch", "valid", "test", "confusion_matrix"):
        assert ra[k] == rb[k], k
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    # the flag may change when a run is resumed (it changes speed, not results)
    assert main([str(x) for x in ["train", "--resume", b, "--epochs", 3, "--data_on_device", "off"]]) == 0
    assert used == [0, 1]
    capsys.readouterr()
    assert main(["train", "--dataset", "IEMOCAP", "--out", str(tmp_path / "x"), "--data_on_device", "maybe"]) != 0
    assert "argument --data_on_device: invalid choice: 'maybe'" in capsys.readouterr().err


def test_torch_compile_option(data):
    """``compile=`` wraps the model in torch.compile (here the ``aot_eager`` backend: dynamo and
    AOTAutograd through the custom ops without inductor's C++ build, which takes minutes on a
    small CPU); the first batches recompile, then shapes go dynamic. Same numbers as eager."""
    import torch._dynamo

    sp = load_dataset(data / "tiny.pkl", "IEMOCAP", dims="infer")
    cfg = tiny_config()
    torch._dynamo.reset()
    try:
        ref = Trainer(cfg, sp, seed=1, data_on_device=True)
        for _ in range(2):
            ref.run_epoch()
        comp = Trainer(cfg, sp, seed=1, data_on_device=True, compile="aot_eager")   # seeds again
        for _ in range(2):
            comp.run_epoch()
    finally:
        torch._dynamo.reset()
    for ra, rb in zip(_history(ref), _history(comp)):
        for split in ("train", "test"):
            for k in ("loss", "loss_emo", "loss_sft"):
                assert rb[split][k] == pytest.approx(ra[split][k], rel=1e-5), (split, k)
    assert list(comp.model.state_dict()) == list(ref.model.state_dict())   # no _orig_mod. prefix


# --- GPU ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_epoch_without_syncs(data, monkeypatch):
    """On a GPU, the device path's batch loops (training and evaluation) make no synchronising
    CUDA call: ``set_sync_debug_mode("error")`` turns any into an exception. Needs the compiled
    CUDA kernels (the triton and reference backends upload the lengths with a blocking copy)."""
    if not ops._ext.has_kernel("CUDA"):
        pytest.skip("graphsmile._C has no CUDA kernels (built without nvcc)")
    sp = load_dataset(data / "tiny.pkl", "IEMOCAP", dims="infer")
    cfg = tiny_config(loss_type="auto")
    dev = torch.device("cuda")
    tr = Trainer(cfg, sp, seed=0, device=dev)
    assert tr.data_on_device is True, tr.data_on_device_reason       # auto: on for CUDA
    tr.run_epoch()                                                   # warm-up (lazy initialisation)
    orig = DevicePlan.__iter__

    def strict(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from orig(self)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(DevicePlan, "__iter__", strict)
    rec, _ = tr.run_epoch()
    monkeypatch.setattr(DevicePlan, "__iter__", orig)
    loader = Trainer(cfg, sp, seed=0, device=dev, data_on_device=False)
    for _ in range(2):
        loader.run_epoch()
    # same batches and seeds: the same numbers up to GPU rounding (bitwise where cuBLAS/cuDNN are)
    assert rec["train"]["loss"] == pytest.approx(loader.history[-1]["train"]["loss"], rel=1e-4)
    assert rec["test"]["loss"] == pytest.approx(loader.history[-1]["test"]["loss"], rel=1e-4)


# --- the benchmark ------------------------------------------------------------------------------


def test_bench_epoch_quick(tmp_path):
    out = tmp_path / "epoch.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(REPO / "bench" / "epoch.py"), "--quick", "--device", "cpu", "--warmup", "0",
                        "--threads", "1", "--data-dir", str(tmp_path), "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "records appended" in p.stdout and "bitwise equal" in p.stdout
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["path"], r["phase"]) for r in recs] == [("loader", "train"), ("loader", "eval"),
                                                       ("device", "train"), ("device", "eval")]
    for r in recs:
        for key in ("bench", "device", "device_name", "date", "torch", "git_commit", "time_s", "train_dialogues",
                    "train_utterances", "data_on_device"):
            assert key in r, key
        assert r["time_s"]["reps"] == 1 and r["time_s"]["median"] > 0 and r["train_dialogues"] == 16
    assert recs[2]["same_losses"] is True and recs[2]["speedup_vs_loader"] > 0
    assert recs[0]["data_on_device"] is False and recs[2]["data_on_device"] is True
    # the T4 verdict lines come last, one per path (n/a: not a GPU), and go to epoch_targets.jsonl
    tail = p.stdout[p.stdout.index("=== targets"):]
    assert tail.count("[n/a (not a GPU)] T4 training epoch") == 2 and "loader path, 16 dialogues" in tail
    assert len((tmp_path / "epoch_targets.jsonl").read_text().splitlines()) == 2


def test_bench_epoch_compiled_path(tmp_path):
    """The compiled path (Trainer(compile=True), the device-resident data) trains: finite losses
    close to the eager path's (dropout masks come from compiled code's own random streams)."""
    out = tmp_path / "epoch.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(REPO / "bench" / "epoch.py"), "--quick", "--device", "cpu", "--warmup", "0",
                        "--threads", "1", "--no-eval", "--paths", "device,compiled", "--data-dir", str(tmp_path),
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["path"], r["phase"]) for r in recs] == [("device", "train"), ("compiled", "train")]
    assert recs[1]["data_on_device"] is True
    eager, compiled = recs[0]["losses"][0], recs[1]["losses"][0]
    assert math.isfinite(compiled) and abs(compiled - eager) <= 0.02 * abs(eager), (eager, compiled)

