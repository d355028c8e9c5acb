"""Safe unpickling of model files written with pickle (FLAME's Python 2 / chumpy pickles, DECA's embedding).

:class:`RestrictedUnpickler` resolves only an allow-list of globals: numpy array reconstruction, a few builtins,
scipy sparse matrices, torch tensor rebuilding and chumpy classes. chumpy and scipy classes are replaced by
stand-ins that just keep the arrays from the pickled state (``as_array`` turns them into numpy arrays). Anything
else (``os.system``, ``subprocess``, ``builtins.eval``...) is refused with :class:`UnsafePickleError` before it
can be called.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

__all__ = [
    "ChStandIn",
    "CscStandIn",
    "CsrStandIn",
    "RestrictedUnpickler",
    "SparseStandIn",
    "UnsafePickleError",
    "as_array",
    "restricted_load",
]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle references a class or function that is not on the allow-list (nothing was called)."""


class ChStandIn:
    """Stands in for any ``chumpy`` class: keeps the pickled state; ``.x`` is the array of a leaf ``Ch``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # chumpy's __new__ may be called with args
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        # chumpy's Ch.__getstate__ is its __dict__ minus caches; a leaf Ch keeps its value under "x".
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_array(self, what: str) -> np.ndarray:
        x = self.state.get("x")
        if isinstance(x, ChStandIn):
            return x.to_array(what)
        if x is None:
            raise ValueError(f"{what}: a chumpy expression without a stored value (keys {sorted(self.state)}); "
                             "only plain chumpy arrays are supported")
        return np.asarray(x)


class SparseStandIn:
    """Stands in for ``scipy.sparse`` csc/csr matrices (old pickles name private modules); rebuilt by
    :meth:`to_dense` from ``data``, ``indices``, ``indptr`` and the shape in the pickled ``__dict__``."""

    format = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def to_dense(self, what: str) -> np.ndarray:
        import scipy.sparse as sp

        st = self.state
        shape = st.get("_shape", st.get("shape"))
        try:
            data, indices, indptr = (np.asarray(st[k]) for k in ("data", "indices", "indptr"))
            cls = sp.csc_matrix if self.format == "csc" else sp.csr_matrix
            return np.asarray(cls((data, indices, indptr), shape=tuple(int(s) for s in shape)).toarray())
        except Exception as e:
            raise ValueError(f"{what}: malformed sparse matrix in pickle ({e})") from e


class CscStandIn(SparseStandIn):
    format = "csc"


class CsrStandIn(SparseStandIn):
    format = "csr"


def _numpy_reconstruct():
    try:
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _load_storage_from_bytes(b: bytes):
    """Replacement for ``torch.storage._load_from_bytes`` (which calls ``torch.load(weights_only=False)``):
    the nested storage is read with ``weights_only=True``."""
    import torch

    return torch.load(io.BytesIO(b), weights_only=True)


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to the text encodings pickle itself uses for bytes objects."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode(encoding)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only an allow-list of globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        mod = module
        if module in ("__builtin__", "copy_reg"):  # Python 2 names
            mod = {"__builtin__": "builtins", "copy_reg": "copyreg"}[module]
        if mod.startswith("chumpy"):
            return ChStandIn
        if mod.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            return CscStandIn if name == "csc_matrix" else CsrStandIn
        if mod in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(_numpy_reconstruct(), name)
        if mod == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if mod in ("numpy.dtypes",) and name.endswith("DType"):
            import numpy.dtypes as npd

            cls = getattr(npd, name, None)
            if cls is not None:
                return cls
        if mod == "builtins" and name in ("set", "frozenset", "object", "list", "dict", "tuple", "slice"):
            import builtins

            return getattr(builtins, name)
        if mod == "_codecs" and name == "encode":  # how protocol-2 pickles from Python 3 store bytes
            return _codecs_encode
        if mod == "copyreg" and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if mod == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        # DECA's landmark_embedding.npy holds two torch tensors (plain-pickled).
        if mod == "torch._utils" and name == "_rebuild_tensor_v2":
            import torch._utils

            return torch._utils._rebuild_tensor_v2
        if mod == "torch.storage" and name == "_load_from_bytes":
            return _load_storage_from_bytes
        if mod == "torch" and name.endswith("Storage"):
            import torch

            cls = getattr(torch, name, None)
            if cls is not None:
                return cls
        raise UnsafePickleError(f"refusing to load global {module}.{name} (not on the allow-list)")


def restricted_load(data: bytes | io.BufferedIOBase, what: str = "pickle") -> Any:
    """Unpickle with :class:`RestrictedUnpickler` (``encoding='latin1'`` for Python 2 pickles).

    Raises ``ValueError`` (with ``what`` in the message) for truncated or invalid data and
    :class:`UnsafePickleError` (also a ``pickle.UnpicklingError``) for a forbidden global.
    """
    fh = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        return RestrictedUnpickler(fh, encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{what}: {e}") from None
    except EOFError as e:
        raise ValueError(f"{what}: truncated pickle (unexpected end of data)") from e
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, OverflowError) as e:
        raise ValueError(f"{what}: not a valid pickle ({type(e).__name__}: {e})") from e


def as_array(value: Any, what: str) -> np.ndarray:
    """A numeric array from an unpickled value (chumpy / sparse stand-in, torch tensor, array-like)."""
    if isinstance(value, ChStandIn):
        return value.to_array(what)
    if isinstance(value, SparseStandIn):
        return value.to_dense(what)
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch tensor (DECA embedding)
        return value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ValueError(f"{what}: expected a numeric array, got {type(value).__name__}")
    return arr
