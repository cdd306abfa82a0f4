"""A small Wayland client speaking the wire protocol directly (no libwayland, no pywayland).

Interfaces come from the protocol XML files in ``protocols/`` (the order of a message in its interface
is its opcode). Supported argument types: int, uint, fixed, string, object, new_id (typed and, for
``wl_registry.bind``, untyped), array. File descriptors are not needed by the input method and raise.
Requests may be sent from any thread (one lock); events are read and dispatched by ``dispatch()``.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

PROTOCOLS = Path(__file__).resolve().parent / "protocols"


class WaylandError(RuntimeError):
    pass


@dataclass(frozen=True)
class Message:
    name: str
    args: tuple[tuple[str, str, str], ...]  # (name, type, interface)


@dataclass(frozen=True)
class Interface:
    name: str
    requests: tuple[Message, ...]
    events: tuple[Message, ...]

    def request(self, name: str) -> tuple[int, Message]:
        for opcode, message in enumerate(self.requests):
            if message.name == name:
                return opcode, message
        raise WaylandError(f"{self.name} has no request {name}")


def load_interfaces(*files: str) -> dict[str, Interface]:
    found = {}
    for file in files:
        for node in ET.parse(PROTOCOLS / file).getroot().iter("interface"):
            def messages(tag: str) -> tuple[Message, ...]:
                return tuple(Message(m.get("name"), tuple((a.get("name"), a.get("type"), a.get("interface") or "")
                                                          for a in m.iter("arg"))) for m in node.iter(tag))
            found[node.get("name")] = Interface(node.get("name"), messages("request"), messages("event"))
    return found


def socket_path(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ if env is None else env)
    name = env.get("WAYLAND_DISPLAY") or "wayland-0"
    if name.startswith("/"):
        return name
    runtime = env.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise WaylandError("XDG_RUNTIME_DIR is not set: cannot find the Wayland socket")
    return os.path.join(runtime, name)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def encode_args(message: Message, values: tuple) -> bytes:
    out = b""
    for (name, kind, _), value in zip(message.args, values):
        if kind in ("int", "fixed"):
            out += struct.pack("=i", int(value * 256) if kind == "fixed" else int(value))
        elif kind in ("uint", "object", "new_id"):
            out += struct.pack("=I", int(value or 0))
        elif kind == "string":
            data = value.encode("utf-8") + b"\0" if value is not None else b""
            out += struct.pack("=I", len(data)) + _pad(data)
        elif kind == "array":
            out += struct.pack("=I", len(value)) + _pad(bytes(value))
        else:
            raise WaylandError(f"argument type {kind} of {message.name}.{name} is not supported")
    return out


def decode_args(message: Message, data: bytes) -> list[Any]:
    values, at = [], 0
    for name, kind, _ in message.args:
        if kind in ("int", "fixed"):
            (value,) = struct.unpack_from("=i", data, at)
            values.append(value / 256 if kind == "fixed" else value)
            at += 4
        elif kind in ("uint", "object", "new_id"):
            values.append(struct.unpack_from("=I", data, at)[0])
            at += 4
        elif kind in ("string", "array"):
            (size,) = struct.unpack_from("=I", data, at)
            raw = data[at + 4:at + 4 + size]
            at += 4 + size + (-size % 4)
            values.append(raw[:-1].decode("utf-8", "replace") if kind == "string" and size else
                          (None if kind == "string" else raw))
        else:
            raise WaylandError(f"event argument type {kind} ({message.name}.{name}) is not supported")
    return values


class Connection:
    """One client connection: objects by id, their handlers, requests out, events in."""

    def __init__(self, interfaces: dict[str, Interface], path: str | None = None) -> None:
        self.interfaces = interfaces
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path or socket_path())
        except OSError as exc:
            self.sock.close()
            raise WaylandError(f"cannot connect to the Wayland compositor ({exc})") from None
        self._objects: dict[int, Interface] = {1: interfaces["wl_display"]}
        self._handlers: dict[int, dict[str, Callable[..., None]]] = {1: {"error": self._error}}
        self._next_id = 2
        self._free: list[int] = []
        self._lock = threading.Lock()
        self._buffer = b""
        self.on("wl_display", 1, "delete_id", self._deleted)

    def on(self, _interface: str, object_id: int, event: str, handler: Callable[..., None]) -> None:
        self._handlers.setdefault(object_id, {})[event] = handler

    def new_object(self, interface: str) -> int:
        with self._lock:
            object_id = self._free.pop() if self._free else self._next_id
            if object_id == self._next_id:
                self._next_id += 1
            self._objects[object_id] = self.interfaces[interface]
        return object_id

    def request(self, object_id: int, name: str, *args: Any) -> None:
        interface = self._objects[object_id]
        opcode, message = interface.request(name)
        body = encode_args(message, args)
        header = struct.pack("=II", object_id, ((8 + len(body)) << 16) | opcode)
        with self._lock:
            self.sock.sendall(header + body)

    def bind(self, registry: int, name: int, interface: str, version: int) -> int:
        """``wl_registry.bind`` (its new_id is untyped: interface name and version go first)."""
        object_id = self.new_object(interface)
        data = _pad(interface.encode() + b"\0")
        body = struct.pack("=II", name, len(interface) + 1) + data + struct.pack("=II", version, object_id)
        with self._lock:
            self.sock.sendall(struct.pack("=II", registry, ((8 + len(body)) << 16) | 0) + body)
        return object_id

    def roundtrip(self) -> None:
        """Send wl_display.sync and dispatch until its callback is done."""
        done = threading.Event()
        callback = self.new_object("wl_callback")
        self.on("wl_callback", callback, "done", lambda _data: done.set())
        self.request(1, "sync", callback)
        while not done.is_set():
            self.dispatch()

    def fileno(self) -> int:
        return self.sock.fileno()

    def dispatch(self) -> None:
        """Read what is there (blocking until something is) and run the handlers of whole messages."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise WaylandError("the compositor closed the connection")
        self._buffer += chunk
        while len(self._buffer) >= 8:
            object_id, word = struct.unpack_from("=II", self._buffer)
            size, opcode = word >> 16, word & 0xFFFF
            if size < 8 or len(self._buffer) < size:
                break
            body, self._buffer = self._buffer[8:size], self._buffer[size:]
            interface = self._objects.get(object_id)
            if interface is None or opcode >= len(interface.events):
                continue  # an object we destroyed, or an event newer than our definition
            message = interface.events[opcode]
            handler = self._handlers.get(object_id, {}).get(message.name)
            if handler is not None:
                handler(*decode_args(message, body))

    def _error(self, object_id: int, code: int, message: str) -> None:
        raise WaylandError(f"protocol error on object {object_id} (code {code}): {message}")

    def _deleted(self, object_id: int) -> None:
        with self._lock:
            self._objects.pop(object_id, None)
            self._handlers.pop(object_id, None)
            self._free.append(object_id)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
