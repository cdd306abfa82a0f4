"""Python client for the qasr daemon (protocol qasr.v1): find it, follow its events, send it commands.

    async with QasrClient() as client:          # finds the daemon via paths.server_info_file() + token
        await client.start()
        async for event in client:               # Hello, State, Vad, Partial, Final, Error, Warning, ...
            if isinstance(event, Final):
                print(event.text)

    for event in iter_events():                  # the same, blocking (runs the client in a thread)
        ...

    finals = await transcribe_pcm(samples, 16000) # stream your own audio, get its finals (token_ids included)

The client reconnects with exponential back-off when the connection drops (re-reading the daemon's info
and token files, so a restarted daemon on a new port is found); it yields a ``Disconnected`` event when the
link is lost and a fresh ``Hello`` once it is back. Failing to reach the daemon at the very first connect
raises ``DaemonNotRunning`` (a QasrError with a one-line message).
"""

from qasr.clients.async_client import CommandFailed, Disconnected, QasrClient, ReconnectPolicy, transcribe_pcm
from qasr.clients.blocking import iter_events, send_command
from qasr.config.runtime import DaemonNotRunning, ServerInfo, discover
from qasr.protocol import (
    PROTOCOL,
    Ack,
    Error,
    Event,
    Final,
    Hello,
    Partial,
    Pong,
    State,
    Unknown,
    Vad,
    Warning,
    parse_event,
    parse_server_message,
)

__all__ = [
    "PROTOCOL", "Ack", "CommandFailed", "DaemonNotRunning", "Disconnected", "Error", "Event", "Final", "Hello",
    "Partial", "Pong", "QasrClient", "ReconnectPolicy", "ServerInfo", "State", "Unknown", "Vad", "Warning",
    "discover", "iter_events", "parse_event", "parse_server_message", "send_command", "transcribe_pcm",
]
