"""One error base for the whole package, and the optional-import helper that raises it.

Every error a user can cause or fix derives from ``HiLoError``; its message names the fix. The CLI
catches this one type (exit code 2); anything else is an internal failure (exit code 1, with the
traceback). ``validate`` exits 3 when the engines fail its check. Each stage keeps its own subclass so callers can still tell them apart, and keeps
``ValueError`` or ``RuntimeError`` as a second base for code that caught those before.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXIT_INTERNAL = 1  # a bug or an environment fault: the traceback is printed
EXIT_BAD_INPUT = 2  # usage errors and every HiLoError: the message says what to change
EXIT_CHECK_FAILED = 3  # validate ran and the engines failed its check


class HiLoError(Exception):
    """An error the user can fix; the message says how."""


def install_hint(extra: str) -> str:
    """The pip line that brings an optional part of the package (pyproject.toml's extras)."""
    if extra == "ort":  # two wheels provide the module onnxruntime; the user picks the one for the machine
        return "pip install 'hilo-export[cpu]' (on a CUDA machine: pip install 'hilo-export[gpu]')"
    return f"pip install 'hilo-export[{extra}]'"


def require(module: str, error: type[HiLoError], hint: str) -> ModuleType:
    """Import an optional dependency where it is used; raise ``error`` with the install line.

    ``hint`` says what needs the module and how to install it, e.g. ``install_hint("eval")``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise error(f"{hint} (import {module} failed: {err})") from err
