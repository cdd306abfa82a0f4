"""scripts/bench_daemon.py's modules, on top of tests/harness (see bench_daemon.py for the measurements).

- ``report``: the one-line-per-measurement reporter, rounding, log lines on stderr.
- ``procfs``: CPU time, memory and threads of a process from /proc; the machine line.
- ``utterance``: play one utterance into the microphone and wait for its final; stream → wall clock.
- ``phases``: the idle, final_latency and clients measurements.
- ``typing_target``: the Tk Entry whose every change is timestamped, XTEST key presses.
- ``typing``: the push-to-talk typing and sink_speed measurements.
- ``env``: the bench's private world (PulseAudio, Xvfb, daemons, subscribers) and its cleanup.
"""
