"""One failure vocabulary for per-clip work (preprocessing a clip into samples, synthesizing a clip): a
:class:`ClipFailure` names the step that failed, and the driver records it as a failure row (clip, stage, error)
and goes on with the next clip. ``with stage("speech"): ...`` turns any exception of a step into one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["ClipFailure", "stage"]


class ClipFailure(Exception):
    """This clip failed at ``stage``; ``message`` says why (the failure tables store both)."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


@contextlib.contextmanager
def stage(name: str, context: str = "",
          passthrough: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Any exception in the block becomes ``ClipFailure(name, "[context: ]<Type>: <message>")``.

    A :class:`ClipFailure` raised inside keeps its own stage; ``passthrough`` exception types propagate unchanged
    (e.g. ``FileNotFoundError`` for a missing model file: a configuration error of the whole job, not of a clip).
    """
    try:
        yield
    except ClipFailure:
        raise
    except passthrough:
        raise
    except Exception as e:  # noqa: BLE001 - any error of this step is this clip's failure at this stage
        prefix = f"{context}: " if context else ""
        raise ClipFailure(name, f"{prefix}{type(e).__name__}: {e}") from e
