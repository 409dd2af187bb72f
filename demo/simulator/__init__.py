"""A stand-in for Protecto's Data Scan APIs, served over real HTTP (development and tests only).

The real API is out of reach from this project, so the demo and the tests talk to this simulator instead. It
speaks the contract in docs/protecto-api.md, quirks included: statuses with trailing spaces, "-" for unset
timestamps and errors, `success` as a string in the 2024 shape and a boolean in the 2025 shape. Scans move
PENDING -> IN-PROGRESS -> SUCCESS/FAILED on a clock, so statuses change by themselves between polls.

Faults (500, 429 with Retry-After, invalid JSON, hangs, dropped connections) can be drawn at random rates or
queued deterministically with `fail_next()`, and everything can be steered in-process or over the `/_sim/`
control endpoints. Standard library only; nothing Django. Run it alone with `python -m demo.simulator`.

- config.py: settings (SimulatorConfig) and the status vocabulary
- scans.py: one simulated scan, its clock, and its answer in the 2024 and 2025 shapes
- faults.py: replies and the faults that replace or spoil them
- state.py: the state machine (scans, queued faults, request log), no sockets
- persistence.py: the scans in a JSON file (--state-file), so a restarted simulator never rewinds a scan
- server.py: ProtectoSimulator, the state on a real port with the /_sim/ control endpoints
"""

from demo.simulator.config import (
    FAILED,
    FAILURE_MESSAGES,
    IN_PROGRESS,
    PENDING,
    SUCCESS,
    SimulatorConfig,
)
from demo.simulator.faults import FAULT_KINDS
from demo.simulator.scans import SimulatedScan
from demo.simulator.server import ProtectoSimulator

__all__ = (
    "FAILED",
    "FAILURE_MESSAGES",
    "FAULT_KINDS",
    "IN_PROGRESS",
    "PENDING",
    "SUCCESS",
    "ProtectoSimulator",
    "SimulatedScan",
    "SimulatorConfig",
)
