"""Replies, and the faults that replace or spoil them: 500, 429, invalid JSON, hangs, dropped connections."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from demo.simulator.config import SimulatorConfig

# Kinds accepted by fail_next(). "401-echo" and "success-false" exist only as queued faults: they model a
# misbehaving server that echoes the presented token, and a refusal sent as HTTP 200 with success "false".
FAULT_KINDS = ("500", "429", "malformed", "hang", "drop", "401-echo", "success-false")


@dataclass
class Reply:
    """What to answer one HTTP request with; the HTTP handler waits `delay` first, or closes on `drop`."""

    code: int = 200
    payload: Any = None
    text: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    batch: int | None = None
    note: str = ""

    def body(self) -> bytes:
        """The bytes to send: `text` verbatim when set (a malformed answer), else the payload as JSON."""
        text = self.text if self.text is not None else json.dumps(self.payload)
        return text.encode("utf-8")


def error_body(message: str) -> dict[str, Any]:
    """Protecto's error answer: no data, success "false" and a message."""
    return {"data": None, "success": "false", "error": {"message": message}}


def drop_first_comma(text: str) -> str:
    """Reproduce the docs' sample answer, which lacks the comma after the data value."""
    for marker in ('], "success"', '}, "success"', 'null, "success"'):
        if marker in text:
            return text.replace(marker, marker.replace(",", ""), 1)
    return text[: max(len(text) // 2, 1)]


def draw_fault(forced: deque[str], rng: random.Random, config: SimulatorConfig) -> tuple[str | None, bool]:
    """(answer fault or None, hang?) for one API call: queued faults first, then the configured rates.

    One draw is compared against the 500, 429 and malformed rates in that order, so rates adding up to more
    than 1 simply leave less room for the later kinds. The caller holds the simulator's lock.
    """
    if forced:
        kind = forced.popleft()
        return (None, True) if kind == "hang" else (kind, False)
    hang = config.hang_rate > 0 and rng.random() < config.hang_rate
    draw = rng.random()
    for kind, rate in (("500", config.error_rate), ("429", config.rate_limit_rate)):
        if draw < rate:
            return kind, hang
        draw -= rate
    if draw < config.malformed_rate:
        return "malformed", hang
    return None, hang


def failure_reply(kind: str | None, config: SimulatorConfig, headers: Mapping[str, str]) -> Reply | None:
    """The reply for a fault that replaces the answer, or None when the call is answered (maybe malformed)."""
    if kind == "500":
        return Reply(500, error_body("Internal server error (simulated)"), note="500")
    if kind == "429":
        seconds = config.retry_after
        shown = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
        return Reply(429, error_body("Too many requests"), headers={"Retry-After": shown}, note="429")
    if kind == "drop":
        return Reply(drop=True, note="drop")
    if kind == "401-echo":
        _, _, presented = (headers.get("Authorization") or "").partition(" ")
        return Reply(401, error_body(f"Token {presented.strip()} is invalid or expired"), note="401-echo")
    if kind == "success-false":
        message = "Data Scan APIs need a paid subscription; this token belongs to a trial tenant"
        return Reply(200, error_body(message), note="success-false")
    return None
