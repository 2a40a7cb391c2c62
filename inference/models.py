"""Separation models on local disk: list, import, fetch (where a network exists) and load.

A model is a demucs bag file `<name>.yaml` (`models: [sig, ...]`, optional `weights`, `segment`)
plus one weight file per signature: `<sig>.th`, `<sig>-<sha256[:8]>.th` (checksum verified by
demucs) or `<sig>.safetensors` (the hub's layout). A signature file with no yaml naming it is a
model too, named by its signature, as demucs' own loader allows. Loading never touches the
network: `fetch` is the only function that may, and it is meant for `escenario models fetch`,
never for a request.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:
    import torch

# torch and demucs are imported where a model is loaded or fetched, not here: the server
# imports this module to check that a job's model is installed, and must not pay for (or hold
# the memory of) torch to do so.

__all__ = [
    "ModelError",
    "ModelFetchError",
    "ModelImportError",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotInstalled",
    "ModelStore",
    "install_hint",
    "load_separation_model",
]

WEIGHT_SUFFIXES = (".th", ".safetensors")
MODEL_SUFFIXES = (".yaml", *WEIGHT_SUFFIXES)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SIG = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
Progress = Callable[[str], None]


class ModelError(Exception):
    """Base of every model-management error; the message is meant for the person at the console."""


class InvalidModelName(ModelError, ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"invalid model name {name!r}: use letters, digits, '_', '.' and '-'")
        self.name = name


def install_hint(name: str) -> str:
    return (
        f"install it with `escenario models fetch {name}` on a machine with network access, "
        f"or copy its files (<name>.yaml and the .th/.safetensors it names) from a machine that "
        f"has them and run `escenario models import PATH`"
    )


class ModelNotInstalled(ModelError, LookupError):
    """The model (or one of its signature files) is not in the models folder."""

    def __init__(self, name: str, models_dir: Path | None = None, missing: Iterable[str] = ()) -> None:
        self.name = name
        self.missing = tuple(missing)
        where = f" in {models_dir}" if models_dir is not None else ""
        what = f" (missing weights for {', '.join(self.missing)})" if self.missing else ""
        super().__init__(f"model {name!r} is not installed{where}{what}; {install_hint(name)}")


class ModelLoadError(ModelError, RuntimeError):
    """The files are there but unusable (corrupted, checksum mismatch, duplicate signatures)."""


class ModelImportError(ModelError, ValueError):
    """`import_path` refused its input; nothing was copied."""


class ModelFetchError(ModelError, RuntimeError):
    """`fetch` could not download the model; nothing was installed."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: Literal["separation"]
    path: Path  # the bag yaml, or the weight file of a model named by its signature
    files: tuple[Path, ...]
    size_bytes: int
    signatures: tuple[str, ...]
    missing: tuple[str, ...] = field(default=())  # signatures whose weight file is absent
    problems: tuple[str, ...] = field(default=())  # empty when the model can be loaded

    @property
    def complete(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Bag:
    models: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...] | None


@dataclass
class _Scan:
    weights: dict[str, list[Path]]  # signature -> its weight files (more than one is an error)
    bags: dict[str, Path]


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidModelName(name)


def _signature_of(path: Path) -> str:
    # demucs: `<sig>-<checksum>.th` carries a checksum, `<sig>.th` does not; hub files are `<sig>.safetensors`
    if path.suffix == ".th" and "-" in path.stem:
        return path.stem.rsplit("-", 1)[0]
    return path.stem


def _parse_bag(path: Path) -> _Bag:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelImportError(f"{path.name}: not a readable YAML file ({exc})") from exc
    if not isinstance(data, dict) or "models" not in data:
        raise ModelImportError(f"{path.name}: not a demucs model file (no `models:` list)")
    sigs = data["models"]
    if not isinstance(sigs, list) or not sigs or not all(isinstance(s, str) and _SIG.match(s) for s in sigs):
        raise ModelImportError(f"{path.name}: `models:` must be a non-empty list of signatures")
    weights = data.get("weights")
    if weights is not None:
        ok = (
            isinstance(weights, list)
            and len(weights) == len(sigs)
            and all(isinstance(row, list) and row for row in weights)
            and all(isinstance(w, int | float) and not isinstance(w, bool) for row in weights for w in row)
            and len({len(row) for row in weights}) == 1
        )
        if not ok:
            raise ModelImportError(f"{path.name}: `weights:` must hold one row of numbers per model")
    segment = data.get("segment")
    if segment is not None and (isinstance(segment, bool) or not isinstance(segment, int | float)):
        raise ModelImportError(f"{path.name}: `segment:` must be a number of seconds")
    rows = None if weights is None else tuple(tuple(float(w) for w in row) for row in weights)
    return _Bag(tuple(sigs), rows)


def _check_weight_file(path: Path) -> None:
    """Cheap integrity checks that never unpickle (a .th is a pickle: only load files you trust)."""
    if path.suffix == ".th":
        if "-" in path.stem:
            expected = path.stem.rsplit("-", 1)[1]
            sha = hashlib.sha256()
            with path.open("rb") as fh:
                for buf in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(buf)
            actual = sha.hexdigest()[: len(expected)]
            if actual != expected:
                raise ModelImportError(
                    f"{path.name}: corrupted, checksum mismatch (expected {expected}, got {actual})"
                )
            return
        with path.open("rb") as fh:
            head = fh.read(2)
        # torch.save writes a zip archive; checkpoints from before torch 1.6 are bare pickles
        if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):
            raise ModelImportError(f"{path.name}: not a torch checkpoint")
        return
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ModelImportError(f"{path.name}: not a readable safetensors file ({exc})") from exc
    missing = [key for key in ("klass", "args", "kwargs") if key not in meta]
    if missing:
        raise ModelImportError(f"{path.name}: not a demucs safetensors model (metadata lacks {missing})")
    # demucs imports the module named in the metadata: only accept demucs' own classes
    if not str(meta["klass"]).startswith("demucs."):
        raise ModelImportError(f"{path.name}: model class {meta['klass']!r} is not a demucs class")
    try:
        json.loads(meta["args"])
        json.loads(meta["kwargs"])
    except ValueError as exc:
        raise ModelImportError(f"{path.name}: malformed model arguments in metadata ({exc})") from exc


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ba, bb = fa.read(1 << 20), fb.read(1 << 20)
            if ba != bb:
                return False
            if not ba:
                return True


class ModelStore:
    """The models folder (`--models-dir`). Reads are stateless rescans, so imports show up at once."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    # -- reading -----------------------------------------------------------------------------
    def _scan(self) -> _Scan:
        scan = _Scan(weights={}, bags={})
        if not self.models_dir.is_dir():
            return scan
        for path in sorted(self.models_dir.iterdir()):
            if not path.is_file():
                continue
            if path.suffix in WEIGHT_SUFFIXES:
                scan.weights.setdefault(_signature_of(path), []).append(path)
            elif path.suffix == ".yaml":
                scan.bags[path.stem] = path
        return scan

    def _info(self, scan: _Scan, name: str) -> ModelInfo | None:
        if name in scan.bags:
            path = scan.bags[name]
            try:
                sigs = _parse_bag(path).models
                problems: list[str] = []
            except ModelImportError as exc:
                sigs, problems = (), [str(exc)]
        elif name in scan.weights:
            path, sigs, problems = scan.weights[name][0], (name,), []
        else:
            return None
        files = [path] if name in scan.bags else []
        missing = []
        for sig in sigs:
            found = scan.weights.get(sig, [])
            if not found:
                missing.append(sig)
                problems.append(f"missing weights for signature {sig}")
            elif len(found) > 1:
                problems.append(
                    f"duplicate weight files for signature {sig}: "
                    f"{', '.join(p.name for p in found)}; delete all but one"
                )
            files.extend(p for p in found if p not in files)
        size = sum(p.stat().st_size for p in files)
        return ModelInfo(
            name, "separation", path, tuple(files), size, tuple(sigs), tuple(missing), tuple(problems)
        )

    def list(self) -> list[ModelInfo]:
        """Every bag yaml, and every signature file no bag names; incomplete ones carry `problems`."""
        scan = self._scan()
        named: set[str] = set()
        for path in scan.bags.values():
            with contextlib.suppress(ModelImportError):
                named.update(_parse_bag(path).models)
        names = sorted(scan.bags) + sorted(s for s in scan.weights if s not in named and s not in scan.bags)
        return [info for name in names if (info := self._info(scan, name)) is not None]

    def info(self, name: str) -> ModelInfo:
        _check_name(name)
        info = self._info(self._scan(), name)
        if info is None:
            raise ModelNotInstalled(name, self.models_dir)
        return info

    def resolve(self, name: str) -> Path:
        """The model's yaml (or lone weight file); raises unless every file it needs is here."""
        info = self.info(name)
        if info.missing:
            raise ModelNotInstalled(name, self.models_dir, info.missing)
        if info.problems:
            raise ModelLoadError(
                f"model {name!r} in {self.models_dir} is unusable: {'; '.join(info.problems)}"
            )
        return info.path

    # -- writing -----------------------------------------------------------------------------
    def import_path(self, path: Path, *, replace: bool = False) -> builtins.list[str]:
        """Copy a folder (its top-level model files) or one model file into the models folder.

        Every yaml's signatures must be present in the import or already installed; nothing is
        copied unless everything validates. Returns the model names now installed by the import
        (yaml names, or the signatures of lone weight files).
        """
        path = Path(path)
        if path.is_dir():
            sources = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
            if not sources:
                raise ModelImportError(f"{path}: no .yaml, .th or .safetensors files in this folder")
        elif path.is_file():
            if path.suffix not in MODEL_SUFFIXES:
                raise ModelImportError(f"{path.name}: not a model file (expected .yaml, .th or .safetensors)")
            sources = [path]
        else:
            raise ModelImportError(f"{path}: no such file or folder")

        bags: dict[str, _Bag] = {}
        new_weights: dict[str, Path] = {}
        for src in sources:
            if src.suffix == ".yaml":
                _check_name(src.stem)
                bags[src.stem] = _parse_bag(src)
                continue
            sig = _signature_of(src)
            if not _SIG.match(sig):
                raise ModelImportError(f"{src.name}: not a demucs signature file name")
            if sig in new_weights:
                raise ModelImportError(
                    f"two weight files for signature {sig}: {new_weights[sig].name} and {src.name}"
                )
            _check_weight_file(src)
            new_weights[sig] = src

        scan = self._scan()
        for sig, src in new_weights.items():
            others = [p for p in scan.weights.get(sig, []) if p.name != src.name]
            if others and not replace:
                raise ModelImportError(
                    f"{src.name}: signature {sig} is already installed as {others[0].name}; "
                    "pass replace to overwrite it"
                )
            same = self.models_dir / src.name
            if same.exists() and not replace and not _same_bytes(same, src):
                raise ModelImportError(f"{src.name}: a different file of that name is already installed")
        for src in sources:
            existing = self.models_dir / src.name
            if src.suffix == ".yaml" and existing.exists() and not replace and not _same_bytes(existing, src):
                raise ModelImportError(f"{src.name}: a different model {src.stem!r} is already installed")
        available = set(new_weights) | set(scan.weights)
        for name, bag in bags.items():
            absent = [s for s in bag.models if s not in available]
            if absent:
                raise ModelImportError(
                    f"{name}.yaml names signatures that are neither in the import nor installed: "
                    f"{', '.join(absent)}; import the folder that holds their .th/.safetensors files"
                )

        self.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=self.models_dir))
        try:
            staged = [(shutil.copyfile(src, staging / src.name), src) for src in sources]
            # weights first, yamls last: a model only becomes visible once its weights are in place
            staged.sort(key=lambda pair: pair[1].suffix == ".yaml")
            for tmp, src in staged:
                if src.suffix in WEIGHT_SUFFIXES and replace:
                    for old in scan.weights.get(_signature_of(src), []):
                        if old.name != src.name:
                            old.unlink(missing_ok=True)
                os.replace(tmp, self.models_dir / src.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        named = {s for bag in bags.values() for s in bag.models}
        return sorted(bags) + sorted(s for s in new_weights if s not in named)

    def fetch(self, name: str, progress: Progress | None = None, *, hf_cache_dir: Path | None = None) -> Path:
        """Download `name` with demucs' own hub layout (or its legacy file list) and import it.

        For `escenario models fetch` only, never at request time. With `HF_HUB_OFFLINE=1` it only
        reads an already-filled hub cache (`hf_cache_dir`, default the standard one).
        """
        _check_name(name.split("/", 1)[-1])
        say = progress or (lambda _msg: None)
        offline = _offline()
        errors: list[str] = []
        with tempfile.TemporaryDirectory(prefix="escenario-fetch-") as tmp:
            folder = Path(tmp)
            fetched = _attempt(
                lambda: _download_hub(name, folder, say, offline=offline, cache_dir=hf_cache_dir),
                "hub",
                folder,
                errors,
            )
            if not fetched and offline:
                errors.append("legacy download skipped: HF_HUB_OFFLINE is set")
            elif not fetched:
                fetched = _attempt(lambda: _download_legacy(name, folder, say), "legacy", folder, errors)
            if not fetched:
                raise ModelFetchError(
                    f"could not download model {name!r} ({'; '.join(errors)}). Without network access, copy "
                    "the model files from a machine that has them and run `escenario models import PATH`"
                )
            self.import_path(folder, replace=True)
        return self.resolve(name.split("/", 1)[-1])


def _attempt(download: Callable[[], None], what: str, folder: Path, errors: list[str]) -> bool:
    try:
        download()
    except Exception as exc:  # hub client, urllib and torch.hub raise many unrelated error types
        errors.append(f"{what}: {_one_line(exc)}")
        for leftover in folder.iterdir():
            leftover.unlink()
        return False
    return True


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    try:
        from huggingface_hub import constants

        return env or bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return env


def _download_hub(name: str, dest: Path, say: Progress, *, offline: bool, cache_dir: Path | None) -> None:
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    from huggingface_hub import hf_hub_download

    namespace, _, short = name.rpartition("/")
    repo_id = f"{namespace or DEFAULT_NAMESPACE}/{hf_repo_name(short)}"

    def get(filename: str) -> Path:
        say(f"{'reading cached' if offline else 'downloading'} {repo_id}/{filename}")
        local = hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=offline)
        return Path(shutil.copyfile(local, dest / filename))

    bag = _parse_bag(get(f"{short}.yaml"))
    for sig in bag.models:
        get(f"{sig}.safetensors")


def _download_legacy(name: str, dest: Path, say: Progress) -> None:
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files

    bag_file = REMOTE_ROOT / f"{name}.yaml"
    if not bag_file.is_file():
        raise ModelFetchError(f"{name!r} is not a model demucs knows")
    urls = _parse_remote_files(REMOTE_ROOT / "files.txt")
    bag = _parse_bag(bag_file)
    shutil.copyfile(bag_file, dest / bag_file.name)
    for sig in bag.models:
        url = urls[sig]
        filename = url.rsplit("/", 1)[-1]  # `<sig>-<sha8>.th`: demucs verifies the checksum
        say(f"downloading {filename}")
        import torch.hub

        torch.hub.download_url_to_file(url, str(dest / filename), progress=False)


def load_separation_model(name: str, models_dir: Path, device: str | torch.device = "cpu") -> Any:
    """Load a demucs model (or bag) from the models folder only: eval mode, frozen, on `device`.

    Returns demucs' own object (`HTDemucs`, `HDemucs`, `Demucs` or `BagOfModels`).
    """
    from ._demucs_compat import ModelLoadingError, hub_offline, load_local_bag, load_th_repo

    store = ModelStore(models_dir)
    store.resolve(name)
    info = store.info(name)
    safetensors = {_signature_of(p): p for p in info.files if p.suffix == ".safetensors"}
    try:
        with hub_offline():
            if safetensors:
                model = load_local_bag(name, store.models_dir, safetensors)
            else:
                model = load_th_repo(name, store.models_dir)
    except ModelLoadingError as exc:
        raise ModelLoadError(
            f"model {name!r} in {store.models_dir} could not be loaded: {exc}. "
            f"The file is corrupted or incomplete: re-import or re-fetch it ({install_hint(name)})"
        ) from exc
    except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(
            f"model {name!r} in {store.models_dir} could not be loaded: {_one_line(exc)}"
        ) from exc
    model.eval()
    model.to(device)
    for param in model.parameters():
        param.requires_grad_(False)
    return model
