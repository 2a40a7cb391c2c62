"""Live jamming: the pure cores (frame codec, control messages, jitter buffer, mix planner).

I/O lives elsewhere: the tick engine (``engine.py``, ``opus.py``) and the WebSocket/WebRTC
endpoints use these modules; nothing here reads a clock, a socket or a thread.
"""
