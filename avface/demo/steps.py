"""Resumable steps of the main job: one progress line per step on the console, full logs in a file.

A step's outputs are recorded in ``<out>/steps/<name>.json`` (its paths, summary and seconds), written atomically
after the outputs themselves: a re-run skips every step whose marker exists and reuses what it recorded.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avface.utils.files import atomic_path
from avface.utils.jsonable import json_default

__all__ = ["StepRecord", "StepRunner", "quiet_console_logging"]

log = logging.getLogger("avface.main")

#: loggers whose warnings repeat without telling the user anything they can act on (logged to the file only)
NOISY = frozenset({"ray", "mlflow", "alembic", "urllib3", "filelock"})  # top-level logger names
#: our own warnings that every model construction repeats; the job says it once itself (to the file only)
ONCE_BY_JOB = frozenset({"avface.models.perceptual"})


@dataclass
class StepRecord:
    name: str
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # finished by an earlier run


class _OncePerMessage(logging.Filter):
    """Let each distinct message through once (e.g. the per-worker 'loss disabled' warnings)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


def quiet_console_logging(log_file: Path) -> Path:
    """Everything (INFO and up, every logger) to ``log_file``; the console gets this job's own warnings once each
    and no third-party chatter (Ray, MLflow: they stay in the file)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a progress bar per model download
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        # ours from an earlier call, and console handlers of others (Hydra's INFO lines) leave the console
        if getattr(h, "_avface_main", False) or type(h) is logging.StreamHandler:
            root.removeHandler(h)
    fh = logging.FileHandler(log_file, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh._avface_main = True  # type: ignore[attr-defined]
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("  warning: %(message)s"))
    console.addFilter(lambda r: r.name.split(".")[0] not in NOISY and r.name not in ONCE_BY_JOB)
    console.addFilter(_OncePerMessage())
    console._avface_main = True  # type: ignore[attr-defined]
    root.addHandler(fh)
    root.addHandler(console)
    for name in NOISY:  # libraries with their own console handlers (MLflow's database set-up lines): to the file
        lib = logging.getLogger(name)
        for h in list(lib.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lib.removeHandler(h)
        lib.propagate = True
    return log_file


class StepRunner:
    """Runs named steps in order, skipping finished ones; ``records`` holds each step's outcome and time."""

    def __init__(self, out: Path, total: int, echo: Callable[[str], None] = print):
        self.markers = out / "steps"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.total = total
        self.echo = echo
        self.records: list[StepRecord] = []

    def marker(self, name: str) -> Path:
        return self.markers / f"{name}.json"

    def run(self, name: str, title: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` (-> a JSON-able dict of outputs) unless an earlier run finished the step."""
        n = len(self.records) + 1
        marker = self.marker(name)
        if marker.exists():
            rec = json.loads(marker.read_text())
            self.records.append(StepRecord(name, float(rec["seconds"]), rec["outputs"], skipped=True))
            self.echo(f"[{n}/{self.total}] {title}: done before ({rec['seconds']:.0f} s then), skipped")
            return rec["outputs"]
        log.info("step %s (%s) starts", name, title)
        t0 = time.perf_counter()
        outputs = fn()
        seconds = time.perf_counter() - t0
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps({"seconds": seconds, "outputs": outputs}, indent=1, default=json_default))
        self.records.append(StepRecord(name, seconds, json.loads(json.dumps(outputs, default=json_default))))
        summary = outputs.get("summary", "")
        self.echo(f"[{n}/{self.total}] {title}: {seconds:.0f} s" + (f" ({summary})" if summary else ""))
        log.info("step %s finished in %.1f s: %s", name, seconds, outputs)
        return outputs
