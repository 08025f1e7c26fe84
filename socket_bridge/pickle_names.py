"""The Python 3 name of a global a pickle names: protocols 0-2 write Python 2 names
(`__builtin__.set`, `copy_reg._reconstructor`), which pickle itself maps on loading."""

from __future__ import annotations

import _compat_pickle


def python3_name(module: str, name: str) -> tuple[str, str]:
    """(module, name) as pickle resolves it in Python 3."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name
