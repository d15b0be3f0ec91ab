"""graphsmile: a fast, faithful implementation of GraphSmile (TPAMI 2025) for multimodal emotion
recognition in conversation. See README.md."""
__version__ = "0.1.0"

from . import ops  # noqa: E402,F401
