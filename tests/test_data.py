"""Tests of graphsmile.data: layouts, validation, splits, collate, sampler, synthetic files.

Everything runs on tiny files written to tmp_path (small dims, few dialogues)."""

from __future__ import annotations

import hashlib
import math
import pickle

import numpy as np
import pytest
import torch

from graphsmile.data import (
    FORMATS,
    REAL_SIZES,
    Batch,
    BucketBatchSampler,
    DataFormatError,
    collate_dialogues,
    dataset_format,
    load_dataset,
    make_dataloader,
    mosei_emotion_bins,
    mosei_sentiment,
    sentiment_from_emotion,
    synthesize,
)

TINY = (6, 4, 5)            # (text, visual, audio) widths of the tiny test files
SMALL_SCALE = {"IEMOCAP": 0.05, "IEMOCAP4": 0.05, "MELD": 0.01, "CMUMOSEI7": 0.004}


def _read_raw(path):
    with open(path, "rb") as f:
        return list(pickle.load(f, encoding="latin1"))


def _write_raw(path, obj):
    with open(path, "wb") as f:
        pickle.dump(tuple(obj), f, protocol=4)
    return path


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """One tiny synthetic file per dataset: {name: (path, SynthesisInfo)}."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for name in FORMATS:
        path = root / f"{name}.pkl"
        out[name] = (path, synthesize(name, path, seed=3, scale=SMALL_SCALE[name], dims=TINY))
    return out


# ---------------------------------------------------------------------------------------------
# label derivations


def _original_mosei_bin(a):
    # transcription of the original dataloader.py's if-chain
    if a < -2:
        return 0
    elif -2 <= a and a < -1:
        return 1
    elif -1 <= a and a < 0:
        return 2
    elif 0 <= a and a <= 0:
        return 3
    elif 0 < a and a <= 1:
        return 4
    elif 1 < a and a <= 2:
        return 5
    elif a > 2:
        return 6


def test_mosei_bins_hand_computed_boundaries():
    scores = [-3, -2.5, -2, -1.5, -1, -0.5, -1e-9, 0.0, -0.0, 1e-9, 0.5, 1, 1.5, 2, 2.5, 3]
    expected = [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6]
    assert mosei_emotion_bins(np.array(scores)).tolist() == expected
    assert mosei_sentiment(np.array(scores)).tolist() == [0] * 7 + [1, 1] + [2] * 7
    # boundaries are asymmetric: -1 is in [-2,-1)? no: [-1, 0) -> 2; +1 is in (0, 1] -> 4
    assert mosei_emotion_bins(np.array([-2.0, -1.0, 1.0, 2.0])).tolist() == [1, 2, 4, 5]


def test_mosei_bins_match_original_if_chain():
    grid = np.concatenate([np.linspace(-3, 3, 601), np.arange(-9, 10) / 3,
                           np.nextafter([-2.0, -1.0, 0.0, 1.0, 2.0], -np.inf),
                           np.nextafter([-2.0, -1.0, 0.0, 1.0, 2.0], np.inf)])
    assert mosei_emotion_bins(grid).tolist() == [_original_mosei_bin(a) for a in grid]
    assert mosei_emotion_bins(grid.astype(np.float32)).tolist() == [
        _original_mosei_bin(float(a)) for a in grid.astype(np.float32)]


def test_iemocap_sentiment_mappings():
    # IEMOCAP: {1,3,5}->0, {2}->1, {0,4}->2
    assert sentiment_from_emotion("IEMOCAP", np.arange(6)).tolist() == [2, 0, 1, 0, 2, 0]
    assert sentiment_from_emotion("IEMOCAP4", np.arange(4)).tolist() == [2, 0, 1, 0]
    assert sentiment_from_emotion("iemocap", [5, 5, 2]).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="MELD sentiments are not derived"):
        sentiment_from_emotion("MELD", [0])


def test_dataset_format_names():
    assert dataset_format("iemocap6").name == "IEMOCAP"
    assert dataset_format("CMU-MOSEI").name == "CMUMOSEI7"
    assert [FORMATS[n].tuple_len for n in FORMATS] == [12, 9, 14, 9]
    assert FORMATS["MELD"].sentiment_names == ("neutral", "positive", "negative")
    assert len(FORMATS["CMUMOSEI7"].class_names) == 7
    with pytest.raises(ValueError, match="unknown dataset 'DAILYDIALOG'.*IEMOCAP4"):
        dataset_format("DAILYDIALOG")


# ---------------------------------------------------------------------------------------------
# synthesize -> load round trip


@pytest.mark.parametrize("name", list(FORMATS))
def test_round_trip(tiny_files, name):
    path, info = tiny_files[name]
    fmt = FORMATS[name]
    raw = dict(zip(fmt.fields, _read_raw(path)))
    splits = load_dataset(path, name, dims=TINY)

    assert splits.dataset == name and splits.dims == TINY
    assert splits.class_names == fmt.class_names and splits.num_emotions == fmt.num_emotions
    train_vid = list(raw["trainVid"])
    n_valid = int(0.1 * len(train_vid))
    assert splits.valid.ids == train_vid[:n_valid]
    assert splits.train.ids == train_vid[n_valid:]
    assert splits.test.ids == list(raw["testVid"])
    counts = sum(ds.emotion_counts(fmt.num_emotions)
                 for ds in (splits.train, splits.valid, splits.test))
    np.testing.assert_array_equal(counts, info.class_counts)   # loader bins == generator's
    all_lengths = [n for part in info.lengths.values() for n in part]
    assert (splits.train.num_utterances + splits.valid.num_utterances
            + splits.test.num_utterances) == sum(all_lengths)

    for ds in (splits.train, splits.valid, splits.test):
        for d in ds:
            L = len(d)
            assert L == len(raw["videoLabels"][d.id]) >= 1
            for t in d.text:
                assert t.shape == (L, TINY[0]) and t.dtype == torch.float32
            assert d.visual.shape == (L, TINY[1]) and d.visual.dtype == torch.float32
            assert d.audio.shape == (L, TINY[2]) and d.audio.dtype == torch.float32
            assert d.speakers.shape == (L, fmt.speaker_dim)
            assert torch.all(d.speakers.sum(1) == 1)
            assert d.emotion.dtype == torch.int64 and d.sentiment.dtype == torch.int64
            assert d.transcript == list(raw["videoSentence"][d.id])
            np.testing.assert_array_equal(
                d.audio.numpy(), np.asarray(raw["videoAudio"][d.id], dtype=np.float32))
            if fmt.continuous_labels:
                scores = np.asarray(raw["videoLabels"][d.id])
                assert d.emotion.tolist() == [_original_mosei_bin(a) for a in scores]
                assert d.sentiment.tolist() == mosei_sentiment(scores).tolist()
                assert torch.equal(d.score, torch.tensor(scores, dtype=torch.float32))
            else:
                assert d.emotion.tolist() == list(raw["videoLabels"][d.id])
                assert d.score is None
            if len(fmt.text_fields) == 1:
                assert all(t is d.text[0] for t in d.text)
            else:
                assert len({id(t) for t in d.text}) == 4
                assert not torch.equal(d.text[0], d.text[1])
                np.testing.assert_array_equal(
                    d.text[2].numpy(), np.asarray(raw["videoText2"][d.id], dtype=np.float32))
            if name == "MELD":
                assert d.sentiment.tolist() == list(raw["videoSentiments"][d.id])
            elif name in ("IEMOCAP", "IEMOCAP4"):
                spk = np.asarray(raw["videoSpeakers"][d.id])
                assert d.speakers[:, 0].bool().tolist() == (spk == "M").tolist()
                assert d.sentiment.tolist() == sentiment_from_emotion(name, d.emotion).tolist()


def test_written_layouts_match_the_originals(tiny_files):
    raw = _read_raw(tiny_files["IEMOCAP"][0])
    assert len(raw) == 12
    vid = raw[10][0]
    assert isinstance(vid, str) and vid.startswith("Ses0") and vid in raw[2]
    assert set(raw[1][vid]) <= {"M", "F"}
    assert isinstance(raw[8][vid], list) and raw[8][vid][0].dtype == np.float64   # visual
    assert raw[3][vid][0].dtype == np.float32 and raw[3][vid][0].shape == (TINY[0],)
    assert all(isinstance(v, int) for v in raw[2][vid])

    meld = _read_raw(tiny_files["MELD"][0])
    assert len(meld) == 14 and meld[13] is None
    assert all(isinstance(v, int) for v in meld[11] + meld[12])
    one_hot = np.asarray(meld[1][meld[11][0]])
    assert one_hot.shape[1] == 9 and (one_hot.sum(1) == 1).all()
    assert set(v for d in meld[3].values() for v in d) <= {0, 1, 2}
    visual = np.array([r for d in meld[9].values() for r in d])
    assert 0 < (np.abs(visual).sum(1) == 0).mean() < 1               # some all-zero vectors

    mosei = _read_raw(tiny_files["CMUMOSEI7"][0])
    assert len(mosei) == 9
    scores = np.array([a for d in mosei[2].values() for a in d])
    assert scores.min() >= -3 and scores.max() <= 3 and (scores == 0).any()
    assert np.allclose(scores * 3, np.round(scores * 3))      # the annotators' 1/3 grid


@pytest.mark.parametrize("name", list(FORMATS))
def test_real_sizes_at_scale_one(tmp_path, name):
    info = synthesize(name, tmp_path / "full.pkl", seed=0, dims=(2, 2, 2))
    sizes = REAL_SIZES[name]
    for split in sizes.splits:
        assert len(info.ids[split.name]) == split.dialogues
        assert sum(info.lengths[split.name]) == split.utterances
    lengths = [n for part in info.lengths.values() for n in part]
    assert min(lengths) == sizes.min_len and max(lengths) == sizes.max_len
    share = info.class_counts / info.class_counts.sum()
    target = np.array(sizes.class_weights) / sum(sizes.class_weights)
    assert np.abs(share - target).max() < 0.03
    if name == "IEMOCAP":
        assert info.n_utterances == 7433 and abs(np.mean(lengths) - 49.2) < 0.1
    if name == "MELD":
        assert info.ids["train"] == list(range(1039))
        dev = info.ids["dev"]
        assert dev[0] == 1039 and dev[-1] == 1152 and len(dev) == 113
        assert info.ids["test"] == list(range(1153, 1433))
        splits = load_dataset(info.path, name, dims=(2, 2, 2), valid_from="validVid")
        assert splits.valid.ids == dev and len(splits.train) == 1039


def test_length_overrides(tmp_path):
    info = synthesize("IEMOCAP", tmp_path / "a.pkl", dims=TINY, n_dialogues=(3, 2), length=40)
    assert info.lengths == {"train": [40] * 3, "test": [40] * 2}
    info = synthesize("MELD", tmp_path / "b.pkl", dims=TINY, n_dialogues=(20, 2, 3),
                      min_len=5, max_len=7)
    lengths = [n for part in info.lengths.values() for n in part]
    assert min(lengths) >= 5 and max(lengths) <= 7 and len(lengths) == 25
    with pytest.raises(ValueError, match=r"one count per split \(train, dev, test\)"):
        synthesize("MELD", tmp_path / "c.pkl", dims=TINY, n_dialogues=(3, 2))
    with pytest.raises(ValueError, match="min_len <= max_len"):
        synthesize("IEMOCAP", tmp_path / "c.pkl", dims=TINY, min_len=9, max_len=4)


def test_synthesize_is_deterministic(tmp_path):
    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    kw = dict(scale=0.05, dims=TINY)
    a = synthesize("IEMOCAP", tmp_path / "a.pkl", seed=7, **kw)
    b = synthesize("IEMOCAP", tmp_path / "b.pkl", seed=7, **kw)
    c = synthesize("IEMOCAP", tmp_path / "c.pkl", seed=8, **kw)
    assert digest(tmp_path / "a.pkl") == digest(tmp_path / "b.pkl")
    assert digest(tmp_path / "a.pkl") != digest(tmp_path / "c.pkl")
    assert a.ids == b.ids and a.lengths == b.lengths


def test_py2_style_pickle_needs_latin1(tmp_path):
    path = tmp_path / "py2.pkl"
    synthesize("IEMOCAP", path, seed=1, scale=0.05, dims=TINY, py2_strings=True)
    with open(path, "rb") as f:
        with pytest.raises(UnicodeDecodeError):
            pickle.load(f)                           # the default ASCII decoding fails
    splits = load_dataset(path, "IEMOCAP", dims=TINY)
    text = " ".join(s for ds in (splits.train, splits.valid, splits.test) for d in ds
                    for s in d.transcript)
    assert any(ord(ch) > 127 for ch in text)         # latin1 words decoded as str
    assert all(isinstance(v, str) for v in splits.test.ids)
    synthesize("IEMOCAP", tmp_path / "py3.pkl", seed=1, scale=0.05, dims=TINY)
    ref = load_dataset(tmp_path / "py3.pkl", "IEMOCAP", dims=TINY)   # same seed, protocol 4
    assert splits.test.ids == ref.test.ids
    assert torch.equal(splits.test[0].visual, ref.test[0].visual)
    assert splits.test[0].transcript == ref.test[0].transcript


def test_hand_written_original_style_file(tmp_path):
    """A file as the originals wrote it: float64 2-D arrays, plain lists, numpy int labels,
    numpy string speakers, sets of ids (sorted by the loader)."""
    rng = np.random.default_rng(0)
    lengths = {"Ses01F_impro01": 3, "Ses01M_script02_1": 2, "Ses05F_impro03": 4}
    spk, lab, t, a, v, s = {}, {}, {}, {}, {}, {}
    for k, n in lengths.items():
        spk[k] = np.array(["M", "F"] * 3)[:n]
        lab[k] = np.arange(n, dtype=np.int32) % 6
        t[k] = rng.standard_normal((n, 1024)).tolist()                  # plain lists
        a[k] = rng.standard_normal((n, 100))                             # float64 2-D array
        v[k] = [rng.standard_normal(512) for _ in range(n)]              # list of float64
        s[k] = [f"caf\xe9 {i}" for i in range(n)]
    obj = (dict.fromkeys(lengths), spk, lab, t, a, v, s,
           {"Ses01M_script02_1", "Ses01F_impro01"}, ["Ses05F_impro03"])
    path = _write_raw(tmp_path / "orig.pkl", obj)
    splits = load_dataset(path, "IEMOCAP4", valid_fraction=0.5)
    assert splits.valid.ids == ["Ses01F_impro01"] and splits.train.ids == ["Ses01M_script02_1"]
    d = splits.test[0]
    assert d.text[0].dtype == torch.float32
    np.testing.assert_allclose(d.audio.numpy(), a["Ses05F_impro03"], rtol=1e-6)
    np.testing.assert_allclose(d.text[3].numpy(), np.array(t["Ses05F_impro03"]), rtol=1e-6)
    assert d.speakers.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]
    assert d.emotion.tolist() == [0, 1, 2, 3]
    assert d.sentiment.tolist() == [2, 0, 1, 0]
    assert d.transcript[0] == "caf\xe9 0"


def test_dims_override_and_infer(tiny_files):
    path, _ = tiny_files["IEMOCAP"]
    with pytest.raises(DataFormatError) as e:
        load_dataset(path, "IEMOCAP")
    msg = str(e.value)
    assert str(path) in msg and "videoText0" in msg and "6-dim, expected 1024" in msg
    assert "dims=" in msg and e.value.field == "videoText0" and e.value.dialogue is not None
    assert load_dataset(path, "IEMOCAP", dims="infer").dims == TINY
    with pytest.raises(DataFormatError, match=r"videoVisual: vectors are 4-dim, expected 7"):
        load_dataset(path, "IEMOCAP", dims=(6, 7, 5))
    with pytest.raises(ValueError, match="dims must be"):
        load_dataset(path, "IEMOCAP", dims=(6, 4))


def test_meld_valid_from(tmp_path):
    info = synthesize("MELD", tmp_path / "m.pkl", seed=2, n_dialogues=(30, 4, 5), dims=TINY)
    dev = info.ids["dev"]
    s = load_dataset(info.path, "MELD", dims=TINY, valid_from="validVid")   # element 14 None
    assert s.valid.ids == dev and s.train.ids == info.ids["train"]
    synthesize("MELD", tmp_path / "m2.pkl", seed=2, n_dialogues=(30, 4, 5), dims=TINY,
               meld_valid_vid=True)
    assert _read_raw(tmp_path / "m2.pkl")[13] == dev
    s2 = load_dataset(tmp_path / "m2.pkl", "MELD", dims=TINY, valid_from="validVid")
    assert s2.valid.ids == dev and s2.train.ids == info.ids["train"]
    s3 = load_dataset(info.path, "MELD", dims=TINY)                        # train10
    assert s3.valid.ids == list(range(3)) and len(s3.train) == 31
    assert dev[0] == 1039 and info.ids["test"][0] == 1153
    s4 = load_dataset(info.path, "MELD", dims=TINY, valid_from="none")
    assert len(s4.valid) == 0 and len(s4.train) == 34
    with pytest.raises(ValueError, match="validVid element"):
        load_dataset(info.path, "IEMOCAP", valid_from="validVid")
    with pytest.raises(ValueError, match="valid_from must be one of"):
        load_dataset(info.path, "MELD", valid_from="dev")
    # an empty validVid, asked for: refused (it would silently leave no validation split)
    raw = _read_raw(tmp_path / "m2.pkl")
    raw[13] = []
    empty = _write_raw(tmp_path / "m3.pkl", raw)
    with pytest.raises(DataFormatError, match="validVid is empty; use valid_from='train10'"):
        load_dataset(empty, "MELD", dims=TINY, valid_from="validVid")
    assert len(load_dataset(empty, "MELD", dims=TINY).valid) == 3          # train10 still reads it


# ---------------------------------------------------------------------------------------------
# malformed files


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_dataset(tmp_path / "nope.pkl", "MELD")


def test_not_a_pickle(tmp_path):
    p = tmp_path / "junk.pkl"
    p.write_bytes(b"this is not a pickle at all\n")
    with pytest.raises(DataFormatError, match=r"junk\.pkl: not a readable pickle.*12-tuple"):
        load_dataset(p, "IEMOCAP")
    p.write_bytes(b"")
    with pytest.raises(DataFormatError, match="not a readable pickle.*EOFError"):
        load_dataset(p, "IEMOCAP")
    _write_raw(tmp_path / "d.pkl", [])
    with open(tmp_path / "d.pkl", "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(DataFormatError, match="expected a pickled 9-tuple.*got dict"):
        load_dataset(tmp_path / "d.pkl", "CMUMOSEI7")


def test_wrong_tuple_length_names_the_lookalike(tiny_files):
    path4, _ = tiny_files["IEMOCAP4"]
    with pytest.raises(DataFormatError) as e:
        load_dataset(path4, "IEMOCAP", dims=TINY)
    msg = str(e.value)
    assert "9 elements" in msg and "IEMOCAP4 / CMUMOSEI7" in msg and "expects 12" in msg
    with pytest.raises(DataFormatError, match=r"14 elements \(that is the length of the MELD"):
        load_dataset(tiny_files["MELD"][0], "CMUMOSEI7", dims=TINY)


def _mutated(tmp_path, tiny_files, name, fn):
    path, _ = tiny_files[name]
    fmt = FORMATS[name]
    raw = dict(zip(fmt.fields, _read_raw(path)))
    vid = raw["trainVid"][-1]
    fn(raw, vid)
    out = _write_raw(tmp_path / f"bad_{name}.pkl", [raw[f] for f in fmt.fields])
    return out, vid


def _expect_error(path, name, *fragments, dims=TINY):
    with pytest.raises(DataFormatError) as e:
        load_dataset(path, name, dims=dims)
    msg = str(e.value)
    for frag in (str(path),) + fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return e.value


def test_missing_ids(tmp_path, tiny_files):
    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP",
                         lambda raw, vid: raw["videoAudio"].pop(vid))
    err = _expect_error(path, "IEMOCAP", "videoAudio", repr(vid), "trainVid",
                        "element 7 of the IEMOCAP tuple")
    assert err.field == "videoAudio"
    path, _ = _mutated(tmp_path, tiny_files, "MELD",
                       lambda raw, vid: raw["testVid"].append(99999))
    _expect_error(path, "MELD", "99999", "testVid", "missing from this dict")


def test_overlapping_and_duplicate_ids(tmp_path, tiny_files):
    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP",
                         lambda raw, vid: raw["testVid"].append(vid))
    _expect_error(path, "IEMOCAP", "both trainVid and testVid", repr(vid))
    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP4",
                         lambda raw, vid: raw["trainVid"].append(vid))
    _expect_error(path, "IEMOCAP4", "trainVid", "listed twice", repr(vid))


def test_field_not_a_dict(tmp_path, tiny_files):
    path, _ = _mutated(tmp_path, tiny_files, "CMUMOSEI7",
                       lambda raw, vid: raw.__setitem__("videoVisual", [1, 2]))
    _expect_error(path, "CMUMOSEI7", "videoVisual", "element 5 should be a dict", "got list")


@pytest.mark.parametrize("field", ["videoAudio", "videoText2", "videoSpeakers",
                                   "videoSentence", "videoSentiments"])
def test_utterance_count_mismatch(tmp_path, tiny_files, field):
    def drop_last(raw, vid):
        raw[field][vid] = list(raw[field][vid])[:-1]

    name = "MELD" if field == "videoSentiments" else "IEMOCAP"
    path, vid = _mutated(tmp_path, tiny_files, name, drop_last)
    n = len(_read_raw(tiny_files[name][0])[2][vid])
    err = _expect_error(path, name, f"dialogue {vid!r}", field,
                        f"has {n - 1} utterances but videoLabels has {n}")
    assert err.dialogue == vid and err.field == field


@pytest.mark.parametrize("name,value,fragment", [
    ("IEMOCAP", 6, "label 6 at utterance 0 is out of range 0..5"),
    ("IEMOCAP4", -1, "label -1 at utterance 0 is out of range 0..3"),
    ("MELD", 7, "label 7 at utterance 0 is out of range 0..6"),
    ("IEMOCAP", 1.5, "label 1.5 at utterance 0 is not an integer"),
    ("CMUMOSEI7", 3.5, "score 3.5 at utterance 0 is outside [-3, 3]"),
    ("CMUMOSEI7", float("nan"), "score nan at utterance 0 is not finite"),
    ("CMUMOSEI7", float("inf"), "score inf at utterance 0 is not finite"),
])
def test_bad_labels(tmp_path, tiny_files, name, value, fragment):
    def set_first(raw, vid):
        raw["videoLabels"][vid] = [value] + list(raw["videoLabels"][vid])[1:]

    path, vid = _mutated(tmp_path, tiny_files, name, set_first)
    _expect_error(path, name, f"dialogue {vid!r}", "videoLabels", fragment)


@pytest.mark.parametrize("value,fragment", [
    (1e20, "label 1e+20 at utterance 0 is out of range 0..5"),        # not wrapped by an int64 cast
    (np.uint64(2**63 + 1), f"label {2**63 + 1} at utterance 0 is out of range 0..5"),
])
def test_huge_labels_named_as_given(tmp_path, tiny_files, value, fragment):
    def set_first(raw, vid):
        rest = np.asarray(raw["videoLabels"][vid][1:])
        raw["videoLabels"][vid] = np.concatenate([np.asarray([value]), rest.astype(np.asarray([value]).dtype)])

    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP", set_first)
    _expect_error(path, "IEMOCAP", f"dialogue {vid!r}", "videoLabels", fragment)


@pytest.mark.parametrize("value", [["0.5"], [True]])
def test_mosei_scores_must_be_numbers(tmp_path, tiny_files, value):
    def set_all(raw, vid):
        raw["videoLabels"][vid] = value * len(raw["videoLabels"][vid])

    path, vid = _mutated(tmp_path, tiny_files, "CMUMOSEI7", set_all)
    _expect_error(path, "CMUMOSEI7", f"dialogue {vid!r}", "videoLabels", "(numbers), got dtype")


@pytest.mark.parametrize("field", ["trainVid", "testVid"])
@pytest.mark.parametrize("shape", [(), (1, 1)])
def test_id_list_not_one_dimensional(tmp_path, tiny_files, field, shape):
    path, _ = _mutated(tmp_path, tiny_files, "IEMOCAP",
                       lambda raw, vid: raw.__setitem__(field, np.full(shape, 5)))
    _expect_error(path, "IEMOCAP", field, "expected a list of dialogue ids",
                  f"array of shape {shape}")


def test_transcript_not_a_list(tmp_path, tiny_files):
    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP",
                         lambda raw, vid: raw["videoSentence"].__setitem__(vid, np.array("hello")))
    _expect_error(path, "IEMOCAP", f"dialogue {vid!r}", "videoSentence",
                  "utterance strings, got an array of shape ()")


def test_bad_meld_sentiment(tmp_path, tiny_files):
    def bad(raw, vid):
        raw["videoSentiments"][vid] = [3] + list(raw["videoSentiments"][vid])[1:]

    path, vid = _mutated(tmp_path, tiny_files, "MELD", bad)
    _expect_error(path, "MELD", "videoSentiments", "out of range 0..2", repr(vid))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_non_finite_features(tmp_path, tiny_files, bad):
    def poison(raw, vid):
        rows = [np.array(r, dtype=np.float64) for r in raw["videoVisual"][vid]]
        rows[-1][2] = bad
        raw["videoVisual"][vid] = rows

    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP", poison)
    n = len(_read_raw(tiny_files["IEMOCAP"][0])[2][vid])
    _expect_error(path, "IEMOCAP", "videoVisual", f"dialogue {vid!r}", "non-finite",
                  f"at utterance {n - 1}, component 2")


@pytest.mark.parametrize("kind", ["str", "bool", "complex", "one_bool_row", "object_str"])
def test_non_numeric_features(tmp_path, tiny_files, kind):
    """Strings (numpy would parse '0.5'), bools and complex numbers (numpy would drop the
    imaginary part) are not features."""
    def retype(raw, vid):
        rows = [np.asarray(r, dtype=np.float64) for r in raw["videoAudio"][vid]]
        if kind == "one_bool_row":      # numpy would promote it with the float rows
            raw["videoAudio"][vid] = [rows[0] > 0] + rows[1:]
            return
        if kind == "object_str":        # one string inside an object array
            arr = np.array(rows, dtype=object)
            arr[0, 0] = "0.5"
            raw["videoAudio"][vid] = arr
            return
        conv = {"str": lambda r: r.astype(str), "bool": lambda r: r > 0, "complex": lambda r: r + 1j}[kind]
        raw["videoAudio"][vid] = [conv(r) for r in rows]

    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP", retype)
    _expect_error(path, "IEMOCAP", "videoAudio", f"dialogue {vid!r}", "features must be real numbers")


def test_empty_dialogue(tmp_path, tiny_files):
    def empty(raw, vid):
        for f in FORMATS["CMUMOSEI7"].dict_fields:
            raw[f][vid] = []

    path, vid = _mutated(tmp_path, tiny_files, "CMUMOSEI7", empty)
    _expect_error(path, "CMUMOSEI7", f"dialogue {vid!r}", "empty dialogue")


def test_ragged_and_bad_speakers(tmp_path, tiny_files):
    def ragged(raw, vid):
        rows = list(raw["videoAudio"][vid])
        rows[0] = rows[0][:-1]
        raw["videoAudio"][vid] = rows

    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP4", ragged)
    _expect_error(path, "IEMOCAP4", "videoAudio", "different lengths [4, 5]")

    def bad_speaker(raw, vid):
        raw["videoSpeakers"][vid] = ["X"] + list(raw["videoSpeakers"][vid])[1:]

    path, vid = _mutated(tmp_path, tiny_files, "IEMOCAP", bad_speaker)
    _expect_error(path, "IEMOCAP", "videoSpeakers", "speaker 'X' at utterance 0",
                  "expected 'M' or 'F'")

    def meld_width(raw, vid):
        raw["videoSpeakers"][vid] = [r[:8] for r in raw["videoSpeakers"][vid]]

    path, vid = _mutated(tmp_path, tiny_files, "MELD", meld_width)
    _expect_error(path, "MELD", "videoSpeakers", "8-dim, expected 9")


def test_error_is_value_error():
    err = DataFormatError("boom", path="f.pkl", dialogue=3, field="videoAudio")
    assert isinstance(err, ValueError)
    assert str(err) == "f.pkl: dialogue 3: videoAudio: boom"


# ---------------------------------------------------------------------------------------------
# collate


def test_collate_shapes_padding_and_packing(tiny_files):
    path, _ = tiny_files["IEMOCAP"]
    splits = load_dataset(path, "IEMOCAP", dims=TINY)
    dias = sorted(list(splits.train) + list(splits.test), key=len)
    picked = [dias[-1], dias[0], dias[len(dias) // 2]]
    lengths = [len(d) for d in picked]
    T, B, N = max(lengths), 3, sum(lengths)
    b = collate_dialogues(picked)

    assert isinstance(b, Batch) and b.lengths == lengths and b.ids == [d.id for d in picked]
    assert b.batch_size == B and b.num_utterances == N and b.max_len == T
    assert b.textf0.shape == (T, B, TINY[0]) and b.textf3.shape == (T, B, TINY[0])
    assert b.visual.shape == (T, B, TINY[1]) and b.audio.shape == (T, B, TINY[2])
    assert b.qmask.shape == (T, B, 2) and b.umask.shape == (T, B)
    assert b.emotion.shape == (N,) and b.sentiment.shape == (N,)
    assert b.emotion_padded.shape == (T, B)
    assert b.umask.sum(0).tolist() == lengths
    for j, d in enumerate(picked):
        L = len(d)
        assert torch.equal(b.textf2[:L, j], d.text[2])
        assert torch.equal(b.visual[:L, j], d.visual)
        assert torch.equal(b.qmask[:L, j], d.speakers)
        assert torch.all(b.audio[L:, j] == 0) and torch.all(b.qmask[L:, j] == 0)
        assert torch.all(b.emotion_padded[L:, j] == -1)
        assert torch.equal(b.emotion_padded[:L, j], d.emotion)
    assert torch.equal(b.emotion, torch.cat([d.emotion for d in picked]))
    assert torch.equal(b.sentiment, torch.cat([d.sentiment for d in picked]))
    # packed order == the model's packing of the padded tensors (dialogue-major)
    packed = torch.cat([b.audio[:L, j] for j, L in enumerate(lengths)])
    assert torch.equal(packed, torch.cat([d.audio for d in picked]))

    inputs = b.model_inputs()
    assert len(inputs) == 9 and inputs[0] is b.textf0 and inputs[4] is b.visual
    assert inputs[5] is b.audio and inputs[6] is b.umask and inputs[7] is b.qmask
    assert inputs[8] == lengths
    orig = b.original_tuple()
    assert orig[6] is b.qmask and orig[7] is b.umask and orig[10] == b.ids
    assert orig[8].min() >= 0 and torch.equal(orig[8][:lengths[0], 0], picked[0].emotion)


def test_collate_shared_text_and_to(tiny_files):
    path, _ = tiny_files["CMUMOSEI7"]
    splits = load_dataset(path, "CMUMOSEI7", dims=TINY)
    b = collate_dialogues(list(splits.train)[:4])
    assert b.textf1 is b.textf0 and b.textf3 is b.textf0
    assert b.score is not None and b.score.shape == (b.num_utterances,)
    m = b.to("meta")
    assert m.textf0.device.type == "meta" and m.textf3 is m.textf0
    assert m.emotion.device.type == "meta" and m.lengths == b.lengths
    with pytest.raises(ValueError, match="at least one dialogue"):
        collate_dialogues([])


def test_make_dataloader_covers_each_dialogue_once(tiny_files):
    path, _ = tiny_files["MELD"]
    splits = load_dataset(path, "MELD", dims=TINY)
    loader = make_dataloader(splits.train, batch_size=4, shuffle=True, seed=1)
    loader.batch_sampler.set_epoch(3)
    seen = []
    for batch in loader:
        assert isinstance(batch, Batch) and batch.qmask.shape[2] == 9
        assert batch.emotion.shape[0] == sum(batch.lengths)
        seen += batch.ids
    assert sorted(seen) == sorted(splits.train.ids)


# ---------------------------------------------------------------------------------------------
# sampler


def _lengths(n, seed=0):
    return np.random.default_rng(seed).integers(1, 100, size=n).tolist()


def test_sampler_deterministic_and_complete():
    lengths = _lengths(203)
    s1 = BucketBatchSampler(lengths, 8, shuffle=True, seed=5, bucket_batches=4)
    s2 = BucketBatchSampler(lengths, 8, shuffle=True, seed=5, bucket_batches=4)
    s1.set_epoch(2)
    s2.set_epoch(2)
    b1, b2 = list(s1), list(s2)
    assert b1 == b2 and len(b1) == len(s1) == math.ceil(203 / 8)
    assert sorted(i for b in b1 for i in b) == list(range(203))
    assert all(len(b) <= 8 for b in b1) and sum(len(b) < 8 for b in b1) == 1
    s2.set_epoch(3)
    assert list(s2) != b1
    s3 = BucketBatchSampler(lengths, 8, shuffle=True, seed=6, bucket_batches=4)
    s3.set_epoch(2)
    assert list(s3) != b1
    # no shuffle: dataset-order chunks, sorted by length inside
    plain = list(BucketBatchSampler(lengths, 8, shuffle=False, bucket_batches=None))
    assert plain[0] == list(range(8))


def test_sampler_buckets_reduce_padding():
    lengths = np.array(_lengths(400, seed=1))

    def padded(sampler):
        return sum(len(b) * lengths[b].max() for b in sampler)

    bucket = BucketBatchSampler(lengths, 16, seed=0, bucket_batches=25)
    plain = BucketBatchSampler(lengths, 16, seed=0, bucket_batches=None)
    assert padded(bucket) < 0.75 * padded(plain)
    for b in bucket:   # sorted inside a batch: lengths non-increasing
        assert (np.diff(lengths[b]) <= 0).all()


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_ddp_partition(drop_last):
    n, bs, R = 50, 4, 5         # 13 batches (the last one of 2), 12 full ones
    lengths = _lengths(n, seed=2)
    ranks = [BucketBatchSampler(lengths, bs, shuffle=True, seed=9, drop_last=drop_last,
                                num_replicas=R, rank=r, bucket_batches=3) for r in range(R)]
    for s in ranks:
        s.set_epoch(1)
    per_rank = [list(s) for s in ranks]
    counts = {len(p) for p in per_rank}
    assert counts == {len(ranks[0])}                      # same number of batches everywhere
    flat = [i for p in per_rank for b in p for i in b]
    if drop_last:
        assert len(ranks[0]) == 12 // R == 2
        assert len(flat) == len(set(flat)) == 10 * bs    # disjoint, full batches only
        assert all(len(b) == bs for p in per_rank for b in p)
    else:
        assert len(ranks[0]) == math.ceil(13 / R) == 3
        assert set(flat) == set(range(n))                 # everything seen, padded by repeats
    glob = ranks[0].global_batches()
    if not drop_last:                                     # the first 2 batches repeated
        assert len(flat) == n + len(glob[0]) + len(glob[1])
    for r, p in enumerate(per_rank):
        assert p[:len(glob[r::R])] == glob[r::R][:len(p)]


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="rank must be in"):
        BucketBatchSampler([1, 2], 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        BucketBatchSampler([1, 2], 0)
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="bucket_batches must be None or an int >= 1"):
            BucketBatchSampler([1, 2], 1, bucket_batches=bad)


# ---------------------------------------------------------------------------------------------
# the planted signal


def _arrays(split):
    t = torch.cat([d.text[0] for d in split]).numpy()
    v = torch.cat([d.visual for d in split]).numpy()
    a = torch.cat([d.audio for d in split]).numpy()
    y = torch.cat([d.emotion for d in split]).numpy()
    prev = []        # the same speaker's previous utterance (zeros for a speaker's first)
    for d in split:
        f = np.hstack([d.text[0].numpy(), d.visual.numpy(), d.audio.numpy()])
        spk = d.speakers.argmax(1).numpy()
        idx = np.full(len(d), -1)
        for s in np.unique(spk):
            pos = np.flatnonzero(spk == s)
            idx[pos[1:]] = pos[:-1]
        prev.append(np.where(idx[:, None] >= 0, f[idx], 0.0))
    allf = np.hstack([t, v, a])
    return {"text": t, "visual": v, "audio": a, "all": allf,
            "context": np.hstack([allf, np.vstack(prev)])}, y


@pytest.mark.parametrize("signal", [1.0, 0.0])
def test_planted_signal_needs_all_modalities_and_context(tmp_path, signal):
    # Linear discriminant analysis: closed form, fast, and the right linear model for
    # Gaussian class clusters with a shared covariance (what the generator plants).
    da = pytest.importorskip("sklearn.discriminant_analysis")
    path = tmp_path / "sig.pkl"
    synthesize("IEMOCAP", path, seed=11, scale=0.3, dims=(16, 8, 12), signal=signal)
    splits = load_dataset(path, "IEMOCAP", dims=(16, 8, 12), valid_from="none")
    xtr, ytr = _arrays(splits.train)
    xte, yte = _arrays(splits.test)
    chance = np.bincount(yte).max() / len(yte)
    acc = {k: da.LinearDiscriminantAnalysis().fit(xtr[k], ytr).score(xte[k], yte)
           for k in xtr}
    if signal == 0.0:
        assert max(acc.values()) < chance + 0.08, acc
        return
    singles = [acc["text"], acc["visual"], acc["audio"]]
    assert min(singles) > chance + 0.15, (acc, chance)
    assert acc["all"] > max(singles) + 0.1, acc
    assert acc["context"] > acc["all"] + 0.02, acc
