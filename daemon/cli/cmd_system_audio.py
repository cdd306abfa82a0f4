"""`qasr-daemon system-audio on|off|status` and `qasr-daemon record-call start|stop|status`."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("system-audio", help="captions of what the computer plays: on, off or status",
                       description="Capture the default output's monitor (PulseAudio / PipeWire) and transcribe it "
                       "beside the microphone; its results carry source \"system\" and are never typed. "
                       "[audio] system = true keeps it on.")
    p.add_argument("action", nargs="?", choices=("on", "off", "status"), default="status")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run, control_cmd="system-audio")

    p = sub.add_parser("record-call", help="a call transcript, you and them: start, stop or status",
                       description="Record a transcript of both sides of a call: you (the microphone) and them "
                       "(system audio), in audio-time order. `stop` writes it as txt, srt, vtt and json into "
                       "$XDG_DATA_HOME/qasr/transcripts/ (with word timestamps when the aligner is installed).")
    p.add_argument("action", nargs="?", choices=("start", "stop", "status"), default="status")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run, control_cmd="record-call")


def run(args: argparse.Namespace) -> int:
    from qasr.daemon.server import control_socket

    timeout = 90.0 if args.action == "stop" else 15.0  # stop waits for the last finals (and their words)
    result = control_socket.request(args.control_cmd, timeout_s=timeout, action=args.action)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    elif args.control_cmd == "record-call" and args.action == "stop":
        print(result.get("message") or "\n".join(result.get("files") or []))
    else:
        print(", ".join(f"{k}: {v}" for k, v in result.items() if v not in (None, "", [])))
    return 0
