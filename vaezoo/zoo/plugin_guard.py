"""Importing a plugin's entry point so that nothing its import does can take the zoo down with it.

A plugin is third-party code run inside vaezoo's process. While its module is imported:

- any exception, ``SystemExit`` included, becomes a :class:`PluginImportError` naming it;
- a ``KeyboardInterrupt`` that the plugin raises itself is its failure too, but one that follows a
  real Ctrl-C (a SIGINT received during the import) still stops the program: a SIGINT handler
  notes the signal for the duration and passes it on to the handler that was there;
- ``os._exit`` called from Python raises instead of ending the process (an exit from C code,
  or a crash, cannot be caught in-process: that is why plugins are only imported when one is asked
  for or when every plugin is listed);
- what it prints is kept off stdout, so that vaezoo's own output (``info --json``) stays parsable,
  and shown as one warning.

>>> guarded_import("json:dumps")([1])
'[1]'
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import Any

from vaezoo.errors import one_line

MAX_REASON = 240  # characters of a plugin's own error message kept in the one-line report


class PluginImportError(Exception):
    """Importing an entry point failed; the message is one line saying how."""


class _ExitCalled(BaseException):
    """Raised in place of os._exit while a plugin is imported (BaseException, so ``except Exception`` lets it through)."""

    def __init__(self, code: Any) -> None:
        super().__init__(code)
        self.code = code


def guarded_import(target: str) -> Any:
    """The object an entry point's ``"module:attr.attr"`` names; PluginImportError for whatever its import does wrong."""
    module_name, _, attrs = target.partition(":")
    printed = io.StringIO()
    try:
        with _sigint_watch() as ctrl_c, _exit_refused(), contextlib.redirect_stdout(printed):
            return _import(module_name, attrs, ctrl_c)
    finally:
        if printed.getvalue().strip():
            warnings.warn(f"importing plugin {target!r} printed {one_line(printed.getvalue(), MAX_REASON)!r}; "
                          "vaezoo keeps it off stdout", RuntimeWarning, stacklevel=4)


def _import(module_name: str, attrs: str, ctrl_c: threading.Event) -> Any:
    try:
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, attrs.split(".")):
            obj = getattr(obj, part)
        return obj
    except KeyboardInterrupt:
        if ctrl_c.is_set():  # the user's Ctrl-C: stop, as anywhere else
            raise
        raise PluginImportError("KeyboardInterrupt raised by the plugin's import itself (no Ctrl-C was pressed)") from None
    except _ExitCalled as exit_call:
        raise PluginImportError(f"its import called os._exit({exit_call.code!r})") from None
    except BaseException as error:  # any failure inside third-party code must not stop the zoo
        raise PluginImportError(f"{type(error).__name__}: {one_line(error, MAX_REASON)}") from None


@contextlib.contextmanager
def _sigint_watch() -> Iterator[threading.Event]:
    """Within the block, the returned event is set when a SIGINT arrives; the signal still does what it did."""
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received  # signals reach the main thread only: a KeyboardInterrupt here is the plugin's own
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler not installed from Python: it cannot be passed on, so count any interrupt as Ctrl-C
        received.set()
        yield received
        return

    def note(signum: int, frame: FrameType | None) -> None:
        received.set()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)  # also undoes a handler the plugin installed


@contextlib.contextmanager
def _exit_refused() -> Iterator[None]:
    """os._exit raises _ExitCalled in this thread of this process; elsewhere (another thread, a fork) it exits."""
    real_exit, pid, thread = os._exit, os.getpid(), threading.get_ident()

    def refuse(code: int) -> None:
        if os.getpid() != pid or threading.get_ident() != thread:
            real_exit(code)
        raise _ExitCalled(code)

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real_exit
