"""ModelStore and load_separation_model on real demucs repos built in the test (never a download)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from demucs.apply import BagOfModels
from demucs.htdemucs import HTDemucs

from inference.models import (
    InvalidModelName,
    ModelFetchError,
    ModelImportError,
    ModelLoadError,
    ModelNotInstalled,
    ModelStore,
    load_separation_model,
)
from inference.separation import separate_array

from .conftest import TINY_NAME, TINY_SIG, build_tiny_htdemucs, save_safetensors, save_th, write_bag

SR = 44100


def mix(n: int = SR + 17) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.random.default_rng(0).standard_normal((2, n)).astype(np.float32) * 0.3


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_list_describes_the_repo(tiny_demucs_repo: tuple[Path, str]) -> None:
    models_dir, name = tiny_demucs_repo
    (info,) = ModelStore(models_dir).list()
    assert info.name == name == TINY_NAME
    assert info.kind == "separation"
    assert info.path == models_dir / f"{name}.yaml"
    assert info.signatures == (TINY_SIG,)
    (weights,) = models_dir.glob(f"{TINY_SIG}-*.th")
    assert set(info.files) == {info.path, weights}
    assert info.size_bytes == info.path.stat().st_size + weights.stat().st_size
    assert info.complete
    assert ModelStore(models_dir).resolve(name) == info.path


def test_loads_through_demucs_loader_frozen(tiny_demucs_repo: tuple[Path, str]) -> None:
    models_dir, name = tiny_demucs_repo
    before = os.environ.get("HF_HUB_OFFLINE")
    model = load_separation_model(name, models_dir)
    assert os.environ.get("HF_HUB_OFFLINE") == before  # restored after the load
    assert isinstance(model, BagOfModels)
    (sub,) = model.models
    assert isinstance(sub, HTDemucs)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert same_weights(sub, build_tiny_htdemucs(0))


def test_missing_model_names_the_install_commands(tmp_path: Path) -> None:
    for call in (
        lambda: ModelStore(tmp_path / "nowhere").resolve("htdemucs"),
        lambda: load_separation_model("htdemucs", tmp_path),
    ):
        with pytest.raises(ModelNotInstalled) as err:
            call()
        message = str(err.value)
        assert "escenario models fetch htdemucs" in message
        assert "escenario models import PATH" in message
        assert err.value.name == "htdemucs"


def test_missing_signature_is_reported(tiny_demucs_repo: tuple[Path, str]) -> None:
    models_dir, _ = tiny_demucs_repo
    write_bag(models_dir, "half", [TINY_SIG, "deadbeef"])
    store = ModelStore(models_dir)
    half = next(i for i in store.list() if i.name == "half")
    assert half.missing == ("deadbeef",)
    assert not half.complete
    with pytest.raises(ModelNotInstalled, match="deadbeef") as err:
        store.resolve("half")
    assert "escenario models fetch half" in str(err.value)
    with pytest.raises(ModelNotInstalled):
        load_separation_model("half", models_dir)


def test_invalid_names_are_refused(tiny_demucs_repo: tuple[Path, str]) -> None:
    models_dir, _ = tiny_demucs_repo
    for bad in ("../tiny", "a/b", "", "-x"):
        with pytest.raises(InvalidModelName):
            ModelStore(models_dir).resolve(bad)


def test_import_folder_into_an_empty_store(tmp_path: Path, tiny_demucs_repo: tuple[Path, str]) -> None:
    source, name = tiny_demucs_repo
    (source / "README.txt").write_text("ignored")
    store = ModelStore(tmp_path / "fresh")
    assert store.list() == []
    assert store.import_path(source) == [name]
    assert [i.name for i in store.list()] == [name]
    assert not (store.models_dir / "README.txt").exists()
    assert not [p for p in store.models_dir.iterdir() if p.name.startswith(".import-")]
    model = load_separation_model(name, store.models_dir)
    out = separate_array(model, mix())
    assert set(out) == {"drums", "bass", "other", "vocals"}
    # importing the same files again is a no-op, not a conflict
    assert store.import_path(source) == [name]


def test_import_single_files(tmp_path: Path, tiny_demucs_repo: tuple[Path, str]) -> None:
    source, name = tiny_demucs_repo
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelImportError, match=TINY_SIG):
        store.import_path(source / f"{name}.yaml")  # its weights are neither imported nor installed
    assert not store.models_dir.exists() or not any(store.models_dir.iterdir())
    (weights,) = source.glob("*.th")
    assert store.import_path(weights) == [TINY_SIG]  # a lone signature is a model by that name
    assert store.import_path(source / f"{name}.yaml") == [name]
    assert [i.name for i in store.list()] == [name]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nothing-here", "no such file"),
        (lambda d: (d / "x.txt").write_text("x") and d / "x.txt", "not a model file"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no .yaml"),
        (lambda d: (d / "m.yaml").write_text("models: [") and d / "m.yaml", "not a readable YAML"),
        (lambda d: (d / "m.yaml").write_text("a: 1") and d / "m.yaml", "no `models:`"),
        (lambda d: (d / "m.yaml").write_text("models: []") and d / "m.yaml", "non-empty list"),
        (
            lambda d: (d / "m.yaml").write_text("models: ['a']\nweights: [[1, 2], [3]]") and d / "m.yaml",
            "one row of numbers per model",
        ),
        (lambda d: (d / "abc.th").write_bytes(b"garbage") and d / "abc.th", "not a torch checkpoint"),
        (lambda d: (d / "abc.safetensors").write_bytes(b"garbage") and d / "abc.safetensors", "safetensors"),
    ],
)
def test_bad_imports_are_refused(tmp_path: Path, make: Any, message: str) -> None:
    store = ModelStore(tmp_path / "store")
    source = make(tmp_path)
    with pytest.raises(ModelImportError, match=message):
        store.import_path(source)
    assert store.list() == []


def test_corrupted_checkpoint(tmp_path: Path, tiny_demucs_repo: tuple[Path, str]) -> None:
    models_dir, name = tiny_demucs_repo
    (weights,) = models_dir.glob("*.th")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    # at import: refused before anything is copied
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelImportError, match="checksum mismatch"):
        store.import_path(models_dir)
    assert store.list() == []
    # already installed: the load fails with demucs' checksum error and what to do about it
    with pytest.raises(ModelLoadError, match="checksum") as err:
        load_separation_model(name, models_dir)
    assert "escenario models import" in str(err.value)


def test_truncated_checkpoint_without_checksum(tiny_demucs_repo: tuple[Path, str]) -> None:
    models_dir, name = tiny_demucs_repo
    (weights,) = models_dir.glob("*.th")
    plain = weights.with_name(f"{TINY_SIG}.th")
    plain.write_bytes(weights.read_bytes()[:-4096])
    weights.unlink()
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        load_separation_model(name, models_dir)


def test_conflicting_files_need_replace(tmp_path: Path, tiny_demucs_repo: tuple[Path, str]) -> None:
    models_dir, name = tiny_demucs_repo
    other = tmp_path / "other"
    save_th(build_tiny_htdemucs(7), other, TINY_SIG, checksum=False)  # same signature, other weights
    write_bag(other, name, [TINY_SIG])
    store = ModelStore(models_dir)
    with pytest.raises(ModelImportError, match="already installed"):
        store.import_path(other)
    assert same_weights(load_separation_model(name, models_dir).models[0], build_tiny_htdemucs(0))
    assert store.import_path(other, replace=True) == [name]
    assert [p.name for p in models_dir.glob("*.th")] == [f"{TINY_SIG}.th"]
    assert same_weights(load_separation_model(name, models_dir).models[0], build_tiny_htdemucs(7))


def test_duplicate_signature_files_are_a_clear_error(tiny_demucs_repo: tuple[Path, str]) -> None:
    models_dir, name = tiny_demucs_repo
    save_th(build_tiny_htdemucs(0), models_dir, TINY_SIG, checksum=False)
    with pytest.raises(ModelLoadError, match="duplicate weight files"):
        ModelStore(models_dir).resolve(name)


def test_safetensors_model_loads_through_demucs_hf_loader(tmp_path: Path) -> None:
    """The hub's layout (`<sig>.safetensors` + yaml), loaded from a local folder with no network."""
    folder = tmp_path / "hub-copy"
    tiny = build_tiny_htdemucs(3)
    save_safetensors(tiny, folder, "5afe7e45")
    write_bag(folder, "tinyst", ["5afe7e45"])
    store = ModelStore(tmp_path / "models")
    assert store.import_path(folder) == ["tinyst"]
    model = load_separation_model("tinyst", store.models_dir)
    (sub,) = model.models
    assert isinstance(sub, HTDemucs)
    assert same_weights(sub, tiny)
    # and it separates exactly like the same weights saved as a .th
    th_dir = tmp_path / "th"
    save_th(tiny, th_dir, "5afe7e45")
    write_bag(th_dir, "tinyst", ["5afe7e45"])
    a = separate_array(model, mix())
    b = separate_array(load_separation_model("tinyst", th_dir), mix())
    for stem in a:
        np.testing.assert_array_equal(a[stem], b[stem])


def test_safetensors_with_a_foreign_class_is_refused(tmp_path: Path) -> None:
    path = save_safetensors(build_tiny_htdemucs(0), tmp_path / "x", "0bad0bad", klass="os.system")
    with pytest.raises(ModelImportError, match="not a demucs class"):
        ModelStore(tmp_path / "models").import_path(path)


def test_fetch_without_network_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # HF_HUB_OFFLINE keeps this test from downloading anything on a machine that has a network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = ModelStore(tmp_path / "models")
    started = time.monotonic()
    with pytest.raises(ModelFetchError) as err:
        store.fetch("htdemucs", hf_cache_dir=tmp_path / "empty-cache")
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert "htdemucs" in message
    assert "escenario models import PATH" in message
    assert "HF_HUB_OFFLINE" in message
    assert store.list() == []


def test_fetch_reads_a_filled_hub_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a warm hub cache and no network, fetch installs the model through demucs' hub layout."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf-cache"
    repo = cache / "models--adefossez--HTDemucs"
    snapshot = repo / "snapshots" / ("0" * 40)
    tiny = build_tiny_htdemucs(4)
    save_safetensors(tiny, snapshot, "955717e8")
    write_bag(snapshot, "htdemucs", ["955717e8"])
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    messages: list[str] = []
    store = ModelStore(tmp_path / "models")
    path = store.fetch("htdemucs", messages.append, hf_cache_dir=cache)
    assert path == store.models_dir / "htdemucs.yaml"
    assert messages == [
        "reading cached adefossez/HTDemucs/htdemucs.yaml",
        "reading cached adefossez/HTDemucs/955717e8.safetensors",
    ]
    assert same_weights(load_separation_model("htdemucs", store.models_dir).models[0], tiny)


def test_fetch_refuses_bad_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelName):
        ModelStore(tmp_path).fetch("../../etc")


def test_the_server_side_does_not_import_torch() -> None:
    """Checking that a model is installed (the API does it per request) must not load torch."""
    import subprocess
    import sys

    code = (
        "import sys, inference.models, inference.service, realtime.api.jobs\n"
        "print(sorted(m for m in ('torch', 'demucs', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
