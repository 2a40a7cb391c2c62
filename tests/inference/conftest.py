"""Tiny random-weight HTDemucs models saved as real local demucs repos (no weights are downloaded).

`tiny_demucs_repo` gives a fresh models folder holding `tiny.yaml` + `<sig>-<sha8>.th`, loadable
with `demucs.pretrained.get_model("tiny", repo=folder)` and `inference.models.load_separation_model`.
The helpers below build bags and safetensors variants for the tests that need them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, save_with_checksum

SOURCES = ["drums", "bass", "other", "vocals"]
TINY_NAME = "tiny"
TINY_SIG = "7e57c0de"
SAMPLERATE = 44100


def build_tiny_htdemucs(seed: int = 0) -> HTDemucs:
    """About 377 k parameters, 1 s segments, random weights from a fixed seed."""
    torch.manual_seed(seed)
    model = HTDemucs(SOURCES, channels=8, depth=4, t_layers=1, t_heads=2, dconv_comp=4, segment=Fraction(1))
    return model.eval()


def _package(model: torch.nn.Module) -> dict[str, Any]:
    # what demucs.states.serialize_model writes, minus the training args (it needs omegaconf)
    args, kwargs = model._init_args_kwargs  # type: ignore[misc]
    return {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": get_state(model, None)}


def save_th(model: torch.nn.Module, folder: Path, sig: str, *, checksum: bool = True) -> Path:
    """`<sig>-<sha256[:8]>.th` (demucs verifies it) or plain `<sig>.th`."""
    folder.mkdir(parents=True, exist_ok=True)
    if checksum:
        save_with_checksum(_package(model), folder / f"{sig}.th")
        (path,) = folder.glob(f"{sig}-*.th")
        return path
    path = folder / f"{sig}.th"
    torch.save(_package(model), path)
    return path


def _encode(value: Any) -> Any:
    # demucs.hf._decode_json's inverse: fractions become {"_type": "fraction", ...}
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def save_safetensors(model: torch.nn.Module, folder: Path, sig: str, *, klass: str | None = None) -> Path:
    """The hub layout demucs.hf reads: tensors + klass/args/kwargs as JSON metadata."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    args, kwargs = model._init_args_kwargs  # type: ignore[misc]
    cls = type(model)
    metadata = {
        "klass": klass or f"{cls.__module__}.{cls.__name__}",
        "args": json.dumps(_encode(list(args))),
        "kwargs": json.dumps(_encode(kwargs)),
    }
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path = folder / f"{sig}.safetensors"
    save_file(state, str(path), metadata=metadata)
    return path


def write_bag(
    folder: Path,
    name: str,
    sigs: Sequence[str],
    weights: Sequence[Sequence[float]] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bag: dict[str, Any] = {"models": list(sigs)}
    if weights is not None:
        bag["weights"] = [list(map(float, row)) for row in weights]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bag))
    return path


@pytest.fixture(scope="session")
def _tiny_repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-demucs-template")
    save_th(build_tiny_htdemucs(0), folder, TINY_SIG)
    write_bag(folder, TINY_NAME, [TINY_SIG])
    return folder


@pytest.fixture
def tiny_demucs_repo(tmp_path: Path, _tiny_repo_template: Path) -> tuple[Path, str]:
    """(models_dir, model name): a private copy per test, so tests may add or break files."""
    models_dir = tmp_path / "models"
    shutil.copytree(_tiny_repo_template, models_dir)
    return models_dir, TINY_NAME
