"""The test/bench harness: real desktop pieces for system tests and scripts/bench_daemon.py.

No pytest here (the bench imports it too); the pytest fixtures that wrap it live in tests/fixtures/desktop.py.

- ``speech``: espeak-ng speech files, WAV read/write at 16 kHz, silence padding.
- ``pulse``: a private PulseAudio server whose null sink is the virtual microphone.
- ``xvfb``: an Xvfb display.
- ``processes``: stopping a child process, killing a pid.
- ``daemon``: one daemon process with private XDG folders: CLI, control socket, status, logs, stop.
- ``events``: WebSocket subscribers on a thread that record every event with its arrival time.
"""


class HarnessError(RuntimeError):
    """Something the harness drives (a server, the daemon, a display) did not do what it should."""
