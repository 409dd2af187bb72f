"""Replies, and the faults that replace or spoil them: 500, 429, invalid JSON, hangs, dropped connections, and
the answer faults (dripped, huge, redirecting) that test a client's bounds."""

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
    """What to answer one HTTP request with; the HTTP handler waits `delay` first, or closes on `drop`.

    With `drip` set, the handler sends the whole answer, status line included, one byte every `drip` seconds.
    """

    code: int = 200
    payload: Any = None
    text: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    drip: float = 0.0
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


def redirect_reply(url: str) -> Reply:
    """A 302 to `url`, with the short JSON body a redirecting gateway might add."""
    return Reply(302, error_body("Moved"), headers={"Location": url}, note="redirect")


# Repeated to fill a huge answer: plain ASCII, so every character is one byte in the JSON too.
_FILLER = "Simulated runaway error text. "


def pad_reply(reply: Reply, size: int) -> None:
    """Pad a JSON reply to `size` bytes (a bigger one is left alone) with a long error message.

    The padding goes into the first item's `error_msg` when the answer lists scans (a scan with a 10 MB error),
    else into `error.message`. A reply sent as raw text (a malformed answer) is left as it is.
    """
    if reply.text is not None or not isinstance(reply.payload, dict):
        return
    missing = size - len(reply.body())
    if missing <= 0:
        return
    data = reply.payload.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        holder, key = data[0], "error_msg"
    else:
        if not isinstance(reply.payload.get("error"), dict):
            reply.payload["error"] = {}
        holder, key = reply.payload["error"], "message"
    # Swapping the old value for a string of length n changes the body by n + 2 (its quotes) - len(old JSON).
    length = missing + len(json.dumps(holder.get(key))) - 2
    holder[key] = (_FILLER * (length // len(_FILLER) + 1))[:length]
    reply.note = "+".join(filter(None, (reply.note, "huge")))
