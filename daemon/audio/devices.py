"""Audio input devices: PortAudio access, the device list (`qasr-daemon devices`) and how a configured
``audio.device`` picks one. Errors are ``QasrError``s whose one line says what to do."""

from __future__ import annotations

import threading
from typing import Any

from qasr.errors import QasrError

NO_INPUT_MESSAGE = ("no audio input device found; is PulseAudio/PipeWire running? "
                    "list devices with `qasr-daemon devices`")


class NoInputDeviceError(QasrError):
    def __init__(self, message: str = NO_INPUT_MESSAGE) -> None:
        super().__init__(message)


class AudioDeviceError(QasrError):
    """The configured device is missing, ambiguous or cannot be opened."""


class DeviceOpenError(AudioDeviceError):
    """The device exists but PortAudio could not open or start a stream on it."""


# ---------------------------------------------------------------------- PortAudio access

class _PortAudio:
    """PortAudio is initialised once per process; its device list may be refreshed only while no stream
    of this process is open (capture counts its streams here)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.open_streams = 0


PORTAUDIO = _PortAudio()


def sounddevice_module():
    try:
        import sounddevice
    except OSError as exc:  # libportaudio missing
        raise NoInputDeviceError(
            f"PortAudio is not available ({exc}); install libportaudio2 (Debian/Ubuntu) or portaudio") from exc
    return sounddevice


def refresh_devices() -> bool:
    """Re-initialise PortAudio so its device list is current. Skipped (False) while a stream is open."""
    with PORTAUDIO.lock:
        sd = sounddevice_module()
        if PORTAUDIO.open_streams:
            return False
        sd._terminate()
        sd._initialize()
        return True


def _default_input_index(sd) -> int | None:
    try:
        info = sd.query_devices(kind="input")
    except Exception:  # PortAudioError / ValueError when there is no default input
        return None
    index = info.get("index") if isinstance(info, dict) else None
    return int(index) if index is not None and index >= 0 else None


def list_input_devices(refresh: bool = False) -> list[dict[str, Any]]:
    """Input devices: index, name, hostapi, channels, default_samplerate, is_default."""
    with PORTAUDIO.lock:
        sd = sounddevice_module()
        if refresh:
            refresh_devices()
        default = _default_input_index(sd)
        hostapis = sd.query_hostapis()
        devices = []
        for info in sd.query_devices():
            if info["max_input_channels"] <= 0:
                continue
            devices.append({
                "index": int(info["index"]),
                "name": info["name"],
                "hostapi": hostapis[info["hostapi"]]["name"],
                "channels": int(info["max_input_channels"]),
                "default_samplerate": float(info["default_samplerate"]),
                "is_default": int(info["index"]) == default,
            })
        return devices


def resolve_input_device(spec: str | int | None, devices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The input device for a configured value; NoInputDeviceError / AudioDeviceError otherwise."""
    devices = list_input_devices() if devices is None else devices
    if not devices:
        raise NoInputDeviceError()
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        for dev in devices:
            if dev["is_default"]:
                return dev
        return devices[0]
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        for dev in devices:
            if dev["index"] == index:
                return dev
        raise AudioDeviceError(
            f"audio input device index {index} does not exist or has no input channels; "
            "list devices with `qasr-daemon devices`")
    wanted = spec.strip().lower()
    exact = [d for d in devices if d["name"].lower() == wanted]
    if exact:
        return exact[0]
    matches = [d for d in devices if wanted in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AudioDeviceError(
            f"no audio input device matches {spec!r}; list devices with `qasr-daemon devices` "
            "and set audio.device to a name or index")
    names = ", ".join(f"{d['index']}: {d['name']}" for d in matches)
    raise AudioDeviceError(f"audio device {spec!r} matches several inputs ({names}); "
                           "use a longer name or the index")
