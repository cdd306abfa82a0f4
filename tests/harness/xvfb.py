"""An Xvfb display on a free display number (``-displayfd``)."""

from __future__ import annotations

import os
import subprocess

from tests.harness import HarnessError
from tests.harness.processes import stop_process


class Xvfb:
    """``start()`` returns the display (``":N"``) once the server is ready."""

    def __init__(self, screen: str = "1280x800x24") -> None:
        self.screen = screen
        self.proc: subprocess.Popen | None = None
        self.display = ""

    def start(self) -> str:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-noreset", "-screen", "0", self.screen,
                                      "-nolisten", "tcp"], pass_fds=(write_fd,),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:  # Xvfb writes the display number once it is ready
            number = pipe.readline().strip()
        if not number:
            self.stop()
            raise HarnessError("Xvfb did not report a display number")
        self.display = f":{number.decode()}"
        return self.display

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
