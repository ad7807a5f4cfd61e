"""User-facing errors. The CLI prints these as one line and exits with status 2 (:func:`run_reporting_errors`);
nothing else is caught."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any


class MMFusionError(ValueError):
    """Base class for errors caused by the user's input (files, configs, flags)."""


MAX_SHOWN = 300
"""The most characters of one value an error message shows (a value can be megabytes long)."""


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters in all)"


def _describe(**parts: Any) -> str:
    return ", ".join(f"{k} {shorten(str(v))}" for k, v in parts.items() if v is not None)


class DataError(MMFusionError):
    """A data file is missing, malformed or unsafe.

    The message names the file, split and key, and the expected and actual value.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: Any = None,
        split: str | None = None,
        key: str | None = None,
        expected: Any = None,
        actual: Any = None,
    ) -> None:
        where = _describe(split=repr(split) if split else None, key=repr(key) if key else None)
        what = _describe(expected=expected, got=actual) if expected is not None or actual is not None else ""
        msg = f"{file}: " if file is not None else ""
        msg += problem
        if where:
            msg += f" ({where})"
        if what:
            msg += f": {what}"
        super().__init__(msg)
        self.file, self.split, self.key, self.expected, self.actual = file, split, key, expected, actual


class ConfigError(MMFusionError):
    """An unknown configuration key, or a value of the wrong type."""

    def __init__(self, problem: str, *, source: str | None = None, key: str | None = None,
                 expected: Any = None, actual: Any = None, hint: str = "") -> None:
        msg = f"{source}: " if source else ""
        msg += problem
        if key is not None:
            msg += f" (key {shorten(repr(key), 120)})"
        if expected is not None or actual is not None:
            msg += f": expected {shorten(str(expected))}, got {shorten(repr(actual))}"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)
        self.source, self.key, self.expected, self.actual = source, key, expected, actual
        self.problem, self.hint = problem, hint

    def with_source(self, source: str) -> ConfigError:
        """The same error, naming ``source`` (where the offending value came from) instead."""
        return ConfigError(self.problem, source=source, key=self.key, expected=self.expected, actual=self.actual,
                           hint=self.hint)


def did_you_mean(name: Any, options: Iterable[Any]) -> str:
    """``did you mean 'x'?`` for the option closest to a misspelt ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f"did you mean {close[0]!r}?" if close else ""


class RunLockedError(MMFusionError):
    """Another process is working in a run directory (see :func:`mmfusion.io.run_lock`)."""

    def __init__(self, directory: Any, pid: int | None, what: str = "run directory") -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{directory}: this {what} is in use by {holder} (it is training or reading it); wait "
                         "for it to finish, or choose another --out")
        self.directory, self.pid = directory, pid


def run_reporting_errors(name: str, body: Callable[[], int | None], resume_hint: str = "") -> int:
    """Run a command's ``body`` and turn the errors a user causes into one line on stderr and an exit status:
    mmfusion's own errors (bad input, config, data) and file-system refusals 2, Ctrl-C 130 (with ``resume_hint``),
    a closed output pipe 141 (quietly). Used by the ``mmfusion`` command line and by the scripts in
    ``benchmarks/``."""
    try:
        return body() or 0
    except MMFusionError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted{resume_hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`mmfusion data ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit does not raise again
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe stopped
    except OSError as exc:  # the file system refused (not a directory, no permission, disk full): one line
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        print(f"{name}: error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
