"""Daemon logging: a rotating file in $XDG_STATE_HOME/qasr/ plus stderr when run in the foreground."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from qasr.config.settings import LoggingSettings

LOGGER_NAME = "qasr"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(threadName)s]: %(message)s"
_MARK = "_qasr_handler"


def setup_logging(options: LoggingSettings, *, to_stderr: bool) -> Path:
    """Send the ``qasr`` logger to the rotating log file (and stderr). Safe to call again: replaces our handlers."""
    log_path = options.resolved_file()
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=options.max_bytes, backupCount=options.backup_count, encoding="utf-8"
    )
    handlers: list[logging.Handler] = [file_handler]
    if to_stderr:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        setattr(handler, _MARK, True)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.propagate = False
    set_level(options.level)
    return log_path


def set_level(level: str) -> None:
    logging.getLogger(LOGGER_NAME).setLevel(getattr(logging, level.upper()))
