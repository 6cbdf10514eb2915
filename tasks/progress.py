"""Progress of long stages: Prefect log lines and a Prefect progress artifact."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger


class StageProgress:
    """Report ``done/total`` at most every ``every`` seconds (and at the end).

    Use as the ``progress`` callback of library functions.
    """

    def __init__(self, label: str, *, every: float = 5.0) -> None:
        self.label = label
        self.every = every
        self._last = 0.0
        self._started = time.perf_counter()
        self._artifact_id = None
        self._logger = get_run_logger()
        try:
            self._artifact_id = create_progress_artifact(progress=0.0, description=label)
        except Exception:  # noqa: BLE001 - progress display must never fail a stage
            self._artifact_id = None

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < self.every:
            return
        self._last = now
        percent = 100.0 * done / max(total, 1)
        rate = done / max(now - self._started, 1e-9)
        self._logger.info("%s: %d/%d (%.0f%%, %.1f/s)", self.label, done, total, percent, rate)
        if self._artifact_id is not None:
            try:
                update_progress_artifact(self._artifact_id, progress=percent)
            except Exception:  # noqa: BLE001
                self._artifact_id = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Log a phase that has no count (reading, selecting, writing): when it starts and its seconds."""
        started = time.perf_counter()
        self._logger.info("%s: %s ...", self.label, name)
        yield
        self._logger.info("%s: %s done in %.1f s", self.label, name, time.perf_counter() - started)
