"""DSP building blocks: pure functions and small stateful processors, no I/O.

Audio everywhere is float32 numpy arrays shaped (channels, frames), C-contiguous, at the
session rate (48 kHz by default); blocks may have any length (typically 120-4096 frames) and
processing is in place where documented. Sample loops live in :mod:`.kernels` as undecorated
Python functions, compiled at module level with ``numba.njit(nogil=True, cache=True)``; every
public entry point validates its arguments and allocates, then calls a kernel.

Modules (import them directly; importing this package loads nothing heavy):

- :mod:`.units` — dB ↔ gain, the constant-power pan law, the fader curve (numpy only).
- :mod:`.filters` — RBJ cookbook biquad design, SOS cascades, BS.1770 K-weighting, the
  streaming ``biquad_sos`` filter.
- :mod:`.smoothing` — click-free parameter ramps across blocks: ``Ramp``, ``SmoothedGain``,
  ``SmoothedPan``, ``SmoothedGainPan``, ``apply_gain_ramp``.
- :mod:`.effects` — the ``Effect`` protocol and ``Equalizer``, ``Compressor``, ``Delay``,
  ``Reverb``, ``Limiter`` (true-peak, look-ahead); ``make_effect`` builds them from the
  session document's ``{type, ...params}`` maps.
- :mod:`.meters` — BS.1770-4 loudness (momentary, short-term, integrated), true peak, peak/RMS.
- :mod:`.graph` — the session document compiled into a mixer (clips, track chains, buses,
  mute/solo, master), updated incrementally and rendered block by block; its sample loops are
  in :mod:`.graph_kernels`.
- :mod:`.render` — offline rendering of a session (mix and stems, workers, progress).
- :mod:`.mixer` — the personal-mix kernel ``Y = G · X`` and its gain-matrix builder.
- :mod:`.backend`, :mod:`.gpu` — ``select_backend("auto"|"numba"|"cupy")`` and the optional
  cupy implementation of the mix kernel.
- :mod:`.kernels` — the numba kernels themselves (private to the package).
"""
