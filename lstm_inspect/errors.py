"""Errors the tool expects, and the exit codes they map to.

Every failure a user can cause (a bad file, a bad option) is raised as an `InspectError` carrying the file and
a one-line reason; the CLI prints it as ``lstm-inspect: FILE: reason`` and exits with its code.
"""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: a check, verify or diff found what it looks for (a failing rule, a mismatch, a difference)
    FINDINGS = 1
    #: the input could not be read or used: missing, not a Keras model, corrupt, refused as unsafe, bad option
    BAD_INPUT = 2
    #: a bug in lstm-inspect itself (an exception nobody expected)
    INTERNAL = 3


class InspectError(Exception):
    """A problem with the user's input, reported in one line."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UnsupportedFile(InspectError):
    """The file is readable but is not a model file we know."""


class CorruptFile(InspectError):
    """The file claims to be a format we know but its content is broken."""


class UnsafeFile(InspectError):
    """The file asks for something we refuse to do (follow a link out of the file, inflate past a bound, ...)."""
