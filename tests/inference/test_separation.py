"""BatchedSeparator against demucs' own apply_model/Separator, on a tiny random HTDemucs loaded from disk."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from demucs.api import Separator
from demucs.apply import BagOfModels, apply_model
from numpy.typing import NDArray

from inference.models import load_separation_model
from inference.separation import BatchedSeparator, Outcome, Priority, separate_array

from .conftest import SOURCES, build_tiny_htdemucs, save_th, write_bag

SR = 44100
SEG = SR  # the tiny model's segment: 1 s
STRIDE = int(0.75 * SEG)
ATOL = 1e-5


def noise(n: int, seed: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    tone = 0.4 * np.sin(2 * np.pi * 220 * t) * np.array([[1.0], [0.6]])
    return (tone + 0.2 * rng.standard_normal((2, n))).astype(np.float32)


def reference(model: Any, mix: NDArray[np.float32]) -> NDArray[np.float32]:
    """demucs.api.Separator's arithmetic with shifts=0: whole-track normalisation around apply_model."""
    wav = torch.from_numpy(mix)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    out = apply_model(model, ((wav - mean) / std)[None], shifts=0, split=True, overlap=0.25)
    result: NDArray[np.float32] = (out * std + mean)[0].numpy()
    return result


@pytest.fixture
def model(tiny_demucs_repo: tuple[Path, str]) -> Any:
    return load_separation_model(tiny_demucs_repo[1], tiny_demucs_repo[0])


class Recorder:
    """Collects what a separator hands back for each job."""

    def __init__(self) -> None:
        self.blocks: dict[str, list[tuple[int, NDArray[np.float32]]]] = {}
        self.progress: dict[str, list[float]] = {}
        self.done: dict[str, tuple[Outcome, BaseException | None]] = {}

    def sink(self, job_id: str, start: int, block: NDArray[np.float32]) -> None:
        self.blocks.setdefault(job_id, []).append((start, block.copy()))

    def on_progress(self, job_id: str, fraction: float) -> None:
        self.progress.setdefault(job_id, []).append(fraction)

    def on_done(self, job_id: str, outcome: Outcome, error: BaseException | None) -> None:
        assert job_id not in self.done, "on_done must run once"
        self.done[job_id] = (outcome, error)

    def add(self, sep: BatchedSeparator, job_id: str, mix: Any, **kw: Any) -> None:
        sep.add(job_id, mix, sink=self.sink, on_progress=self.on_progress, on_done=self.on_done, **kw)

    def assembled(self, job_id: str, length: int) -> NDArray[np.float32]:
        blocks = self.blocks[job_id]
        out = np.full((blocks[0][1].shape[0], blocks[0][1].shape[1], length), np.nan, dtype=np.float32)
        for start, block in blocks:
            out[..., start : start + block.shape[-1]] = block
        return out


def test_reference_is_demucs_separator(tiny_demucs_repo: tuple[Path, str], model: Any) -> None:
    """The reference used below is what demucs.api.Separator(shifts=0) returns, loaded from the same repo."""
    models_dir, name = tiny_demucs_repo
    mix = noise(2 * SR + 77, 1)
    separator = Separator(model=name, repo=models_dir, shifts=0, device="cpu", progress=False)
    _, stems = separator.separate_tensor(torch.from_numpy(mix))
    expected = reference(model, mix)
    for i, stem in enumerate(SOURCES):
        np.testing.assert_allclose(stems[stem].numpy(), expected[i], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "length",
    [
        3 * SR + SR // 3 + 1,  # odd, five segments, a short last one
        SR * 2 // 5 + 1,  # shorter than one segment
        SEG,  # exactly one segment (offsets 0 and STRIDE: demucs' own plan)
        2 * STRIDE + SEG,  # the last segment ends exactly at the end
        2,  # the shortest input accepted
    ],
)
def test_matches_apply_model(model: Any, length: int) -> None:
    mix = noise(length, length)
    got = separate_array(model, mix, max_batch=4)
    expected = reference(model, mix)
    assert list(got) == SOURCES
    for i, stem in enumerate(SOURCES):
        assert got[stem].shape == (2, length)
        assert got[stem].dtype == np.float32
        np.testing.assert_allclose(got[stem], expected[i], atol=ATOL, rtol=0)


def test_two_jobs_share_batches(model: Any) -> None:
    a, b = noise(2 * SR + SR // 10 + 1, 2), noise(3 * SR + 7 * SR // 10 + 3, 3)
    rec = Recorder()
    sep = BatchedSeparator(model, max_batch=4)
    rec.add(sep, "a", a)
    rec.add(sep, "b", b)
    first = sep.step()
    # one forward pass took segments of both jobs
    assert first == 4
    assert rec.progress["a"] == [2 / 3]
    assert rec.progress["b"] == [2 / 5]
    sep.run_until_idle()
    assert rec.done == {"a": ("done", None), "b": ("done", None)}
    for job_id, mix in (("a", a), ("b", b)):
        np.testing.assert_allclose(
            rec.assembled(job_id, mix.shape[1]), reference(model, mix), atol=ATOL, rtol=0
        )


def test_output_is_flushed_progressively(model: Any) -> None:
    length = 6 * SR + 1234
    mix = noise(length, 4)
    rec = Recorder()
    sep = BatchedSeparator(model, max_batch=2)
    rec.add(sep, "long", mix)
    held = []
    while not sep.idle:
        sep.step()
        held.append(sep.held_samples("long"))
        if len(rec.blocks.get("long", [])) == 1:
            # the first block arrives long before the track is done
            assert rec.progress["long"][-1] < 0.5
    # never more than about two segments of output in memory, whatever the track length
    assert max(held) <= 2 * SEG
    starts = [start for start, _ in rec.blocks["long"]]
    sizes = [block.shape[-1] for _, block in rec.blocks["long"]]
    assert starts[0] == 0
    assert all(s + n == nxt for s, n, nxt in zip(starts, sizes, starts[1:], strict=False))
    assert starts[-1] + sizes[-1] == length
    assert len(starts) == len(range(0, length, STRIDE))
    assert all(block.shape[:2] == (4, 2) and block.dtype == np.float32 for _, block in rec.blocks["long"])
    np.testing.assert_allclose(rec.assembled("long", length), reference(model, mix), atol=ATOL, rtol=0)


def test_cancel_between_batches(model: Any) -> None:
    doomed, kept = noise(5 * SR, 5), noise(2 * SR + 11, 6)
    rec = Recorder()
    sep = BatchedSeparator(model, max_batch=2)
    rec.add(sep, "doomed", doomed)
    rec.add(sep, "kept", kept)
    sep.step()
    sep.step()
    calls_before = len(rec.blocks["doomed"])
    progress_before = rec.progress["doomed"][-1]
    assert 0 < progress_before < 1
    assert sep.cancel("doomed") is True
    assert sep.cancel("unknown") is False
    sep.run_until_idle()
    assert rec.done["doomed"] == ("cancelled", None)
    assert len(rec.blocks["doomed"]) == calls_before
    assert rec.progress["doomed"][-1] == progress_before
    assert rec.done["kept"] == ("done", None)
    np.testing.assert_allclose(
        rec.assembled("kept", kept.shape[1]), reference(model, kept), atol=ATOL, rtol=0
    )
    assert sep.idle
    assert sep.pending() == 0


def test_cancel_before_any_batch(model: Any) -> None:
    rec = Recorder()
    sep = BatchedSeparator(model)
    rec.add(sep, "x", noise(SR, 7))
    sep.cancel("x")
    assert sep.pending() == 0
    assert not sep.idle  # on_done is still owed
    assert sep.step() == 0
    assert rec.done == {"x": ("cancelled", None)}
    assert "x" not in rec.blocks
    assert sep.idle


def test_progress_is_monotonic_and_reaches_one(model: Any) -> None:
    rec = Recorder()
    sep = BatchedSeparator(model, max_batch=3)
    rec.add(sep, "p", noise(4 * SR + 5, 8))
    total = sep.pending()
    assert total == len(range(0, 4 * SR + 5, STRIDE))
    sep.run_until_idle()
    fractions = rec.progress["p"]
    assert all(a < b for a, b in itertools.pairwise(fractions))
    assert fractions[-1] == 1.0
    assert len(fractions) == -(-total // 3)


def test_interactive_jobs_go_first(model: Any) -> None:
    rec = Recorder()
    sep = BatchedSeparator(model, max_batch=2)
    rec.add(sep, "bulk", noise(4 * SR, 9), priority=Priority.BULK)
    sep.step()
    rec.add(sep, "live", noise(SR + SR // 2, 10), priority=Priority.INTERACTIVE)
    order = []
    while not sep.idle:
        before = {k: len(v) for k, v in rec.progress.items()}
        sep.step()
        order.append(sorted(k for k, v in rec.progress.items() if len(v) > before.get(k, 0)))
    # the interactive job's two segments took the next batch whole, before any more bulk work
    assert order[0] == ["live"]
    assert rec.done["live"] == ("done", None)
    assert rec.done["bulk"] == ("done", None)


def test_equal_priority_round_robin(model: Any) -> None:
    rec = Recorder()
    sep = BatchedSeparator(model, max_batch=2)
    for i in range(3):
        rec.add(sep, f"j{i}", noise(4 * SR, 20 + i))
    for _ in range(3):
        sep.step()
    # six segments over three jobs: two each, not all to the first job
    assert {k: len(v) for k, v in rec.progress.items()} == {"j0": 2, "j1": 2, "j2": 2}


def test_stem_subset_in_requested_order(model: Any) -> None:
    mix = noise(2 * SR + 3, 11)
    got = separate_array(model, mix, stems=["vocals", "drums"])
    expected = reference(model, mix)
    assert list(got) == ["vocals", "drums"]
    np.testing.assert_allclose(got["vocals"], expected[3], atol=ATOL, rtol=0)
    np.testing.assert_allclose(got["drums"], expected[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "weights",
    [
        None,  # plain average
        [[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 1]],  # per-source identity-like, like htdemucs_ft
        [[1.0, 0.5, 0.0, 2.0], [0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 3.0, 0.5]],
    ],
)
def test_bag_of_models(tmp_path: Path, weights: list[list[float]] | None) -> None:
    folder = tmp_path / "models"
    sigs = ["b0000001", "b0000002", "b0000003"]
    for seed, sig in enumerate(sigs, start=1):
        save_th(build_tiny_htdemucs(seed), folder, sig)
    write_bag(folder, "bag", sigs, weights)
    bag = load_separation_model("bag", folder)
    assert isinstance(bag, BagOfModels)
    mix = noise(2 * SR + SR // 2 + 1, 12)
    got = separate_array(bag, mix, max_batch=4)
    expected = reference(bag, mix)
    for i, stem in enumerate(SOURCES):
        np.testing.assert_allclose(got[stem], expected[i], atol=ATOL, rtol=0)


def test_bag_skips_models_that_do_not_contribute(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    sigs = ["c0000001", "c0000002", "c0000003", "c0000004"]
    for seed, sig in enumerate(sigs, start=5):
        save_th(build_tiny_htdemucs(seed), folder, sig)
    write_bag(folder, "ft", sigs, np.eye(4).tolist())  # htdemucs_ft's identity weights
    bag = load_separation_model("ft", folder)
    mix = noise(2 * SR + 1, 13)
    sep = BatchedSeparator(bag)
    sep.add("v", mix, stems=["vocals"], sink=lambda *_: None)
    # one sub-model in four runs: the vocals one
    assert sep.pending() == len(range(0, mix.shape[1], STRIDE))
    got = separate_array(bag, mix, stems=["vocals"])
    np.testing.assert_allclose(got["vocals"], reference(bag, mix)[3], atol=ATOL, rtol=0)
    full = separate_array(bag, mix)
    np.testing.assert_allclose(full["vocals"], got["vocals"], atol=ATOL, rtol=0)


def test_bf16_close_to_fp32(model: Any) -> None:
    mix = noise(2 * SR + 9, 14)
    fp32 = separate_array(model, mix)
    bf16 = separate_array(model, mix, dtype="bf16")
    for stem in SOURCES:
        assert bf16[stem].dtype == np.float32
        peak = float(np.abs(fp32[stem]).max())
        # random weights: about 0.3 % of the peak was seen; a broken autocast path is far off
        assert float(np.abs(bf16[stem] - fp32[stem]).max()) < 0.02 * peak
        assert not np.array_equal(bf16[stem], fp32[stem])


def test_tf32_is_exact_fp32_on_cpu(model: Any) -> None:
    mix = noise(SR + 9, 15)
    a, b = separate_array(model, mix), separate_array(model, mix, dtype="tf32")
    for stem in SOURCES:
        np.testing.assert_array_equal(a[stem], b[stem])


@pytest.mark.parametrize(
    ("mix", "kwargs", "message"),
    [
        (np.zeros((1, SR), np.float32), {}, "channels"),
        (np.zeros(SR, np.float32), {}, "shape"),
        (np.zeros((2, 1), np.float32), {}, "at least 2 samples"),
        (np.full((2, SR), np.nan, np.float32), {}, "NaN"),
        (np.zeros((2, SR), np.float32), {"stems": ["guitar"]}, "unknown"),
        (np.zeros((2, SR), np.float32), {"stems": []}, "stems"),
        (np.zeros((2, SR), np.float32), {"stems": ["bass", "bass"]}, "distinct"),
    ],
)
def test_bad_input_is_refused(model: Any, mix: Any, kwargs: dict[str, Any], message: str) -> None:
    sep = BatchedSeparator(model)
    with pytest.raises(ValueError, match=message):
        sep.add("bad", mix, sink=lambda *_: None, **kwargs)
    assert sep.idle


def test_duplicate_job_and_bad_settings(model: Any) -> None:
    sep = BatchedSeparator(model)
    sep.add("a", noise(SR, 1), sink=lambda *_: None)
    with pytest.raises(ValueError, match="already queued"):
        sep.add("a", noise(SR, 2), sink=lambda *_: None)
    assert sep.pending() == 2
    with pytest.raises(ValueError, match="max_batch"):
        BatchedSeparator(model, max_batch=0)
    with pytest.raises(ValueError, match="dtype"):
        BatchedSeparator(model, dtype="fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overlap"):
        BatchedSeparator(model, overlap=1.0)


def test_failing_sink_fails_only_its_job(model: Any) -> None:
    rec = Recorder()
    sep = BatchedSeparator(model, max_batch=4)

    def broken(job_id: str, start: int, block: NDArray[np.float32]) -> None:
        raise OSError("disk full")

    sep.add("bad", noise(3 * SR, 16), sink=broken, on_done=rec.on_done)
    good = noise(2 * SR + 1, 17)
    rec.add(sep, "good", good)
    sep.run_until_idle()
    outcome, error = rec.done["bad"]
    assert outcome == "failed"
    assert isinstance(error, OSError)
    assert rec.done["good"] == ("done", None)
    np.testing.assert_allclose(
        rec.assembled("good", good.shape[1]), reference(model, good), atol=ATOL, rtol=0
    )


class OutOfMemoryAbove(torch.nn.Module):
    """The real tiny model behind a fault injector: batches above `limit` fail like a full GPU."""

    def __init__(self, model: Any, limit: int) -> None:
        super().__init__()
        if isinstance(model, BagOfModels):  # get_model returns a bag of one for a yaml
            (model,) = model.models
        self.inner = model
        self.limit = limit
        self.sizes: list[int] = []
        for attr in ("sources", "samplerate", "audio_channels", "segment"):
            setattr(self, attr, getattr(model, attr))

    def valid_length(self, length: int) -> int:
        return int(self.inner.valid_length(length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        out: torch.Tensor = self.inner(x)
        return out


def test_out_of_memory_halves_the_batch(model: Any) -> None:
    wrapped = OutOfMemoryAbove(model, limit=2)
    mix = noise(4 * SR + 1, 18)
    got = separate_array(wrapped, mix, max_batch=8)
    # every segment of the track at first, then halved until it fits
    assert wrapped.sizes[:2] == [6, 3]
    assert all(size <= 2 for size in wrapped.sizes[2:])
    assert sum(size for size in wrapped.sizes if size <= 2) == 6
    expected = reference(model, mix)
    for i, stem in enumerate(SOURCES):
        np.testing.assert_allclose(got[stem], expected[i], atol=ATOL, rtol=0)


def test_out_of_memory_at_batch_one_fails_the_job(model: Any) -> None:
    rec = Recorder()
    sep = BatchedSeparator(OutOfMemoryAbove(model, limit=0), max_batch=1)
    rec.add(sep, "x", noise(SR, 19))
    sep.run_until_idle()
    outcome, error = rec.done["x"]
    assert outcome == "failed"
    assert isinstance(error, torch.OutOfMemoryError)


def test_forward_error_fails_the_batch_with_a_clear_error(model: Any) -> None:
    class Broken(OutOfMemoryAbove):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("kernel exploded")

    with pytest.raises(RuntimeError, match="separation failed: kernel exploded"):
        separate_array(Broken(model, 9), noise(SR, 20))


def test_cuda_precision_flags_are_set_and_restored() -> None:
    """The flags behind dtype="fp32"/"tf32" on CUDA (settable without a GPU)."""
    from inference.separation import _cuda_fp32_precision

    mm, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (mm.fp32_precision, conv.fp32_precision)
    with _cuda_fp32_precision(tf32=False):
        assert (mm.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    assert (mm.fp32_precision, conv.fp32_precision) == before
    with _cuda_fp32_precision(tf32=True):
        assert (mm.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    assert (mm.fp32_precision, conv.fp32_precision) == before
