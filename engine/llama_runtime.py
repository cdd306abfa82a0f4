"""llama.cpp process-wide plumbing shared by every model run with it: its log routed through Python's
logging (the last lines kept to explain load failures) and an abort callback that reads a flag byte."""

from __future__ import annotations

import ctypes
import logging
from collections import deque

log = logging.getLogger("qasr.engine.decoder")


def flag_reader():
    """A C function usable as llama.cpp's abort callback that reads a flag byte without Python.

    The callback runs on llama.cpp's compute thread between graph nodes (~1000 times per decode); a
    Python callback would take the GIL each time and stall behind any other Python thread. libc's
    strlen(flag) is 1 when the first byte of the 2-byte flag buffer is set and 0 otherwise, which is
    exactly the bool the callback returns.
    """
    import llama_cpp

    libc = ctypes.CDLL(None)
    return llama_cpp.ggml_abort_callback(ctypes.cast(libc.strlen, ctypes.c_void_p).value)


# --- llama.cpp logging ---------------------------------------------------------------------------
# llama.cpp prints model-loading chatter to stderr. We route it through one kept ctypes callback (a
# collected callback would crash the process) and keep the last lines to explain load failures.
_RECENT_LOG: deque[str] = deque(maxlen=20)
_LOG_CALLBACK = None


def install_log_callback() -> None:
    """(Re)install our callback: other code (the quantizer) may have set its own in between."""
    global _LOG_CALLBACK
    import llama_cpp

    if _LOG_CALLBACK is not None:
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        return

    @llama_cpp.llama_log_callback
    def _callback(level, text, user_data):  # noqa: ARG001 - C signature
        try:
            line = text.decode("utf-8", errors="replace").rstrip()
        except Exception:  # never raise into C
            return
        if line:
            _RECENT_LOG.append(line)
            if level in (2, 3):  # WARN, ERROR
                log.debug("llama.cpp: %s", line)

    _LOG_CALLBACK = _callback
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


def last_error_line() -> str:
    for line in reversed(_RECENT_LOG):
        if "error" in line.lower() or "failed" in line.lower() or "invalid" in line.lower():
            return line.strip()[:200]
    return ""
