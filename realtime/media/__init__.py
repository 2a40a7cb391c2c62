"""Audio files in and out: decoding (PyAV/FFmpeg), encoding, waveform peaks and asset storage."""
