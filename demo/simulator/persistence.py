"""The simulator's scans on disk: one JSON file, read at start and replaced whole on every change."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from demo.simulator.scans import SimulatedScan


class StateFileError(ValueError):
    """The saved state file exists but cannot be read back; the message names the file."""


_STATE_VERSION = 1


def load_scans(path: Path) -> dict[str, SimulatedScan]:
    """The scans a state file holds ({} when there is no file yet); StateFileError when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateFileError(f"cannot read the saved state {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
            raise ValueError(f"not a version {_STATE_VERSION} state file")
        scans = [SimulatedScan.from_record(record) for record in data["scans"]]
    except (ValueError, KeyError, TypeError) as exc:
        # Starting empty instead would quietly send every tracked scan back to PENDING: refuse, and say how.
        raise StateFileError(
            f"the saved state {path} is unreadable ({exc}); delete it to start with no simulated scans"
        ) from None
    return {scan.tracking_id: scan for scan in scans}


def _write_atomically(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON, so a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_scans(path: Path, scans: Iterable[SimulatedScan]) -> None:
    """Write the scans to `path`, replacing what it held."""
    _write_atomically(path, {"version": _STATE_VERSION, "scans": [scan.to_record() for scan in scans]})
