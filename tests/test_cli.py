"""The ``graphsmile`` command end to end on tiny synthetic files: every subcommand, the
synthetic demo path, several seeds, checkpoint conversion, and bad input (one clear line on
stderr, non-zero exit, nothing overwritten). Mostly in-process (``graphsmile.cli.main``); one
real subprocess smoke test of the console entry point."""
from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from graphsmile import cli
from graphsmile.cli import main
from graphsmile.config import GraphSmileConfig
from graphsmile.data import load_dataset, synthesize
from graphsmile.model import GraphSmile
from graphsmile.train import load_checkpoint

DIMS = (16, 12, 10)
TINY = ["--hidden_dim", "16", "--heter_n_layers", "1", "1", "1", "--win", "3", "3", "--shift_win", "5",
        "--batch_size", "4", "--dims", "infer", "--lr", "1e-3", "--edge_capacity", "4096"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    synthesize("IEMOCAP", d / "tiny.pkl", seed=5, dims=DIMS, n_dialogues=(10, 4), min_len=4, max_len=20, mean_len=10)
    synthesize("MELD", d / "meld.pkl", seed=5, dims=(16, 12, 10), n_dialogues=(6, 2, 3), max_len=8)
    return d


@pytest.fixture(scope="module")
def run_dir(data_dir) -> Path:
    """One finished 2-epoch run (shared by the evaluate/predict tests)."""
    out = data_dir / "run"
    assert run("train", "--dataset", "IEMOCAP", "--data", data_dir / "tiny.pkl", *TINY, "--epochs", 2, "--out", out) == 0
    return out


def run(*argv) -> int:
    return main([str(a) for a in argv])


def one_error_line(capsys, code_expected, code) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == code_expected, err
    assert len(err) == 1, err
    assert err[0].startswith("graphsmile: error: "), err
    return err[0]


def snapshot(d: Path):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [[], ["train"], ["evaluate"], ["predict"], ["synth"], ["inspect"], ["convert-checkpoint"], ["bench"]])
def test_help(cmd, capsys):
    assert main(cmd + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: graphsmile" in out
    if cmd == ["train"]:
        for flag in ("--lr", "--l2", "--batch_size", "--epochs", "--hidden_dim", "--win", "--heter_n_layers", "--drop",
                     "--shift_win", "--textf_mode", "--loss_type", "--lambd", "--backend", "--edge_weights", "--seed",
                     "--seeds", "--amp", "--num_workers", "--valid_from", "--device", "--tensorboard",
                     "--max_train_batches", "--resume"):
            assert flag in out, flag
        flat = " ".join(out.split())
        assert "global batch is B x WORLD_SIZE" in flat and "selected on test" in flat


# --- synth / inspect ----------------------------------------------------------------------------


def test_synth_and_inspect(data_dir, tmp_path, capsys):
    f = tmp_path / "s.pkl"
    assert run("synth", "--dataset", "IEMOCAP4", "--out", f, "--n_dialogues", 8, 3, "--dims", 8, 6, 4, "--seed", 2) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert run("inspect", f, "--dataset", "IEMOCAP4", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    sp = load_dataset(f, "IEMOCAP4", dims="infer")
    assert info["dataset"] == "IEMOCAP4" and info["dims"] == {"text": 8, "visual": 6, "audio": 4}
    assert info["tuple_length"] == 9 and info["layout"][0]["field"] == "videoIDs"
    for name in ("train", "valid", "test"):
        s, ds = info["splits"][name], getattr(sp, name)
        assert s["dialogues"] == len(ds) and s["utterances"] == ds.num_utterances
        assert s["emotion_counts"] == ds.emotion_counts(4).tolist() and len(s["sentiment_counts"]) == 3
        assert sum(s["sentiment_counts"]) == ds.num_utterances
    assert info["splits"]["valid"]["dialogues"] == 0                  # int(0.1 * 8) = 0
    assert info["first_transcript"]["lines"]
    # text form, MELD layout with its dev split
    assert run("inspect", data_dir / "meld.pkl", "--dataset", "MELD", "--valid_from", "validVid") == 0
    out = capsys.readouterr().out
    assert "MELD layout" in out and "14-tuple" in out and "first transcript" in out
    # refuses to overwrite
    code = run("synth", "--dataset", "IEMOCAP4", "--out", f)
    assert "exists" in one_error_line(capsys, 1, code)


# --- train / evaluate / predict -----------------------------------------------------------------


def test_train_outputs(run_dir):
    for name in ("run.json", "results.json", "best.pt", "last.pt", "classification_report.txt", "learning_curves.png",
                 "confusion_matrix.png", "log.txt"):
        assert (run_dir / name).is_file(), name
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "complete" and res["seeds"] == [0] and len(res["history"]) == 2
    for split in ("train", "valid", "test"):
        for k in ("loss", "emo_acc", "emo_f1", "sen_acc", "sen_f1", "sft_acc", "sft_f1"):
            assert k in res["history"][0][split], (split, k)
    assert res["selection"].startswith("best validation weighted F1")
    assert res["summary"]["test_emo_f1"]["n"] == 1
    assert res["class_names"][:2] == ["happy", "sad"] and len(res["confusion_matrix"]["test"]) == 6
    report = (run_dir / "classification_report.txt").read_text()
    assert "happy" in report and "sentiment shift" in report
    # the shift task's [2, 2] pair counts (from the fused loss): rows label, columns prediction
    sft = np.array(res["shift_confusion_matrix"]["test"])
    assert sft.shape == (2, 2) and (sft >= 0).all()
    assert 100 * np.trace(sft) / sft.sum() == pytest.approx(res["test"]["sft_acc"], abs=1e-9)
    assert (run_dir / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_matches_training(run_dir, data_dir, capsys):
    assert run("evaluate", "--checkpoint", run_dir / "best.pt", "--data", data_dir / "tiny.pkl", "--split", "test", "--json") == 0
    ev = json.loads(capsys.readouterr().out)
    res = json.loads((run_dir / "results.json").read_text())
    m = ev["splits"]["test"]["metrics"]
    for k in ("emo_acc", "emo_f1", "sen_acc", "sen_f1", "sft_acc", "sft_f1"):
        assert m[k] == pytest.approx(res["test"][k], abs=1e-9), k
    assert np.array(ev["splits"]["test"]["confusion_matrix"]).sum() == m["utterances"]
    assert ev["splits"]["test"]["shift_confusion_matrix"] == res["shift_confusion_matrix"]["test"]
    assert run("evaluate", "--checkpoint", run_dir / "last.pt", "--data", data_dir / "tiny.pkl", "--split", "all") == 0
    out = capsys.readouterr().out
    assert "train: loss" in out and "valid: loss" in out and "test: loss" in out and "frustrated" in out


def test_predict_csv_and_json(run_dir, data_dir, tmp_path, capsys):
    n_test = load_dataset(data_dir / "tiny.pkl", "IEMOCAP", dims="infer").test.num_utterances
    out_csv = tmp_path / "p.csv"
    assert run("predict", "--checkpoint", run_dir / "best.pt", "--data", data_dir / "tiny.pkl", "--output", out_csv) == 0
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert len(rows) == n_test
    r0 = rows[0]
    assert {"dialogue_id", "utterance_index", "emotion", "sentiment", "p_happy", "transcript", "emotion_label"} <= set(r0)
    probs = np.array([[float(r[f"p_{c}"]) for c in ("happy", "sad", "neutral", "angry", "excited", "frustrated")] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert [int(r["utterance_index"]) for r in rows[:3]] == [0, 1, 2]
    capsys.readouterr()
    assert run("predict", "--checkpoint", run_dir / "best.pt", "--data", data_dir / "tiny.pkl", "--format", "json", "--output", "-") == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs) == n_test and set(recs[0]["emotion_probs"]) >= {"happy", "frustrated"}
    assert recs[0]["emotion"] == max(recs[0]["emotion_probs"], key=recs[0]["emotion_probs"].get)
    # the default output file sits next to the checkpoint; refuses to overwrite it
    assert run("predict", "--checkpoint", run_dir / "best.pt", "--data", data_dir / "tiny.pkl") == 0
    assert (run_dir / "predictions_test.csv").exists()
    capsys.readouterr()
    code = run("predict", "--checkpoint", run_dir / "best.pt", "--data", data_dir / "tiny.pkl")
    assert "--overwrite" in one_error_line(capsys, 1, code)
    # a folder as --output: named as given (not the temporary file it would have written)
    code = run("predict", "--checkpoint", run_dir / "best.pt", "--data", data_dir / "tiny.pkl", "--output", tmp_path,
               "--overwrite")
    assert f"--output {tmp_path} is a folder" in one_error_line(capsys, 1, code)


def test_seeds_mean_std_and_no_validation(data_dir, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert run("train", "--dataset", "IEMOCAP", "--data", data_dir / "tiny.pkl", *TINY, "--epochs", 1, "--seeds", 2,
               "--seed", 7, "--valid_from", "none", "--out", out) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [7, 8] and len(res["per_seed"]) == 2
    s = res["summary"]["test_emo_f1"]
    vals = [r["test"]["emo_f1"] for r in res["per_seed"]]
    assert s["values"] == vals and s["mean"] == pytest.approx(np.mean(vals)) and s["std"] == pytest.approx(np.std(vals, ddof=1))
    for sd in ("seed_7", "seed_8"):
        assert (out / sd / "best.pt").exists() and (out / sd / "results.json").exists()
    assert "mean ± std" in capsys.readouterr().out
    # --split all on a run without a validation split: the splits that exist
    assert run("evaluate", "--checkpoint", out / "seed_7" / "best.pt", "--data", data_dir / "tiny.pkl", "--split", "all",
               "--json") == 0
    assert set(json.loads(capsys.readouterr().out)["splits"]) == {"train", "test"}


def test_demo_without_data(tmp_path, capsys, monkeypatch):
    """No --data: a synthetic set in the dataset's real layout is written into --out, the run
    says loudly that it is synthetic, and the results record it."""
    monkeypatch.setattr(cli, "DEMO_SCALE", 0.05)
    monkeypatch.setitem(cli.DEMO_SETTINGS, "hidden_dim", 8)
    monkeypatch.setitem(cli.DEMO_SETTINGS, "epochs", 1)
    out = tmp_path / "demo"
    assert run("train", "--dataset", "IEMOCAP", "--out", out, "--heter_n_layers", 1, 1, 1, "--max_train_batches", 1,
               "--edge_capacity", 20000, "--win", 2, 2) == 0
    text = capsys.readouterr().out
    assert "SYNTHETIC DATA" in text and "files written:" in text and "synthetic_IEMOCAP.pkl" in text
    res = json.loads((out / "results.json").read_text())
    assert res["synthetic"]["path"].endswith("synthetic_IEMOCAP.pkl") and res["demo"]["changed_from_preset"]["hidden_dim"] == 8
    assert res["config"]["hidden_dim"] == 8 and res["config"]["dim_t"] is None          # real IEMOCAP widths
    # a second demo into the same folder is refused (it holds a run) ...
    code = run("train", "--dataset", "IEMOCAP", "--out", out)
    assert "already holds a run" in one_error_line(capsys, 1, code)
    # ... and --overwrite reuses the synthetic file
    assert run("train", "--dataset", "IEMOCAP", "--out", out, "--overwrite", "--heter_n_layers", 1, 1, 1,
               "--max_train_batches", 1, "--edge_capacity", 20000, "--win", 2, 2) == 0
    assert "(reused)" in capsys.readouterr().out


def test_tensorboard_flag(data_dir, tmp_path, capsys):
    out = tmp_path / "tb"
    assert run("train", "--dataset", "IEMOCAP", "--data", data_dir / "tiny.pkl", *TINY, "--epochs", 1,
               "--max_train_batches", 1, "--tensorboard", "--out", out) == 0
    try:
        import torch.utils.tensorboard  # noqa: F401

        assert (out / "tensorboard").is_dir()
    except Exception:
        assert "TensorBoard is not installed" in capsys.readouterr().err


# --- convert-checkpoint -------------------------------------------------------------------------


def test_convert_original_state_dict(data_dir, tmp_path, capsys):
    cfg = GraphSmileConfig.preset("IEMOCAP", hidden_dim=12, heter_n_layers=(2, 1, 1), win=(3, 3), shift_win=5,
                                  edge_capacity=3000, dim_t=16, dim_v=12, dim_a=10)
    torch.manual_seed(0)
    model = GraphSmile(cfg).eval()
    orig = tmp_path / "graphsmile_iemocap.pth"
    torch.save(model.to_original_state_dict(ddp_prefix=True), orig)     # as the original's DDP run saves it
    out = tmp_path / "converted.pt"
    assert run("convert-checkpoint", orig, out, "--dataset", "IEMOCAP", "--win", 3, 3, "--shift_win", 5) == 0
    text = capsys.readouterr().out
    assert "hidden 12" in text
    # the preset's textf_mode is a guess: the shapes fit textf0..3, sum2 and sum4 alike
    assert "not recoverable" in text and "textf_mode" in text and "same shapes" in text
    ck = load_checkpoint(out)
    assert ck["config"]["heter_n_layers"] == [2, 1, 1] and ck["config"]["edge_capacity"] == 3000
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model"][k], v), k
    assert run("evaluate", "--checkpoint", out, "--data", data_dir / "tiny.pkl", "--json") == 0
    assert json.loads(capsys.readouterr().out)["splits"]["test"]["metrics"]["utterances"] > 0
    # evaluating the unconverted file says what to do
    code = run("evaluate", "--checkpoint", orig, "--data", data_dir / "tiny.pkl")
    assert "convert-checkpoint" in one_error_line(capsys, 1, code)
    # a state dict that does not fit (wrong dataset: 6-class head vs MELD's 7)
    code = run("convert-checkpoint", orig, tmp_path / "x.pt", "--dataset", "MELD")
    assert "classes" in one_error_line(capsys, 1, code)
    assert not (tmp_path / "x.pt").exists()


# --- bench --------------------------------------------------------------------------------------


def test_bench(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(cli, "_bench_dir", lambda: tmp_path / "bench")
    code = run("bench")
    assert "source tree" in one_error_line(capfd, 1, code)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "ops.py").write_text("import sys\nprint('OPS', sys.argv[1:])\nsys.exit(3)\n")
    assert run("bench", "ops", "--quick") == 3                         # the script's exit status
    assert "OPS ['--quick']" in capfd.readouterr().out
    assert run("bench") == 3                                           # all: model.py missing is only noted
    assert "bench/model.py not found" in capfd.readouterr().err


# --- bad input ----------------------------------------------------------------------------------


def test_bad_inputs(run_dir, data_dir, tmp_path, capsys):
    tiny = data_dir / "tiny.pkl"
    # missing file
    code = run("train", "--dataset", "IEMOCAP", "--data", tmp_path / "nope.pkl", "--out", tmp_path / "o1")
    assert "nope.pkl" in one_error_line(capsys, 1, code)
    assert not (tmp_path / "o1").exists()
    # unreadable / not a pickle
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"this is not a pickle")
    code = run("inspect", junk, "--dataset", "IEMOCAP")
    assert "pickle" in one_error_line(capsys, 1, code)
    # 0-d arrays where lists belong (they have __len__ but no length): one error line, no traceback
    with open(tiny, "rb") as fh:
        fields = list(pickle.load(fh, encoding="latin1"))
    vid = fields[-2][0]                                   # the first train dialogue
    for index, value, fragment in ((2, np.array(3), "videoLabels"),          # videoLabels[vid]
                                   (-2, np.array(5), "trainVid")):
        bad_fields = list(fields)
        if index == 2:
            bad_fields[2] = {**fields[2], vid: value}
        else:
            bad_fields[index] = value
        bad = tmp_path / f"zero_d_{fragment}.pkl"
        with open(bad, "wb") as fh:
            pickle.dump(tuple(bad_fields), fh)
        code = run("inspect", bad, "--dataset", "IEMOCAP")
        line = one_error_line(capsys, 1, code)
        assert fragment in line and "shape ()" in line, line
    code = run("train", "--dataset", "IEMOCAP", "--data", junk, *TINY, "--out", tmp_path / "o2")
    assert "pickle" in one_error_line(capsys, 1, code)
    # dataset / layout mismatch: a MELD file read as IEMOCAP
    code = run("train", "--dataset", "IEMOCAP", "--data", data_dir / "meld.pkl", *TINY, "--out", tmp_path / "o3")
    line = one_error_line(capsys, 1, code)
    assert "14 elements" in line and "MELD" in line
    # real-width expectation against a small synthetic file (no --dims infer)
    code = run("train", "--dataset", "IEMOCAP", "--data", tiny, "--out", tmp_path / "o4", "--epochs", 1)
    assert "dim" in one_error_line(capsys, 1, code)
    # unknown option values (argparse choices): exit 2, one line
    code = run("train", "--dataset", "IEMOCAP", "--loss_type", "bogus", "--out", tmp_path / "o5")
    assert "invalid choice" in one_error_line(capsys, 2, code)
    code = run("train", "--dataset", "NOPE", "--out", tmp_path / "o5")
    assert "unknown dataset" in one_error_line(capsys, 2, code)
    code = run("train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--drop", "1.5", "--out", tmp_path / "o5")
    assert "drop" in one_error_line(capsys, 1, code)
    # seeds: 0 .. 2**31 - 1, checked before anything is written
    for bad in ("-1", "99999999999999999999", "x"):
        code = run("train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--seed", bad, "--out", tmp_path / "o6")
        assert "--seed" in one_error_line(capsys, 2, code)
    assert not (tmp_path / "o6").exists()
    # synth: the planted signal and mean length must be finite numbers in range
    for flag, bad in (("--signal", "nan"), ("--signal", "inf"), ("--signal", "-1"), ("--mean_len", "nan"),
                      ("--mean_len", "-5")):
        code = run("synth", "--dataset", "IEMOCAP", "--out", tmp_path / "s.pkl", flag, bad)
        assert flag in one_error_line(capsys, 2, code)
    code = run("synth", "--dataset", "IEMOCAP", "--out", tmp_path / "s.pkl", "--scale", "inf")
    assert "scale must be a finite number > 0" in one_error_line(capsys, 1, code)
    # finite but huge: refused before anything is built (1e308 used to overflow round())
    for big in ("1e308", "1000"):
        code = run("synth", "--dataset", "IEMOCAP", "--out", tmp_path / "s.pkl", "--scale", big)
        assert "dialogues in one split; at most 100,000" in one_error_line(capsys, 1, code)
    code = run("synth", "--dataset", "IEMOCAP", "--out", tmp_path / "s.pkl", "--n_dialogues", "200000", "3")
    assert "n_dialogues: at most 100,000 per split" in one_error_line(capsys, 1, code)
    assert not (tmp_path / "s.pkl").exists()
    # an output folder holding another run: refused, nothing touched
    before = snapshot(run_dir)
    code = run("train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--epochs", 1, "--out", run_dir)
    assert "already holds a run" in one_error_line(capsys, 1, code)
    assert snapshot(run_dir) == before
    # resume with a different model setting: refused, nothing touched
    code = run("train", "--resume", run_dir, "--hidden_dim", "32")
    assert "cannot change --hidden_dim" in one_error_line(capsys, 1, code)
    assert snapshot(run_dir) == before
    # TF32 on a resumed run trained without it: refused, nothing touched
    code = run("train", "--resume", run_dir, "--tf32")
    assert "cannot change --tf32" in one_error_line(capsys, 1, code)
    assert snapshot(run_dir) == before
    # TF32 needs a CUDA device: refused before anything is written (an --overwrite'd run stays)
    code = run("train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--epochs", 1, "--device", "cpu", "--tf32",
               "--out", tmp_path / "o7")
    assert "--tf32: tf32 needs a CUDA device" in one_error_line(capsys, 1, code)
    assert not (tmp_path / "o7").exists()
    code = run("train", "--dataset", "IEMOCAP", "--data", tiny, *TINY, "--epochs", 1, "--device", "cpu", "--tf32",
               "--overwrite", "--out", run_dir)
    assert "--tf32" in one_error_line(capsys, 1, code)
    assert snapshot(run_dir) == before
    code = run("train", "--resume", tmp_path / "o5")
    assert "o5" in one_error_line(capsys, 1, code)
    # a checkpoint of another config / dataset
    code = run("evaluate", "--checkpoint", run_dir / "best.pt", "--data", tiny, "--dataset", "MELD")
    assert "IEMOCAP model" in one_error_line(capsys, 1, code)
    other = tmp_path / "wide.pkl"
    synthesize("IEMOCAP", other, seed=1, dims=(20, 12, 10), n_dialogues=(4, 2), max_len=6)
    code = run("evaluate", "--checkpoint", run_dir / "best.pt", "--data", other)
    assert "20-dim, expected 16" in one_error_line(capsys, 1, code)
    code = run("evaluate", "--checkpoint", run_dir, "--data", tiny)
    assert "best.pt" in one_error_line(capsys, 1, code)
    code = run("evaluate", "--checkpoint", junk, "--data", tiny)
    assert "not a readable torch checkpoint" in one_error_line(capsys, 1, code)
    # a checkpoint with pickled objects: no advice to pass a flag evaluate does not have
    pickled = tmp_path / "pickled.pt"
    torch.save({"kind": "x", "obj": np.zeros(2)}, pickled)
    line = one_error_line(capsys, 1, run("evaluate", "--checkpoint", pickled, "--data", tiny))
    assert "holds pickled Python objects" in line and "--trust_pickle" not in line
    # format versions graphsmile never wrote
    ck = load_checkpoint(run_dir / "best.pt")
    ck.pop("path")
    for version, fragment in (("1", "is not a version graphsmile writes"), (0, "is not a version graphsmile writes"),
                              (10**6, "is newer than this graphsmile understands")):
        torch.save(dict(ck, version=version), tmp_path / "v.pt")
        line = one_error_line(capsys, 1, run("evaluate", "--checkpoint", tmp_path / "v.pt", "--data", tiny))
        assert f"version {version!r} {fragment}" in line, line
    # TF32 needs a CUDA device in evaluate and predict too; no predictions file is written
    code = run("evaluate", "--checkpoint", run_dir / "best.pt", "--data", tiny, "--device", "cpu", "--tf32")
    assert "--tf32: tf32 needs a CUDA device" in one_error_line(capsys, 1, code)
    code = run("predict", "--checkpoint", run_dir / "best.pt", "--data", tiny, "--device", "cpu", "--tf32",
               "--output", tmp_path / "p.csv")
    assert "--tf32: tf32 needs a CUDA device" in one_error_line(capsys, 1, code)
    assert not (tmp_path / "p.csv").exists()
    assert snapshot(run_dir) == before
    # --debug shows the traceback
    code = run("inspect", junk, "--dataset", "IEMOCAP", "--debug")
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("graphsmile: error:")


# --- a real process -----------------------------------------------------------------------------


def test_console_script_subprocess(data_dir, tmp_path):
    exe = shutil.which("graphsmile", path=os.path.dirname(sys.executable))
    base = [exe] if exe else [sys.executable, "-m", "graphsmile"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "sub"
    r = subprocess.run(base + ["train", "--dataset", "IEMOCAP", "--data", str(data_dir / "tiny.pkl"), *TINY, "--epochs", "1",
                               "--out", str(out)], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "epoch 1/1 | train loss" in r.stdout and "files written:" in r.stdout and "\r" not in r.stdout  # no bars when piped
    assert r.stderr.strip() == ""


def test_errors_print_once_under_torchrun(tmp_path, capsys, monkeypatch):
    """Under torchrun (RANK / LOCAL_RANK set) an error every process meets alike (bad arguments,
    a missing file) is printed by the first process of each node only; any other error by
    every process, labelled with its rank beyond rank 0."""
    def bad_args():   # a config value refused by GraphSmileConfig
        return run("train", "--dataset", "IEMOCAP", "--out", tmp_path / "o", "--drop", "1.5")

    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert bad_args() == 1
    assert capsys.readouterr().err == ""
    assert run("inspect", tmp_path / "missing.pkl", "--dataset", "IEMOCAP") == 1
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli, "cmd_inspect", lambda args: (_ for _ in ()).throw(RuntimeError("rank-specific")))
    assert run("inspect", tmp_path / "missing.pkl", "--dataset", "IEMOCAP") == 1
    assert "graphsmile: error (rank 1): rank-specific" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "8")                       # the first process of a second node
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert bad_args() == 1
    assert one_error_line_any(capsys).startswith("graphsmile: error (rank 8): drop must be")
    monkeypatch.setenv("RANK", "0")
    assert bad_args() == 1
    assert "drop must be" in one_error_line(capsys, 1, 1)
    assert not (tmp_path / "o").exists()


def one_error_line_any(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_checkpoint_message(data_dir, tmp_path, capsys):
    code = run("evaluate", "--checkpoint", tmp_path / "missing.pt", "--data", data_dir / "tiny.pkl")
    assert one_error_line(capsys, 1, code) == f"graphsmile: error: checkpoint not found: {tmp_path / 'missing.pt'}"
