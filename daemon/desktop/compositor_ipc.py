"""The focused window on Wayland, from the compositor's own IPC: sway (i3-ipc GET_TREE) and Hyprland
(``j/activewindow`` on its request socket). Other compositors have none (see session.NO_FOCUS_API).

Windows are reported as ``x11.WindowInfo``: ``window_id`` = sway container id / Hyprland window address,
``wm_class`` = Wayland app_id (or the X11 class of an XWayland window), ``name`` = title. Both talk
plain unix sockets; no tool has to be installed.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any, Mapping

from qasr.errors import QasrError

from .session import HYPRLAND, SWAY, Session
from .x11 import WindowInfo

_I3_MAGIC = b"i3-ipc"
_I3_HEADER = struct.Struct("=6sII")
GET_TREE, GET_INPUTS = 4, 100


class CompositorIpcError(QasrError):
    pass


class SwayIpc:
    def __init__(self, socket_path: str, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def request(self, kind: int, payload: str = "") -> Any:
        data = payload.encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(self.socket_path)
                sock.sendall(_I3_HEADER.pack(_I3_MAGIC, len(data), kind) + data)
                header = _recv_exact(sock, _I3_HEADER.size)
                magic, length, _ = _I3_HEADER.unpack(header)
                if magic != _I3_MAGIC:
                    raise CompositorIpcError(f"{self.socket_path} is not a sway IPC socket")
                return json.loads(_recv_exact(sock, length))
        except (OSError, ValueError) as exc:
            raise CompositorIpcError(f"sway IPC at {self.socket_path} failed ({exc}); is sway running? "
                                     "check SWAYSOCK") from exc

    def focused(self) -> WindowInfo | None:
        node = _find_focused(self.request(GET_TREE))
        if node is None or node.get("type") not in ("con", "floating_con"):
            return None  # a workspace or output has focus: no window
        props = node.get("window_properties") or {}
        app = node.get("app_id") or props.get("class") or ""
        instance = node.get("app_id") or props.get("instance") or ""
        return WindowInfo(window_id=int(node["id"]), wm_instance=instance, wm_class=app, name=node.get("name") or "")

    def keyboard_layouts(self) -> list[str]:
        """Active XKB layout names of the keyboards sway knows (e.g. "English (US)")."""
        inputs = self.request(GET_INPUTS)
        return sorted({i.get("xkb_active_layout_name") for i in inputs
                       if i.get("type") == "keyboard" and i.get("xkb_active_layout_name")})


class HyprlandIpc:
    def __init__(self, socket_path: str, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def request(self, command: str) -> Any:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(self.socket_path)
                sock.sendall(command.encode())
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            return json.loads(b"".join(chunks) or b"{}")
        except (OSError, ValueError) as exc:
            raise CompositorIpcError(f"Hyprland IPC at {self.socket_path} failed ({exc}); is Hyprland "
                                     "running? check HYPRLAND_INSTANCE_SIGNATURE") from exc

    def focused(self) -> WindowInfo | None:
        win = self.request("j/activewindow")
        if not isinstance(win, dict) or not win.get("address"):
            return None
        return WindowInfo(window_id=int(str(win["address"]), 16), wm_instance=win.get("initialClass") or "",
                          wm_class=win.get("class") or "", name=win.get("title") or "")


def hyprland_socket(env: Mapping[str, str]) -> str:
    sig = env.get("HYPRLAND_INSTANCE_SIGNATURE", "")
    runtime = env.get("XDG_RUNTIME_DIR", "")
    candidates = [os.path.join(runtime, "hypr", sig, ".socket.sock")] if runtime else []
    candidates.append(os.path.join("/tmp/hypr", sig, ".socket.sock"))  # Hyprland before 0.40
    return next((c for c in candidates if os.path.exists(c)), candidates[0])


def focus_source(session: Session, env: Mapping[str, str] | None = None) -> SwayIpc | HyprlandIpc | None:
    """The IPC that reports the focused window in this session, or None where the compositor has none."""
    env = os.environ if env is None else env
    if session.compositor == SWAY and env.get("SWAYSOCK"):
        return SwayIpc(env["SWAYSOCK"])
    if session.compositor == HYPRLAND and env.get("HYPRLAND_INSTANCE_SIGNATURE"):
        return HyprlandIpc(hyprland_socket(env))
    return None


def _find_focused(node: dict) -> dict | None:
    if node.get("focused"):
        return node
    for child in (node.get("nodes") or []) + (node.get("floating_nodes") or []):
        found = _find_focused(child)
        if found is not None:
            return found
    return None


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data
