"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""


class QasrError(Exception):
    """Base for errors whose message says what is wrong and what to do."""

    exit_code = 1


class UsageError(QasrError):
    exit_code = 2
