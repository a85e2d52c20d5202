"""Running long C calls: in a worker thread (ctypes releases the GIL during the
call), with progress shown from the calling thread, and KeyboardInterrupt
turned into the C side's cancel flag.

Every long call goes through one persistent worker thread, so the OpenMP and
OpenBLAS thread pools the library starts are made once and reused.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import os
import threading
from typing import Any, Callable, Optional, Union

from . import _lib
from ._errors import error_for

ProgressArg = Union[None, bool, Callable[[float, float, str], Any]]

_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="layermap")


def _new_executor_in_child() -> None:
    """A forked child has no worker thread: give it its own executor."""
    global _executor
    _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="layermap")


os.register_at_fork(after_in_child=_new_executor_in_child)
_POLL_S = 0.05


def check(rc: int, err: _lib.lm_err) -> None:
    """Raise the exception of a failed call (rc != 0)."""
    if rc:
        raise error_for(rc, err.msg.decode("utf-8", "replace") or _lib.lib.lm_strerror(rc).decode())


class Call:
    """State shared by the worker and the waiting thread: the cancel flag the
    C side reads, and the last progress report."""

    def __init__(self) -> None:
        self.cancel = ctypes.c_int(0)
        self.cancel_ptr = ctypes.pointer(self.cancel)
        self.done = 0.0
        self.total = 0.0
        self.what = ""
        self.seen = 0  # reports received
        self._lock = threading.Lock()
        self.c_progress = _lib.PROGRESS_FN(self._on_progress)  # kept alive as long as the call

    def _on_progress(self, _ctx: Any, done: float, total: float, what: Optional[bytes]) -> None:
        with self._lock:
            self.done, self.total = done, total
            self.what = what.decode("utf-8", "replace") if what else ""
            self.seen += 1

    def report(self, done: float, total: float, what: str) -> None:
        """Progress from Python code running in the worker."""
        self._on_progress(None, done, total, what.encode())

    def canceled(self) -> bool:
        return bool(self.cancel.value)

    def snapshot(self):
        with self._lock:
            return self.seen, self.done, self.total, self.what


class _Bar:
    """A tqdm bar (tqdm.auto, so notebooks get a widget) shown after a second, like the CLI's."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.last = 0.0
        try:
            from tqdm.auto import tqdm  # noqa: F401
            self._tqdm = tqdm
        except ImportError:
            self._tqdm = None

    def __call__(self, done: float, total: float, what: str) -> None:
        if self._tqdm is None:
            return
        if self.bar is None:
            kw = dict(total=total, desc=what, unit="tok", unit_scale=True, leave=False)
            try:
                self.bar = self._tqdm(delay=1.0, **kw)
            except TypeError:  # tqdm < 4.60 has no delay
                self.bar = self._tqdm(**kw)
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_progress(progress: ProgressArg) -> None:
    """TypeError unless progress is None, a bool or a callable."""
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise TypeError(f"progress must be None, False, True or a callable, not {type(progress).__name__}")


def run(work: Callable[[Call], Any], progress: ProgressArg = None) -> Any:
    """Run work(call) in the worker thread and wait for it here.

    progress: None = a tqdm bar when tqdm is installed; False = nothing; a
    callable is called as progress(done, total, what) from this thread (when it
    returns False the call stops at its next cancel point with CanceledError). A
    KeyboardInterrupt (or an exception from the callback) sets the cancel flag;
    the worker stops after its current sequence and frees what it made, then
    the exception is raised here.
    """
    check_progress(progress)
    call = Call()
    show = _Bar() if progress is None or progress is True else (progress if callable(progress) else None)
    pending: Optional[BaseException] = None
    seen = 0
    fut = _executor.submit(work, call)
    try:
        while True:
            try:
                finished = not concurrent.futures.wait([fut], timeout=_POLL_S).not_done
                if show is not None and pending is None:
                    n, done, total, what = call.snapshot()
                    if n != seen:
                        seen = n
                        if show(done, total, what) is False:  # the callback asks to stop: CanceledError
                            call.cancel.value = 1
                if finished:
                    break
            except BaseException as e:  # KeyboardInterrupt, or the callback raised
                call.cancel.value = 1
                if pending is None:
                    pending = e
    finally:
        if isinstance(show, _Bar):
            show.close()
    if pending is not None:
        exc = fut.exception()
        # the worker freed everything it made; a result it completed anyway is dropped
        if exc is not None and not isinstance(exc, _lib_canceled()):
            pending.__context__ = exc
        raise pending
    return fut.result()


def _lib_canceled():
    from ._errors import CanceledError
    return CanceledError
