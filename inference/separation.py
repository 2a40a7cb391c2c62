"""demucs' split/overlap-add, re-implemented so every concurrent job's segments share forward passes.

`demucs.apply.apply_model(model, mix, shifts=0, split=True, overlap=0.25)` cuts one track into
segments of `model.segment` seconds every `stride = int((1 - overlap) * segment_length)` samples,
pads each to the model's length with *real neighbouring audio* then zeros (`TensorChunk.padded`),
runs them one at a time, centre-trims, weights them with a triangle and overlap-adds, then divides
by the summed weights. `BatchedSeparator` does the same arithmetic, in the same order per sample,
but picks up to `max_batch` segments from all its jobs (highest priority first, round-robin within
a priority) and stacks them into one `model(batch)` call. HTDemucs normalises each batch item on
its own, so batching changes nothing but rounding.

Each job keeps one segment of output accumulators on the CPU: once the segment at offset `o` is
added, every sample before the next segment's offset is final, so it is divided, de-normalised and
handed to the job's sink, and the window slides on. Output memory does not grow with the track.

A bag of models (e.g. `htdemucs_ft`, identity weights) runs each sub-model whose bag weight is
non-zero for a requested stem, combines them per segment with the bag weights normalised per stem
(`apply_model` does the same after overlap-add; the operation is linear, so only rounding differs)
and overlap-adds once. Requesting only `vocals` from `htdemucs_ft` runs one sub-model in four.

Precision (`dtype`): "fp32" is IEEE fp32 everywhere (on CUDA it also turns off cuDNN's default
TF32 convolutions); "tf32" allows TF32 for CUDA matmuls and convolutions (a no-op on CPU); "bf16"
runs the forward under `torch.autocast(dtype=bfloat16)`, which covers convolutions, linear layers,
matmuls and attention. demucs computes `torch.stft`/`istft` and the complex mask inside the model:
autocast has no rule for them, the STFT input is the fp32 mix, and HTDemucs multiplies the decoder
output by its fp32 spectrogram statistics before the mask (promoting it back to fp32), so the
spectral transforms stay fp32. Accumulation and the output are always fp32.

Shifts (demucs' random time-shift averaging) are not applied: results equal `shifts=0`.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from ._demucs_compat import BagOfModels, center_trim, padded_chunk

__all__ = [
    "BatchedSeparator",
    "DType",
    "Outcome",
    "Priority",
    "SeparationJob",
    "separate_array",
]

DType = Literal["fp32", "tf32", "bf16"]
Outcome = Literal["done", "cancelled", "failed"]
Block = NDArray[np.float32]
Sink = Callable[[str, int, Block], None]  # (job_id, first sample, block[S, C, n])
OnProgress = Callable[[str, float], None]
OnDone = Callable[[str, Outcome, BaseException | None], None]
_DTYPES: tuple[str, ...] = ("fp32", "tf32", "bf16")


class Priority(enum.IntEnum):
    """Higher is served first; jobs of equal priority share batches round-robin."""

    BULK = 0
    INTERACTIVE = 10


class SeparationError(RuntimeError):
    """A batch could not be separated (the error of the forward pass is chained)."""


@dataclass(frozen=True)
class _Plan:
    """Geometry shared by every job on one model."""

    models: tuple[Any, ...]  # demucs models (HTDemucs, HDemucs, Demucs): untyped upstream
    bag_weights: tuple[tuple[float, ...], ...]  # [model][source]
    sources: tuple[str, ...]
    channels: int
    samplerate: int
    segment_length: int
    stride: int
    weight: torch.Tensor  # triangular window, on the device, like apply_model's
    weight_cpu: torch.Tensor  # the same window for the CPU accumulators

    def padded_length(self, model_idx: int, length: int) -> int:
        # apply_model's recursive call (segment=None): HTDemucs answers its training length
        model = self.models[model_idx]
        if hasattr(model, "valid_length"):
            return int(model.valid_length(length))
        return length


def _make_plan(model: Any, overlap: float, device: torch.device) -> _Plan:
    models: tuple[Any, ...]
    if isinstance(model, BagOfModels):
        models = tuple(model.models)
        weights = tuple(tuple(float(w) for w in row) for row in model.weights)
    else:
        models = (model,)
        weights = (tuple(1.0 for _ in model.sources),)
    segments = {float(m.segment) for m in models}
    rates = {int(m.samplerate) for m in models}
    if len(segments) != 1 or len(rates) != 1:
        raise ValueError("bags whose models differ in segment length or sample rate are not supported")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    samplerate = rates.pop()
    segment_length = int(samplerate * models[0].segment)
    stride = int((1 - overlap) * segment_length)
    if stride < 1:
        raise ValueError(f"overlap {overlap} leaves no stride for a {segment_length}-sample segment")
    # the same window apply_model builds (transition_power 1)
    weight = torch.cat(
        [
            torch.arange(1, segment_length // 2 + 1, device=device),
            torch.arange(segment_length - segment_length // 2, 0, -1, device=device),
        ]
    )
    weight = weight / weight.max()
    return _Plan(
        models=models,
        bag_weights=weights,
        sources=tuple(models[0].sources),
        channels=int(models[0].audio_channels),
        samplerate=samplerate,
        segment_length=segment_length,
        stride=stride,
        weight=weight,
        weight_cpu=weight.to("cpu"),
    )


def _as_mix(mix: NDArray[Any] | torch.Tensor, channels: int) -> torch.Tensor:
    if isinstance(mix, np.ndarray):
        tensor = torch.from_numpy(np.array(mix, dtype=np.float32, copy=True))
    elif isinstance(mix, torch.Tensor):
        tensor = mix.detach().to(device="cpu", dtype=torch.float32).clone()
    else:
        raise TypeError(f"mix must be a numpy array or a torch tensor, got {type(mix).__name__}")
    if tensor.ndim != 2:
        raise ValueError(f"mix must be [channels, samples], got shape {tuple(tensor.shape)}")
    if tensor.shape[0] != channels:
        raise ValueError(f"mix has {tensor.shape[0]} channels, the model takes {channels}")
    if tensor.shape[1] < 2:
        raise ValueError("mix needs at least 2 samples")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("mix holds NaN or infinite samples")
    return tensor


class SeparationJob:
    """One track in flight: its normalised mix, segment plan, output window and progress."""

    def __init__(
        self,
        job_id: str,
        mix: NDArray[Any] | torch.Tensor,
        plan: _Plan,
        *,
        stems: Sequence[str] | None,
        priority: int,
        sink: Sink,
        on_progress: OnProgress | None,
        on_done: OnDone | None,
        seq: int,
    ) -> None:
        wav = _as_mix(mix, plan.channels)
        stems = list(plan.sources if stems is None else stems)
        unknown = [s for s in stems if s not in plan.sources]
        if not stems or unknown or len(set(stems)) != len(stems):
            raise ValueError(
                f"stems must be distinct names among {list(plan.sources)}, got {stems}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        self.job_id = job_id
        self.priority = int(priority)
        self.stems = tuple(stems)
        self.sink = sink
        self.on_progress = on_progress
        self.on_done = on_done
        self.seq = seq
        self.last_served = -1
        self.cancelled = False
        self.failed = False

        # demucs.api.Separator's whole-track normalisation (kept to de-normalise the output)
        ref = wav.mean(0)
        self.mean = ref.mean()
        self.std = ref.std() + 1e-8
        self.mix = ((wav - self.mean) / self.std)[None]  # [1, C, T]: TensorChunk pads from it
        self.length = int(wav.shape[1])
        self.offsets = tuple(range(0, self.length, plan.stride))
        self.segment_length = plan.segment_length
        self.weight = plan.weight_cpu

        index = [plan.sources.index(s) for s in self.stems]
        device = plan.weight.device  # where the model runs: these are used on its outputs
        self.stem_index = torch.tensor(index, dtype=torch.long, device=device)
        totals = [sum(row[i] for row in plan.bag_weights) for i in index]
        if any(t == 0 for t in totals):
            raise ValueError("the bag gives no weight to one of the requested stems")
        # per sub-model scale for the requested stems; sub-models that contribute nothing are skipped
        self.models: list[int] = []
        self.scale: dict[int, torch.Tensor | None] = {}
        for m, row in enumerate(plan.bag_weights):
            coef = [row[i] / t for i, t in zip(index, totals, strict=True)]
            if any(c != 0 for c in coef):
                self.models.append(m)
                single_identity = len(plan.bag_weights) == 1 and all(c == 1.0 for c in coef)
                self.scale[m] = None if single_identity else torch.tensor(coef, device=device)[:, None, None]
        self.next_segment = dict.fromkeys(self.models, 0)
        self.units_total = len(self.offsets) * len(self.models)
        self.units_done = 0

        shape = (len(self.stems), plan.channels, plan.segment_length)
        self.acc = torch.zeros(shape)  # output for samples [cursor, cursor + segment_length)
        self.acc_weight = torch.zeros(plan.segment_length)
        self.cursor = 0  # samples before this were flushed to the sink
        self.merged = 0  # segments added into `acc`
        self.partial: dict[int, torch.Tensor] = {}  # bag only: segment -> sum over sub-models so far
        self.partial_count: dict[int, int] = {}

    @property
    def progress(self) -> float:
        return self.units_done / self.units_total

    @property
    def finished(self) -> bool:
        return self.merged == len(self.offsets)

    @property
    def held_samples(self) -> int:
        """Output samples (per stem and channel) this job holds in memory right now."""
        return int(self.acc.shape[-1]) + sum(int(t.shape[-1]) for t in self.partial.values())

    def chunk_length(self, k: int) -> int:
        return min(self.length - self.offsets[k], self.segment_length)

    def chunk(self, k: int, padded: int) -> torch.Tensor:
        return padded_chunk(self.mix, self.offsets[k], self.segment_length, padded)

    def eligible(self, model_idx: int, window: int) -> int | None:
        """The next segment this sub-model may run, keeping bag partials within `window` segments."""
        k = self.next_segment[model_idx]
        if k >= len(self.offsets) or k >= self.merged + window:
            return None
        return k

    def deliver(self, model_idx: int, k: int, out: torch.Tensor) -> None:
        """Add one weighted segment output [S, C, L] (CPU) from one sub-model, flushing what is final."""
        self.units_done += 1
        if len(self.models) == 1:
            self._merge(k, out)
            return
        self.partial[k] = self.partial[k] + out if k in self.partial else out
        self.partial_count[k] = self.partial_count.get(k, 0) + 1
        while self.merged in self.partial_count and self.partial_count[self.merged] == len(self.models):
            done = self.merged
            del self.partial_count[done]
            self._merge(done, self.partial.pop(done))

    def _merge(self, k: int, out: torch.Tensor) -> None:
        assert k == self.merged, "segments merge in order"
        assert self.offsets[k] == self.cursor
        n = out.shape[-1]
        # the same sums, in the same order per sample, as apply_model's `out[..., o:o+seg] += ...`
        self.acc[..., :n] += out
        self.acc_weight[:n] += self.weight[:n]
        self.merged += 1
        end = self.length if self.finished else self.offsets[k + 1]
        final = end - self.cursor
        block = self.acc[..., :final] / self.acc_weight[:final]
        block = block * self.std + self.mean
        start = self.cursor
        self.cursor = end
        if not self.finished:
            self.acc = torch.cat([self.acc[..., final:], torch.zeros_like(self.acc[..., :final])], dim=-1)
            self.acc_weight = torch.cat([self.acc_weight[final:], torch.zeros(final)])
        else:
            self.acc = self.acc[..., :0]
            self.acc_weight = self.acc_weight[:0]
        if not self.cancelled:
            self.sink(self.job_id, start, block.numpy())


@contextlib.contextmanager
def _cuda_fp32_precision(tf32: bool) -> Iterator[None]:
    """Allow or forbid TF32 in CUDA matmuls and cuDNN convolutions, restoring the previous setting."""
    mm: Any = torch.backends.cuda.matmul
    conv: Any = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(mm, "fp32_precision") and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        before: tuple[Any, Any] = (mm.fp32_precision, conv.fp32_precision)
        mm.fp32_precision = conv.fp32_precision = "tf32" if tf32 else "ieee"
        try:
            yield
        finally:
            mm.fp32_precision, conv.fp32_precision = before
        return
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


class BatchedSeparator:
    """Continuous cross-job segment batching for one model. Not a thread: the owner calls `step()`.

    `add` and `cancel` may be called from other threads; callbacks run on the thread that calls
    `step()`, never under the internal lock, so they may call `add`/`cancel` themselves.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device = "cpu",
        max_batch: int = 4,
        dtype: DType = "fp32",
        overlap: float = 0.25,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.max_batch = max_batch
        self.batch_limit = max_batch  # lowered after a CUDA out-of-memory error
        self.dtype: DType = dtype
        self._plan = _make_plan(model, overlap, self.device)
        self._jobs: dict[str, SeparationJob] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._turns = itertools.count()

    # -- facts ----------------------------------------------------------------------------------
    @property
    def sources(self) -> tuple[str, ...]:
        return self._plan.sources

    @property
    def samplerate(self) -> int:
        return self._plan.samplerate

    @property
    def audio_channels(self) -> int:
        return self._plan.channels

    @property
    def segment_length(self) -> int:
        return self._plan.segment_length

    @property
    def idle(self) -> bool:
        """No job left, cancelled ones included (their `on_done` runs in the next `step`)."""
        with self._lock:
            return not self._jobs

    def pending(self) -> int:
        """Forward-pass units (segment x sub-model) still to run for live jobs."""
        with self._lock:
            return sum(j.units_total - j.units_done for j in self._jobs.values() if not j.cancelled)

    def progress(self, job_id: str) -> float | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.progress

    def held_samples(self, job_id: str) -> int:
        """Output samples per stem and channel held for the job (0 once it has finished)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return 0 if job is None else job.held_samples

    # -- jobs -----------------------------------------------------------------------------------
    def add(
        self,
        job_id: str,
        mix: NDArray[Any] | torch.Tensor,
        *,
        stems: Sequence[str] | None = None,
        sink: Sink,
        on_progress: OnProgress | None = None,
        on_done: OnDone | None = None,
        priority: int = Priority.BULK,
    ) -> SeparationJob:
        """Queue a track: `mix` is [channels, samples] float at the model's sample rate.

        Raises ValueError for a bad mix, unknown stems or a duplicate id (nothing is queued then).
        """
        job = SeparationJob(
            job_id,
            mix,
            self._plan,
            stems=stems,
            priority=priority,
            sink=sink,
            on_progress=on_progress,
            on_done=on_done,
            seq=next(self._seq),
        )
        with self._lock:
            if job_id in self._jobs:
                raise ValueError(f"job {job_id!r} is already queued")
            self._jobs[job_id] = job
        return job

    def cancel(self, job_id: str) -> bool:
        """Stop a job: none of its segments run after the current batch, and its sink gets nothing more."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            job.cancelled = True
            return True

    # -- the loop ---------------------------------------------------------------------------------
    def step(self) -> int:
        """Run one batch; returns the number of segments it separated (0 when there was nothing to do)."""
        self._reap()
        with self._lock:
            picked = self._select()
        if not picked:
            return 0
        model_idx, items = picked
        try:
            outputs = self._forward(model_idx, items)
        except torch.OutOfMemoryError as exc:
            if len(items) > 1:
                # retry the same segments in smaller batches; nothing was consumed
                self.batch_limit = max(1, len(items) // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                return 0
            self._fail({job for job, _ in items}, exc)
            return 0
        except Exception as exc:  # a forward failure fails the jobs in this batch, not the others
            self._fail({job for job, _ in items}, SeparationError(f"separation failed: {exc}"), cause=exc)
            return 0

        advanced: dict[str, SeparationJob] = {}
        broken: dict[SeparationJob, BaseException] = {}
        for (job, k), out in zip(items, outputs, strict=True):
            if job.cancelled or job in broken:
                continue
            job.next_segment[model_idx] = k + 1
            try:
                job.deliver(model_idx, k, out)
            except Exception as sink_error:  # the sink (disk full, closed pipe, ...) fails only its job
                broken[job] = sink_error
            advanced[job.job_id] = job
        for job, error in broken.items():
            self._fail({job}, error)
        for job in advanced.values():
            if job.failed or job.cancelled:
                continue
            if job.on_progress is not None:
                job.on_progress(job.job_id, job.progress)
            if job.finished:
                with self._lock:
                    self._jobs.pop(job.job_id, None)
                if job.on_done is not None:
                    job.on_done(job.job_id, "done", None)
        return len(items)

    def run_until_idle(self) -> None:
        while not self.idle:
            self.step()

    def _reap(self) -> None:
        with self._lock:
            gone = [j for j in self._jobs.values() if j.cancelled]
            for job in gone:
                del self._jobs[job.job_id]
        for job in gone:
            if job.on_done is not None:
                job.on_done(job.job_id, "cancelled", None)

    def _fail(
        self, jobs: set[SeparationJob], exc: BaseException, *, cause: BaseException | None = None
    ) -> None:
        if cause is not None:
            exc.__cause__ = cause
        with self._lock:
            for job in jobs:
                job.failed = True
                self._jobs.pop(job.job_id, None)
        for job in sorted(jobs, key=lambda j: j.seq):
            if job.on_done is not None:
                job.on_done(job.job_id, "failed", exc)

    def _select(self) -> tuple[int, list[tuple[SeparationJob, int]]] | None:
        """Choose a sub-model and up to `batch_limit` of its segments: priority, then round-robin."""
        live = [j for j in self._jobs.values() if not j.cancelled and not j.failed]
        live.sort(key=lambda j: (-j.priority, j.last_served, j.seq))
        window = max(self.max_batch, 1)
        lead = next((j for j in live if any(j.eligible(m, window) is not None for m in j.models)), None)
        if lead is None:
            return None
        # the sub-model the leading job is furthest behind on (a bag's models advance together)
        model_idx = min(
            (m for m in lead.models if lead.eligible(m, window) is not None),
            key=lambda m: (lead.next_segment[m], m),
        )
        first = lead.eligible(model_idx, window)
        assert first is not None
        target = self._plan.padded_length(model_idx, lead.chunk_length(first))

        items: list[tuple[SeparationJob, int]] = []
        for _, group in itertools.groupby(live, key=lambda j: j.priority):
            members = [j for j in group if model_idx in j.models]
            cursor = {j.job_id: j.next_segment[model_idx] for j in members}
            while len(items) < self.batch_limit:
                took = False
                for job in members:
                    if len(items) >= self.batch_limit:
                        break
                    k = cursor[job.job_id]
                    if k >= len(job.offsets) or k >= job.merged + window:
                        continue
                    if self._plan.padded_length(model_idx, job.chunk_length(k)) != target:
                        continue  # only equal shapes stack (HTDemucs: always equal)
                    items.append((job, k))
                    cursor[job.job_id] = k + 1
                    took = True
                if not took:
                    break
            if len(items) >= self.batch_limit:
                break
        # a job's turn is its last pick, so the next batch starts with those that waited longest
        for job, _ in items:
            job.last_served = next(self._turns)
        return model_idx, items

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if self.dtype == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                yield
            return
        if self.device.type != "cuda":
            yield  # TF32 is a CUDA feature; CPU fp32 is always IEEE
            return
        with _cuda_fp32_precision(self.dtype == "tf32"):
            yield

    def _forward(self, model_idx: int, items: list[tuple[SeparationJob, int]]) -> list[torch.Tensor]:
        plan = self._plan
        target = plan.padded_length(model_idx, items[0][0].chunk_length(items[0][1]))
        batch = torch.cat([job.chunk(k, target) for job, k in items])
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        else:
            batch = batch.to(self.device)
        with torch.inference_mode(), self._precision():
            out = plan.models[model_idx](batch)
        # outside inference mode, so the results are ordinary tensors the accumulators can take in place
        out = out.float()
        outputs = []
        for i, (job, k) in enumerate(items):
            n = job.chunk_length(k)
            seg = center_trim(out[i], n).index_select(0, job.stem_index)
            scale = job.scale[model_idx]
            if scale is not None:
                seg = seg * scale
            outputs.append((plan.weight[:n] * seg).to("cpu"))
        return outputs


def separate_array(
    model: torch.nn.Module,
    mix: NDArray[Any] | torch.Tensor,
    *,
    stems: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    max_batch: int = 4,
    dtype: DType = "fp32",
    overlap: float = 0.25,
    on_progress: OnProgress | None = None,
) -> dict[str, NDArray[np.float32]]:
    """Separate one track; returns {stem: [channels, samples] float32}."""
    separator = BatchedSeparator(model, device=device, max_batch=max_batch, dtype=dtype, overlap=overlap)
    result: list[Block] = []
    failure: list[BaseException] = []

    def sink(_job_id: str, start: int, block: Block) -> None:
        if not result:
            result.append(np.zeros((*block.shape[:2], job.length), dtype=np.float32))
        result[0][..., start : start + block.shape[-1]] = block

    def done(_job_id: str, _outcome: Outcome, error: BaseException | None) -> None:
        if error is not None:
            failure.append(error)

    job = separator.add("job", mix, stems=stems, sink=sink, on_progress=on_progress, on_done=done)
    separator.run_until_idle()
    if failure:
        raise failure[0]
    return {stem: result[0][i] for i, stem in enumerate(job.stems)}
