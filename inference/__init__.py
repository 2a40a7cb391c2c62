"""Inference jobs beside the live session: stem separation (demucs), audio → MIDI (basic-pitch
on onnxruntime) and mastering (our own chain on the DSP kernels).

`service.JobService` (in the server) records jobs in the store, queues them (`queue`: in
process, or `queue_redis` for `escenario worker`s) and mirrors them into the session document;
`executor.JobExecutor` runs them on a `pool.WorkerPool` of spawned worker processes
(`worker`, `tasks`; `separation.BatchedSeparator` batches segments across jobs); `placement`
lays results out as tracks; `models` manages the models folder. Importing this package (or
`models`, `queue`, `service`) does not import torch: only worker processes do. See
docs/inference.md.
"""
