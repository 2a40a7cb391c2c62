"""The few demucs internals we lean on, wrapped in one place so an upgrade breaks here only.

demucs 4.1's `get_model(name, repo=dir)` only reads `.th` pickles from a local folder; its
safetensors loader (`demucs.hf.load_safetensors_model`) is only reached through a hub download.
`load_local_bag` rebuilds what `get_model` does (`AnyModelRepo` over a model repo and a
`BagOnlyRepo`) with a model repo that also reads local `.safetensors`, so a folder copied from a
hub cache loads with no network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from demucs.apply import BagOfModels, TensorChunk
from demucs.hf import load_safetensors_model
from demucs.pretrained import get_model
from demucs.repo import AnyModelRepo, BagOnlyRepo, LocalRepo, ModelLoadingError, ModelOnlyRepo
from demucs.utils import center_trim

__all__ = [
    "BagOfModels",
    "ModelLoadingError",
    "TensorChunk",
    "center_trim",
    "hub_offline",
    "load_local_bag",
    "load_th_repo",
    "padded_chunk",
]


def padded_chunk(mix: torch.Tensor, offset: int, length: int, target: int) -> torch.Tensor:
    """`mix[..., offset:offset+length]` centred in `target` samples of real neighbouring audio, then zeros."""
    chunk = TensorChunk(mix, offset, length)  # type: ignore[no-untyped-call]
    out: torch.Tensor = chunk.padded(target)  # type: ignore[no-untyped-call]
    return out


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Forbid hub access for the duration (demucs falls back to the hub when a name is unknown)."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def load_th_repo(name: str, models_dir: Path) -> torch.nn.Module:
    """demucs' own local loader; `repo=` keeps it off the network."""
    model: torch.nn.Module = get_model(name, repo=models_dir)
    return model


class _LocalFilesRepo(ModelOnlyRepo):
    """`.th` files through demucs' `LocalRepo` (checksums verified), `.safetensors` through its hf loader."""

    def __init__(self, root: Path, safetensors: dict[str, Path]) -> None:
        self._th = LocalRepo(root)
        self._safetensors = safetensors

    def has_model(self, sig: str) -> bool:
        return bool(self._th.has_model(sig)) or sig in self._safetensors

    def get_model(self, sig: str) -> Any:
        if self._th.has_model(sig):
            return self._th.get_model(sig)
        if sig in self._safetensors:
            return load_safetensors_model(self._safetensors[sig])
        raise ModelLoadingError(f"Could not find pre-trained model with signature {sig}.")

    def list_model(self) -> dict[str, str | Path]:
        models: dict[str, str | Path] = dict(self._th.list_model())
        models.update(self._safetensors)
        return models


def load_local_bag(name: str, models_dir: Path, safetensors: dict[str, Path]) -> torch.nn.Module:
    """What `get_model(name, repo=models_dir)` does, with local `.safetensors` signatures as well."""
    model_repo = _LocalFilesRepo(models_dir, safetensors)
    any_repo = AnyModelRepo(model_repo, BagOnlyRepo(models_dir, model_repo))
    model: torch.nn.Module = any_repo.get_model(name)
    model.eval()
    return model
