"""The demo keeps moving: while `make run` runs in demo mode, a new scan every 20-40 seconds, for ever.

Most new scans are started through the simulator's Data Scan Async endpoint, as a real client starts them, and
end as the simulator's plan draws (about one in four fails). In every round of eight, one is planned to fail
and one is already stuck (waiting or running past the dashboard's stuck limits), so a demo left open shows
every state the dashboard knows. Each scan is tracked through the product's own service, like one an operator
adds. This lives in demo/, never in the product: the production image does not contain it.
"""

from __future__ import annotations

import random
import sys
import threading
from typing import TextIO

# The kinds of scan, in the order one round adds them.
ROUND = ("normal", "normal", "normal", "failing", "normal", "normal", "normal", "stuck")
DEFAULT_EVERY = (20.0, 40.0)


def demo_scan_start(*, kind: str, rng: random.Random, stuck_running: bool = True) -> str:
    """Start one demo scan of `kind` ("normal", "failing" or "stuck") in the simulator, track it, return its ID.

    A stuck scan is IN-PROGRESS past STUCK_RUNNING_MINUTES, or with `stuck_running=False` PENDING past
    STUCK_PENDING_MINUTES. Raises DemoError or ProtectoError when the simulator refuses or does not answer.
    """
    from demo.seed import JOBS, failing_spec, simulator_add_scans, stuck_spec
    from scans.refresh import protecto_client_from_settings
    from scans.services import scans_track

    if kind == "normal":
        label, source, objects = rng.choice(JOBS)
        samples = [{"column_name": "email", "samples": [f"user{rng.randint(1, 999)}@example.com"]}]
        with protecto_client_from_settings() as client:
            tracking_id = client.submit_scan(data_source_name=source, object_name=objects, data_samples=samples)
    elif kind in ("failing", "stuck"):
        spec = failing_spec(rng) if kind == "failing" else stuck_spec(running=stuck_running, rng=rng)
        simulator_add_scans([spec])
        tracking_id, label = spec["tracking_id"], spec["label"]
    else:
        raise ValueError(f"unknown kind of demo scan {kind!r}")
    scans_track(ids=[tracking_id], label=label)
    return tracking_id


class DemoFeed:
    """A daemon thread that calls demo_scan_start() every `every` seconds (drawn between MIN and MAX).

    It says nothing while all goes well (new scans show on the dashboard, not in the log), one line when adding
    a scan starts failing (the simulator gone, the database locked) and one when it works again.
    """

    def __init__(
        self,
        *,
        every: tuple[float, float] = DEFAULT_EVERY,
        rng: random.Random | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.every = every
        self.added = 0
        self._rng = rng or random.Random()
        self._out = out or sys.stdout
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-feed", daemon=True)

    def start(self) -> DemoFeed:
        """Start adding scans in the background; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the scan being added now, if any (waits at most `timeout` seconds)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        from django.db import connection

        failing = False
        while not self._stopping.wait(self._rng.uniform(*self.every)):
            kind = ROUND[self.added % len(ROUND)]
            try:
                # Alternate the two ways of being stuck: running too long, then waiting too long.
                demo_scan_start(kind=kind, rng=self._rng, stuck_running=self.added % (2 * len(ROUND)) < len(ROUND))
            except Exception as exc:
                if not failing:
                    self._say(f"demo: adding a new scan failed ({type(exc).__name__}: {exc}); will keep trying")
                failing = True
                continue
            finally:
                # A thread's connection is never closed by a request cycle; keep none open between scans.
                connection.close()
            if failing:
                self._say("demo: adding new scans works again")
                failing = False
            self.added += 1

    def _say(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()
