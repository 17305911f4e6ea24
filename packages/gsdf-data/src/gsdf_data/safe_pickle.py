"""Reading pickles that come from outside the project without running their code.

A pickle names the callables that rebuild its objects, and the standard unpickler imports
and calls whatever it names: a file that claims to be a MANO model or an ObMan meta file
could run any code. :class:`SafeUnpickler` resolves only what such files hold: NumPy arrays,
dtypes and scalars, and plain builtin values; anything else is a
``pickle.UnpicklingError`` naming the refused class. Readers with more in their files (the
MANO loader's chumpy and scipy stand-ins) extend ``find_class`` and defer to it.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import pickle
from pathlib import Path

# the callables NumPy's own pickles use to rebuild arrays, dtypes and scalars
_NUMPY = {
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
}
# builtin values; copyreg's reconstructor only builds instances of classes allowed here, and
# `_codecs.encode` is how protocol-2 pickles written by Python 3 store bytes
_BUILTINS = {
    "builtins": {"object", "list", "dict", "tuple", "set", "frozenset", "int", "float",
                 "complex", "bool", "str", "bytes", "bytearray", "slice", "range"},
    "copyreg": {"_reconstructor"},
    "_codecs": {"encode"},
}  # fmt: skip


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only NumPy arrays, dtypes, scalars and builtin values."""

    def find_class(self, module: str, name: str):
        # Python 2 names (__builtin__, copy_reg) as the standard unpickler maps them
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if name in _NUMPY.get(module, ()) or (module == "numpy.dtypes" and name.endswith("DType")):
            if module.startswith("numpy.core"):
                # numpy >= 2 renamed numpy.core to numpy._core (the old name warns)
                module = "numpy._core" + module[len("numpy.core") :]
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                old = "numpy.core" + module[len("numpy._core") :]
                return getattr(importlib.import_module(old), name)
        if name in _BUILTINS.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: such files hold only arrays and plain values "
            "(a file that names other code may run it)"
        )


def load(path: str | Path, encoding: str = "latin1"):
    """The object pickled in ``path``, read with :class:`SafeUnpickler` (``encoding`` for the
    8-bit strings of Python 2 pickles)."""
    with open(path, "rb") as f:
        return SafeUnpickler(f, encoding=encoding).load()
