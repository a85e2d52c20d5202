"""Exceptions: one class per LM_* code of include/layermap.h."""
from __future__ import annotations

from typing import Dict, Type


class Error(Exception):
    """A liblayermap call failed. ``code`` is the LM_* code, ``message`` the
    library's one-line message naming the file and the problem."""

    code = 0

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def __str__(self) -> str:
        return self.message


class FileError(Error, OSError):
    """LM_EIO: a file cannot be opened, read or written."""
    code = 1


class CorruptFileError(Error):
    """LM_ECORRUPT: a malformed or truncated file."""
    code = 2


class UnsupportedError(Error):
    """LM_EUNSUPPORTED: valid input layermap does not handle (architecture, dtype)."""
    code = 3


class OutOfMemoryError(Error, MemoryError):
    """LM_ENOMEM: an allocation failed."""
    code = 4


class ArgumentError(Error, ValueError):
    """LM_EARG: an argument the library refused (e.g. data too short to score)."""
    code = 5


class ShapeError(Error, ValueError):
    """LM_ESHAPE: shapes or architectures that do not match (e.g. a diff of two different models)."""
    code = 6


class EncodingError(Error, UnicodeError):
    """LM_EENCODING: text that is not valid UTF-8 or cannot be tokenized."""
    code = 7


class InternalError(Error):
    """LM_EINTERNAL: an invariant of layermap itself failed (a bug: please report it)."""
    code = 8


class CanceledError(Error):
    """LM_ECANCELED: the call was canceled (the checkpoint, if any, is saved)."""
    code = 9


ERRORS: Dict[int, Type[Error]] = {c.code: c for c in (FileError, CorruptFileError, UnsupportedError,
                                                      OutOfMemoryError, ArgumentError, ShapeError, EncodingError,
                                                      InternalError, CanceledError)}


def error_for(code: int, message: str) -> Error:
    """The exception for an LM_* code (Error itself for a code this version does not know)."""
    cls = ERRORS.get(code, Error)
    return cls(message, code)
