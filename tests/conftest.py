import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import graphsmile.ops as ops  # noqa: E402


def available_backends(device="cpu"):
    """Backends that can run on `device` here (the ones compared against dense/loops)."""
    out = ["reference"]
    if device == "cpu" and ops._ext.has_kernel("CPU"):
        out.append("cpu")
    if device == "cuda" and ops._ext.has_kernel("CUDA"):
        out.append("cuda")
    return out


def random_lengths(rng: random.Random, max_dialogues=8, max_len=60):
    return [rng.randint(1, max_len) for _ in range(rng.randint(1, max_dialogues))]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
