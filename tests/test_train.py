"""Training machinery (graphsmile/train): loss combination, metrics, checkpoints, selection
protocol, resume == uninterrupted, and DDP gradients == the global batch's (torchrun, 2 CPU
processes). Everything runs on tiny synthetic files (a few dialogues, 16-dim features)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from graphsmile.cli import main
from graphsmile.config import LOSS_TYPES, GraphSmileConfig
from graphsmile.data import load_dataset, synthesize
from graphsmile.losses import MultiTaskLoss
from graphsmile.train import Trainer, combine_parts, load_checkpoint
from graphsmile.train import metrics as M
from graphsmile.train.checkpoint import atomic_save, capture_rng_state, restore_rng_state
from graphsmile.train.trainer import shift_pair_counts

DIMS = (16, 12, 10)
TINY = ["--hidden_dim", "16", "--heter_n_layers", "1", "1", "1", "--win", "3", "3", "--shift_win", "5",
        "--batch_size", "3", "--dims", "infer", "--lr", "1e-3", "--edge_capacity", "4096"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny IEMOCAP-layout file: 12 train (1 of them valid) + 4 test dialogues."""
    p = tmp_path_factory.mktemp("data") / "tiny.pkl"
    synthesize("IEMOCAP", p, seed=3, dims=DIMS, n_dialogues=(12, 4), min_len=4, max_len=24, mean_len=12)
    return p


def _run(*argv) -> int:
    return main([str(a) for a in argv])


# --- pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_combine_parts_matches_multitaskloss(loss_type):
    torch.manual_seed(0)
    loss = MultiTaskLoss(loss_type, (1.0, 0.6, 0.3), epochs=7)
    if loss.awl is not None:
        with torch.no_grad():
            loss.awl.params.copy_(torch.tensor([0.7, 1.3, 1.1]))
    emo, sen, sft = torch.randn(9, 6), torch.randn(9, 3), torch.randn(20, 2)
    ye, ys, yf = torch.randint(0, 6, (9,)), torch.randint(0, 3, (9,)), torch.randint(0, 2, (20,))
    total, parts = loss(emo, sen, sft, ye, ys, yf, epoch=3)
    again = combine_parts(loss, {k: parts[k] for k in ("emo", "sen", "sft")}, 3)
    assert torch.allclose(total, again, atol=0, rtol=1e-6)


def test_metrics_and_seed_summary():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    m = M.acc_f1(y, p)
    assert m["acc"] == pytest.approx(400 / 6)
    from sklearn.metrics import f1_score

    assert m["f1"] == pytest.approx(100 * f1_score(y, p, average="weighted"))
    assert M.confusion(y, p, 4).tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    s = M.mean_std([70.0, 72.0, 74.0])
    assert s["mean"] == pytest.approx(72.0) and s["std"] == pytest.approx(2.0) and s["n"] == 3
    assert M.fmt_pm(s) == "72.00 ± 2.00"
    # a diverged seed is left out of the mean, and the text says so
    s = M.mean_std([70.0, float("nan"), 74.0])
    assert s["n"] == 2 and M.fmt_pm(s) == "72.00 ± 2.83 (over 2 of 3 seeds; the others are not finite)"
    summ = M.summarise_seeds([{"test": {"emo_f1": 70.0, "utterances": 5}}, {"test": {"emo_f1": 74.0, "utterances": 5}}])
    assert summ["test_emo_f1"]["mean"] == pytest.approx(72.0) and "test_utterances" not in summ
    assert shift_pair_counts([3, 7, 1], 3) == [9, 9 + 9 + 1, 1]
    assert shift_pair_counts([4], -1) == [16]


def test_metrics_match_sklearn():
    """acc_f1 (from the arrays' confusion counts) and acc_f1_from_confusion (the shift task's
    [2, 2] counts) are scikit-learn's accuracy_score and weighted f1_score (zero_division=0),
    absent classes, class ids with gaps and all."""
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(3)
    cases = [(np.array([0, 0, 1]), np.array([0, 0, 0])),        # a class never predicted
             (np.array([1, 1, 1]), np.array([1, 1, 1])),        # one class only
             (np.array([0, 1]), np.array([1, 0])),
             (np.array([5, 2, 5, 9]), np.array([5, 5, 7, 9]))]  # ids with gaps; 7 only predicted
    cases += [(rng.integers(0, 2, n), rng.integers(0, 2, n)) for n in (1, 7, 100, 1000)]
    cases += [(rng.integers(0, 6, n), rng.integers(0, 6, n)) for n in (50, 5810)]  # any C
    for y, p in cases:
        want_acc = 100.0 * accuracy_score(y, p)
        want_f1 = 100.0 * f1_score(y, p, average="weighted", zero_division=0)
        C = int(max(y.max(), p.max())) + 1
        for got in (M.acc_f1(y, p), M.acc_f1_from_confusion(M.confusion(y, p, C))):
            assert got["acc"] == pytest.approx(want_acc, abs=1e-9) and got["f1"] == pytest.approx(want_f1, abs=1e-9), (y, p)
    empty = M.acc_f1(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert np.isnan(empty["acc"]) and np.isnan(empty["f1"])
    with pytest.raises(ValueError, match="same length"):
        M.acc_f1(np.array([0, 1]), np.array([0]))
    empty = M.acc_f1_from_confusion(np.zeros((2, 2)))
    assert np.isnan(empty["acc"]) and np.isnan(empty["f1"])
    with pytest.raises(ValueError, match=r"\[C, C\]"):
        M.acc_f1_from_confusion(np.zeros((2, 3)))


def test_rng_state_roundtrip_and_atomic_save(tmp_path):
    import random

    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    st = capture_rng_state()
    atomic_save({"rng": st}, tmp_path / "x.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]          # no temporary file left
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(torch.load(tmp_path / "x.pt", weights_only=True)["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_trainer_selects_on_validation(tiny):
    sp = load_dataset(tiny, "IEMOCAP", dims="infer")
    cfg = GraphSmileConfig.preset("IEMOCAP", hidden_dim=16, heter_n_layers=(1, 1, 1), win=(3, 3), shift_win=5,
                                  batch_size=3, epochs=3, lr=3e-3, edge_capacity=4096, dim_t=16, dim_v=12, dim_a=10)
    tr = Trainer(cfg, sp, seed=1)
    for _ in range(3):
        tr.run_epoch()
    f1s = [r["valid"]["emo_f1"] for r in tr.history]
    assert tr.best["epoch"] == 1 + int(np.argmax(f1s))                # first maximum
    assert tr.best["test"] == tr.history[tr.best["epoch"] - 1]["test"]
    final = tr.final_results()
    assert final["test"]["metrics"]["emo_f1"] == pytest.approx(tr.best["test"]["emo_f1"], abs=1e-9)
    assert final["test"]["confusion"].sum() == sp.test.num_utterances
    for k in ("loss", "emo_acc", "emo_f1", "sen_acc", "sen_f1", "sft_acc", "sft_f1"):
        assert np.isfinite(tr.history[-1]["train"][k]) and np.isfinite(tr.history[-1]["test"][k])
    ev = tr.evaluate(sp.test)
    assert ev.ids == sp.test.ids and ev.emo_probs.shape == (sp.test.num_utterances, 6)
    assert np.allclose(ev.emo_probs.sum(1), 1, atol=1e-5)


def test_tf32_precision_during_training_and_evaluation_only(tiny, monkeypatch):
    """tf32=True: fp32 matmul precision "high" in the forward and the backward of every training
    step and in evaluation, torch's own setting restored after each call (also after an error);
    refused with an error naming the device where there are no TF32 tensor cores."""
    from graphsmile.train import trainer as trainer_mod

    sp = load_dataset(tiny, "IEMOCAP", dims="infer")
    cfg = GraphSmileConfig.preset("IEMOCAP", hidden_dim=16, heter_n_layers=(1, 1, 1), win=(3, 3), shift_win=5,
                                  batch_size=3, epochs=1, lr=3e-3, edge_capacity=4096, dim_t=16, dim_v=12, dim_a=10)
    with pytest.raises(ValueError, match="tf32 needs a CUDA device .* the device is cpu"):
        Trainer(cfg, sp, seed=1, tf32=True)
    with pytest.raises(ValueError, match="tf32 must be True or False, got 'yes'"):
        Trainer(cfg, sp, seed=1, tf32="yes")
    monkeypatch.setattr(trainer_mod, "check_tf32_device", lambda device: None)  # a CPU stands in for the GPU here
    tr = Trainer(cfg, sp, seed=1, tf32=True)
    seen = {"fwd": set(), "bwd": set()}

    def fwd_hook(module, args, out):
        seen["fwd"].add(torch.get_float32_matmul_precision())

    def bwd_hook(module, grad_in, grad_out):  # runs on autograd's thread
        seen["bwd"].add(torch.get_float32_matmul_precision())

    tr.model.emo_output.register_forward_hook(fwd_hook)
    tr.model.emo_output.register_full_backward_hook(bwd_hook)
    assert torch.get_float32_matmul_precision() == "highest"
    tr.train_epoch(0)
    assert seen == {"fwd": {"high"}, "bwd": {"high"}}
    assert torch.get_float32_matmul_precision() == "highest"
    resident = Trainer(cfg, sp, seed=1, tf32=True, data_on_device=True)  # the device-resident path's steps
    resident.model.emo_output.register_forward_hook(fwd_hook)
    resident.model.emo_output.register_full_backward_hook(bwd_hook)
    seen["fwd"].clear(), seen["bwd"].clear()
    resident.train_epoch(0)
    assert seen == {"fwd": {"high"}, "bwd": {"high"}} and torch.get_float32_matmul_precision() == "highest"
    seen["fwd"].clear()
    tr.evaluate(sp.test)
    assert seen["fwd"] == {"high"} and torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(RuntimeError, match="boom"):
        with trainer_mod.float32_matmul_precision("medium"):
            assert torch.get_float32_matmul_precision() == "medium"
            raise RuntimeError("boom")
    assert torch.get_float32_matmul_precision() == "highest"
    # tf32=False leaves a precision set by the caller as it is
    seen["fwd"].clear()
    off = Trainer(cfg, sp, seed=1)
    off.model.emo_output.register_forward_hook(fwd_hook)
    with trainer_mod.float32_matmul_precision("medium"):
        off.evaluate(sp.test)
    assert seen["fwd"] == {"medium"}


# --- resume == uninterrupted ----------------------------------------------------------------


def test_resume_equals_uninterrupted(tiny, tmp_path, capsys):
    common = ["train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--epochs", 3, "--loss_type", "auto", "--seed", 4]
    a, b = tmp_path / "straight", tmp_path / "interrupted"
    assert _run(*common, "--out", a) == 0
    assert _run(*common, "--out", b, "--stop_after", 2) == 0
    assert "--resume" in capsys.readouterr().out
    assert load_checkpoint(b / "last.pt")["epoch"] == 2 and not (b / "results.json").exists()
    assert _run("train", "--resume", b) == 0
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] == 3
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    assert torch.equal(ca["loss"]["awl.params"], cb["loss"]["awl.params"])
    assert not torch.equal(ca["loss"]["awl.params"], torch.ones(3))   # the auto weights learn

    def strip(h):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in h]

    assert strip(ca["history"]) == strip(cb["history"])
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    for k in ("best_epoch", "valid", "test", "paper_protocol", "confusion_matrix"):
        assert ra[k] == rb[k], k
    # the selection protocol, as recorded
    hist = ra["history"]
    best = 1 + int(np.argmax([r["valid"]["emo_f1"] for r in hist]))
    assert ra["best_epoch"] == best
    assert ra["test"]["emo_f1"] == pytest.approx(hist[best - 1]["test"]["emo_f1"])
    assert ra["paper_protocol"]["test_emo_f1"] == pytest.approx(max(r["test"]["emo_f1"] for r in hist))
    assert ra["paper_protocol"]["label"] == "paper protocol (selected on test)"
    # checkpoint contents
    for key in ("model", "optimizer", "loss", "config", "class_names", "epoch", "best", "history", "rng", "sampler_epoch"):
        assert key in ca, key
    assert ca["class_names"][0] == "happy" and set(ca["rng"][0]) >= {"torch", "numpy", "python"}
    bp = load_checkpoint(a / "best.pt")
    assert bp["epoch"] == ra["best_epoch"]
    # a finished run resumes to nothing new
    assert _run("train", "--resume", a) == 0


def test_resume_refuses_checkpoints_of_another_run(tiny, tmp_path, capsys):
    """A checkpoint continues only the run it belongs to: same data, options and number of
    processes (check_resumable); a refused resume leaves run.json as it was; --overwrite removes
    the replaced run's checkpoints and results, so none can be mistaken for the new run's; a
    permitted change (--epochs, --shift_loss) is written to run.json only once accepted."""
    from graphsmile.train.checkpoint import CheckpointError
    from graphsmile.train.trainer import check_resumable

    common = ["train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--epochs", 3]
    d = tmp_path / "run"
    assert _run(*common, "--out", d, "--stop_after", 1) == 0
    last = load_checkpoint(d / "last.pt")
    cfg = GraphSmileConfig.from_dict(last["config"])
    meta = dict(last["train"])
    check_resumable(last, d / "last.pt", cfg, 1, meta)                 # itself: fine
    check_resumable(last, d / "last.pt", cfg.replace(epochs=5, shift_loss="logits"), 1, meta)
    with pytest.raises(CheckpointError, match=r"last.pt was written by 1 process\(es\), this run has 2"):
        check_resumable(last, d / "last.pt", cfg, 2, meta)
    with pytest.raises(CheckpointError, match="was trained on other data"):
        check_resumable(last, d / "last.pt", cfg, 1, dict(meta, fingerprint={"sha1": "0" * 40}))
    with pytest.raises(CheckpointError, match="max_train_batches = None, this run has 2"):
        check_resumable(last, d / "last.pt", cfg, 1, dict(meta, max_train_batches=2))
    with pytest.raises(CheckpointError, match=r"config differs from the run's in \['hidden_dim'\]"):
        check_resumable(last, d / "last.pt", cfg.replace(hidden_dim=32), 1, meta)
    with pytest.raises(CheckpointError, match="has 3 completed epochs, more than --epochs 2"):
        check_resumable(dict(last, epoch=3), d / "last.pt", cfg.replace(epochs=2), 1, meta)
    capsys.readouterr()

    # a refused resume changes nothing; run.json keeps the stored --epochs
    run_json = (d / "run.json").read_text()
    torch.save(dict(last, world_size=2), d / "last.pt")    # as if written by two processes
    assert _run("train", "--resume", d, "--epochs", 4) == 1
    assert "written by 2 process(es)" in capsys.readouterr().err
    assert (d / "run.json").read_text() == run_json
    torch.save(dict(last, seed=7), d / "last.pt")          # refused by the seed/best.pt pairing check
    assert _run("train", "--resume", d, "--epochs", 4) == 1
    assert "checkpoint of seed 7" in capsys.readouterr().err
    assert (d / "run.json").read_text() == run_json
    torch.save(last, d / "last.pt")
    # an accepted change is recorded
    assert _run("train", "--resume", d, "--shift_loss", "logits", "--stop_after", 2) == 0
    assert json.loads((d / "run.json").read_text())["config"]["shift_loss"] == "logits"
    assert load_checkpoint(d / "last.pt")["epoch"] == 2
    assert _run("train", "--resume", d) == 0
    assert (d / "results.json").exists()

    # --overwrite on other data: the old checkpoints go first; an interrupted new run then
    # resumes from its own checkpoint, never from the replaced run's
    other = tmp_path / "other.pkl"
    synthesize("IEMOCAP", other, seed=9, dims=DIMS, n_dialogues=(10, 3), min_len=4, max_len=20, mean_len=10)
    assert _run("train", "--dataset", "IEMOCAP", "--data", other, *TINY, "--epochs", 2, "--out", d, "--overwrite",
                "--stop_after", 1) == 0
    out = capsys.readouterr().out
    assert "--overwrite: removed the previous run's" in out and "last.pt" in out
    assert not (d / "results.json").exists()
    assert json.loads((d / "run.json").read_text())["data"].endswith("other.pkl")
    assert load_checkpoint(d / "last.pt")["train"]["data"].endswith("other.pkl")
    assert _run("train", "--resume", d) == 0
    ck = load_checkpoint(d / "last.pt")
    assert ck["epoch"] == 2 and ck["train"]["data"].endswith("other.pkl")
    assert json.loads((d / "results.json").read_text())["training"]["data"].endswith("other.pkl")


def test_resume_checks_best_pt_data_path_and_stale_results(tiny, tmp_path, capsys, monkeypatch):
    """best.pt is checked like last.pt (seed, config, data, options), not only by its epoch; a
    resume's relative --data is stored absolute; a results.json of fewer epochs than last.pt
    (an extended run stopped before its reports) is not reported as the run's; --sync_bn on
    the CPU is refused before --overwrite removes anything."""
    import shutil

    common = ["train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--epochs", 2, "--stop_after", 1]
    a, other_seed, other_cfg = tmp_path / "a", tmp_path / "seed5", tmp_path / "h8"
    assert _run(*common, "--out", a) == 0
    assert _run(*common, "--out", other_seed, "--seed", 5) == 0
    assert _run(*common[:-2], "--stop_after", 1, "--out", other_cfg, "--hidden_dim", 8) == 0
    capsys.readouterr()
    own_best = (a / "best.pt").read_bytes()
    for src, message in ((other_seed, "best.pt: checkpoint of seed 5, this run uses seed 0"),
                         (other_cfg, "best.pt: checkpoint config differs from the run's in ['hidden_dim']")):
        shutil.copyfile(src / "best.pt", a / "best.pt")
        before = {f.name: f.read_bytes() for f in a.iterdir() if f.is_file()}
        assert _run("train", "--resume", a) == 1
        assert message in capsys.readouterr().err
        assert {f.name: f.read_bytes() for f in a.iterdir() if f.is_file()} == before
    (a / "best.pt").write_bytes(own_best)

    # --data given relative on resume: run.json holds it absolute (resumable from any folder)
    shutil.copyfile(tiny, tmp_path / "same.pkl")
    monkeypatch.chdir(tmp_path)
    assert _run("train", "--resume", a, "--data", "same.pkl") == 0
    assert json.loads((a / "run.json").read_text())["data"] == str((tmp_path / "same.pkl").resolve())
    first = json.loads((a / "results.json").read_text())
    assert first["epochs_completed"] == 2

    # extended to 3 epochs, then (as if stopped between the last epoch and the reports) the
    # 2-epoch results.json put back: the resume reports the 3 epochs anew
    assert _run("train", "--resume", a, "--epochs", 3) == 0
    (a / "results.json").write_text(json.dumps(first))
    assert _run("train", "--resume", a) == 0
    res = json.loads((a / "results.json").read_text())
    assert res["epochs_completed"] == 3 and len(res["history"]) == 3
    capsys.readouterr()

    # --sync_bn needs DDP on CUDA: refused before --overwrite touches the finished run
    before = {f.name: f.read_bytes() for f in a.iterdir() if f.is_file()}
    assert _run(*common, "--out", a, "--overwrite", "--sync_bn") == 1
    assert "--sync_bn needs several processes on CUDA devices" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in a.iterdir() if f.is_file()} == before


def test_batching_options_and_eval_order(tiny, tmp_path, capsys):
    """Evaluation batches are consecutive dialogues in dataset order (the original's test
    loader), whatever the training batching; --bucket_batches 0 (plain random batches) and
    --no-bn_include_padding are recorded and cannot change on resume; the default model keeps
    the original's padded text BatchNorm statistics."""
    sp = load_dataset(tiny, "IEMOCAP", dims="infer")
    cfg = GraphSmileConfig.preset("IEMOCAP", hidden_dim=16, heter_n_layers=(1, 1, 1), win=(3, 3), shift_win=5,
                                  batch_size=3, epochs=1, edge_capacity=4096, dim_t=DIMS[0], dim_v=DIMS[1], dim_a=DIMS[2])
    assert cfg.bn_include_padding is True
    for bucket in (50, None):
        tr = Trainer(cfg, sp, seed=0, bucket_batches=bucket)
        batches = tr._eval_batches(sp.test)
        assert [i for b in batches for i in b] == list(range(len(sp.test)))
        assert all(len(b) == 3 for b in batches[:-1])
    d = tmp_path / "run"
    assert _run("train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--epochs", 2, "--stop_after", 1,
                "--bucket_batches", 0, "--no-bn_include_padding", "--out", d) == 0
    run = json.loads((d / "run.json").read_text())
    assert run["training"]["bucket_batches"] == 0 and run["config"]["bn_include_padding"] is False
    capsys.readouterr()
    assert _run("train", "--resume", d, "--bucket_batches", 3) == 1
    assert "cannot change --bucket_batches" in capsys.readouterr().err
    assert _run("train", "--resume", d, "--sync_bn") == 1
    assert "cannot change --sync_bn" in capsys.readouterr().err
    assert _run("train", "--resume", d) == 0
    assert json.loads((d / "results.json").read_text())["training"]["bucket_batches"] == 0


# --- torchrun DDP -----------------------------------------------------------------------------


def test_ddp_gradients_equal_single_process_global_batch(tiny, tmp_path):
    """Two CPU processes under torchrun (gloo): the DDP-averaged gradients of the first step
    equal the gradients of one process on the union of both ranks' batches; the sharded,
    gathered evaluation equals the single-process one."""
    from graphsmile.train import _ddp_check

    ddp_out, single_out = tmp_path / "ddp.pt", tmp_path / "single.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "graphsmile.train._ddp_check", "--data", str(tiny), "--out", str(ddp_out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _ddp_check.main(["--data", str(tiny), "--out", str(single_out), "--global_ids", str(ddp_out)])
    d = torch.load(ddp_out, weights_only=True)
    s = torch.load(single_out, weights_only=True)
    assert d["world_size"] == 2 and len(d["ids"]) == 2 and all(len(x) == 3 for x in d["ids"])
    assert not set(d["ids"][0]) & set(d["ids"][1])
    assert set(d["grads"]) == set(s["grads"]) and "loss.awl.params" in d["grads"]
    for k, g in s["grads"].items():
        assert torch.allclose(d["grads"][k], g, rtol=1e-4, atol=1e-6), k
    assert d["eval_ids"] == s["eval_ids"]
    assert torch.allclose(d["eval_probs"], s["eval_probs"], atol=1e-6)
    for k, v in s["eval_metrics"].items():
        assert d["eval_metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_ddp_evaluation_uses_rank0_buffers(tiny, tmp_path):
    """Two CPU processes under torchrun, text BatchNorms in training mode: after an epoch each
    rank's running statistics differ (each updates its own copy); evaluation first gives every
    rank rank 0's buffers, so the sharded evaluation is that of one model, the one the
    checkpoints save: it equals a single-process evaluation of rank 0's state."""
    script = tmp_path / "ddp_bn.py"
    script.write_text(f'''
import sys, torch
from graphsmile.config import GraphSmileConfig
from graphsmile.data import load_dataset
from graphsmile.train import Trainer, init_distributed
sp = load_dataset(sys.argv[1], "IEMOCAP", dims="infer")
cfg = GraphSmileConfig.preset("IEMOCAP", hidden_dim=16, heter_n_layers=(1, 1, 1), win=(3, 3), shift_win=5, batch_size=3,
                              epochs=1, lr=3e-3, edge_capacity=4096, dim_t={DIMS[0]}, dim_v={DIMS[1]}, dim_a={DIMS[2]})
ctx, device = init_distributed("cpu")
try:
    tr = Trainer(cfg, sp, seed=1, ctx=ctx, device=device)
    tr.train_epoch(0)
    before = ctx.all_gather_object({{k: v.clone() for k, v in tr.model.named_buffers()}})
    ev = tr.evaluate(sp.test, 0)
    after = ctx.all_gather_object({{k: v.clone() for k, v in tr.model.named_buffers()}})
    if ctx.is_main:
        torch.save({{"before": before, "after": after, "metrics": ev.metrics,
                    "state": {{k: v.clone() for k, v in tr.model.state_dict().items()}}}}, sys.argv[2])
    ctx.barrier()   # as graphsmile train: every rank done before the group is destroyed
finally:
    ctx.close()
''')
    out = tmp_path / "bn.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script),
           str(tiny), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = torch.load(out, weights_only=False)
    b0, b1 = res["before"]
    stats = [k for k in b0 if "running_mean" in k]
    assert stats and any(not torch.equal(b0[k], b1[k]) for k in stats), "the ranks' statistics should differ here"
    a0, a1 = res["after"]
    for k in a0:
        assert torch.equal(a0[k], a1[k]) and torch.equal(a0[k], b0[k]), k
    sp = load_dataset(tiny, "IEMOCAP", dims="infer")
    cfg = GraphSmileConfig.preset("IEMOCAP", hidden_dim=16, heter_n_layers=(1, 1, 1), win=(3, 3), shift_win=5,
                                  batch_size=3, epochs=1, lr=3e-3, edge_capacity=4096, dim_t=DIMS[0], dim_v=DIMS[1],
                                  dim_a=DIMS[2])
    single = Trainer(cfg, sp, seed=1)
    single.model.load_state_dict(res["state"])
    want = single.evaluate(sp.test, 0).metrics
    for k, v in want.items():
        assert res["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("on_device", ["off", "on"])
def test_ddp_non_finite_loss_one_error_line(tiny, tmp_path, on_device):
    """A loss that is not finite on one rank only (one training dialogue with features of
    3e38: finite, so the loader takes them): every rank stops with the same error, which the
    CLI prints once (rank 0) and which names the rank and the dialogues, instead of one rank
    raising alone and the other printing its broken connection."""
    import pickle

    with open(tiny, "rb") as fh:
        fields = list(pickle.load(fh, encoding="latin1"))
    vid = fields[-2][-1]                                   # a training dialogue (validation: the first 10%)
    for i in range(3, 7):                                  # videoText0..3
        fields[i] = {**fields[i], vid: np.full_like(np.asarray(fields[i][vid], dtype=np.float32), 3e38)}
    bad = tmp_path / "bad.pkl"
    with open(bad, "wb") as fh:
        pickle.dump(tuple(fields), fh)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "graphsmile", "train", "--dataset", "IEMOCAP", "--data", str(bad), *map(str, TINY),
           "--epochs", "1", "--out", str(tmp_path / "run"), "--data_on_device", on_device, "--progress", "never"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("graphsmile: error")]
    assert len(errors) == 1, r.stderr[-3000:]
    assert errors[0].startswith("graphsmile: error: non-finite training loss"), errors
    assert " on rank " in errors[0] and "dialogues" in errors[0], errors


# --- the optimiser ---------------------------------------------------------------------------


def test_optimizer_is_the_originals_adamw_with_the_fused_kernel():
    """make_optimizer: AdamW(amsgrad, lr, weight_decay=l2) with torch's fused kernel on the CPU
    (torch >= 2.4): its steps equal the default kernel's to rounding. A checkpoint's kernel
    flags (another machine's choice) do not replace this machine's on load."""
    from graphsmile.config import GraphSmileConfig
    from graphsmile.train.trainer import load_optimizer_state, make_optimizer

    cfg = GraphSmileConfig.preset("IEMOCAP", lr=1e-2)
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(7)]
    runs = {}
    for kind in ("fused", "default"):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make_optimizer(params, cfg) if kind == "fused" else torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.l2, amsgrad=True)
        for step in range(5):
            opt.zero_grad()
            sum((p * (step + 1.0)).pow(2).sum() for p in params).backward()
            opt.step()
        runs[kind] = (params, opt)
    fused_opt = runs["fused"][1]
    group = fused_opt.param_groups[0]
    assert group["fused"] is True and group["amsgrad"] and group["lr"] == 1e-2 and group["weight_decay"] == cfg.l2
    for a, b in zip(runs["fused"][0], runs["default"][0]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
        assert not torch.equal(a.detach(), start[0] if a.dim() == 2 else start[1])
    # a checkpoint written by the default kernel: its state loads, the fused choice stays
    state = runs["default"][1].state_dict()
    assert state["param_groups"][0].get("fused") in (None, False)
    load_optimizer_state(fused_opt, state)
    assert fused_opt.param_groups[0]["fused"] is True
    assert torch.equal(fused_opt.state[runs["fused"][0][0]]["max_exp_avg_sq"],
                       state["state"][0]["max_exp_avg_sq"])
