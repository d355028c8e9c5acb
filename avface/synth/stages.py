"""Which step of a clip's synthesis failed: ``with stage("speech"): ...`` turns any exception into a
:class:`StageError` naming the step, which the corpus driver records as a failure row (kind, clip, stage, error)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["StageError", "stage"]


class StageError(Exception):
    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    try:
        yield
    except StageError:
        raise
    except Exception as e:  # noqa: BLE001 - any error of this step is this clip's failure at this stage
        raise StageError(name, f"{type(e).__name__}: {e}") from e
