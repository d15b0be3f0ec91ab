"""Datasets for GraphSmile: the four feature-pickle layouts, batching, synthetic files.

Typical use::

    from graphsmile.data import load_dataset, make_dataloader, synthesize

    synthesize("IEMOCAP", "data/iemocap_synth.pkl", seed=0)          # or a real file
    splits = load_dataset("data/iemocap_synth.pkl", "IEMOCAP")      # train / valid / test
    loader = make_dataloader(splits.train, batch_size=16, shuffle=True, seed=0)
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:                       # graphsmile.data.Batch
            # model_inputs(): textf0..3, visual, audio [T,B,D]; umask [T,B]; qmask [T,B,S];
            # lengths (list of B ints)
            logit_emo, logit_sen, logit_sft, _ = model(*batch.model_inputs())
            loss_emo = F.nll_loss(F.log_softmax(logit_emo, -1), batch.emotion)  # packed [N]

This package depends only on torch, numpy and the standard library.
"""

from .collate import Batch, BucketBatchSampler, collate_dialogues, make_dataloader
from .datasets import (
    MELD_DEV_IDS,
    DataFormatError,
    DatasetSplits,
    Dialogue,
    DialogueDataset,
    load_dataset,
)
from .formats import (
    DATASET_NAMES,
    FORMATS,
    DatasetFormat,
    dataset_format,
    mosei_emotion_bins,
    mosei_sentiment,
    sentiment_from_emotion,
)
from .synthetic import REAL_SIZES, SynthesisInfo, synthesize

__all__ = [
    "Batch",
    "BucketBatchSampler",
    "collate_dialogues",
    "make_dataloader",
    "MELD_DEV_IDS",
    "DataFormatError",
    "DatasetSplits",
    "Dialogue",
    "DialogueDataset",
    "load_dataset",
    "DATASET_NAMES",
    "FORMATS",
    "DatasetFormat",
    "dataset_format",
    "mosei_emotion_bins",
    "mosei_sentiment",
    "sentiment_from_emotion",
    "REAL_SIZES",
    "SynthesisInfo",
    "synthesize",
]
