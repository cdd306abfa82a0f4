"""JSON text frames: decode one into a dict (never a traceback, even for absurd nesting), encode one."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from qasr.protocol.constants import ErrorCode, ProtocolError


def decode_object(text: str | bytes) -> dict[str, Any]:
    """One JSON text frame -> dict, or ProtocolError(bad_json / bad_message) with a one-line message."""
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"message is not valid JSON: {exc}") from None
    except RecursionError:  # json's C decoder recurses per nesting level
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message is nested too deeply") from None
    if not isinstance(msg, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "message must be a JSON object with a 'type' field")
    return msg


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode(message: dict) -> str:
    """Serialise a message (compact, UTF-8 text kept as is; numpy values become plain JSON)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=_jsonable)
