"""Serve the Protecto simulator (scans/simulator.py) on a port until Ctrl-C."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scans.simulator import ProtectoSimulator, SimulatorConfig


def _seconds_range(option: str, text: str) -> tuple[float, float]:
    """Read "MIN,MAX" seconds."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise CommandError(f"{option} must be MIN,MAX in seconds (e.g. 5,40), not {text!r}") from None
    return low, high


class Command(BaseCommand):
    help = "Serve a simulated Protecto Data Scan API (status and async endpoints) for the demo and for tests."
    # The simulator needs no database or app checks, so it starts even while models are being migrated.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """One option per SimulatorConfig setting."""
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8765, help="Port to listen on; 0 picks a free one.")
        parser.add_argument("--shape", choices=("2024", "2025"), default="2024", help="Answer shape of the docs.")
        parser.add_argument(
            "--token",
            help="Bearer token to accept (default: $SIMULATOR_TOKEN, else the dashboard's token in demo mode, "
            "else simulator-token).",
        )
        parser.add_argument("--latency", type=float, default=0.0, help="Seconds added to every answer.")
        parser.add_argument("--error-rate", type=float, default=0.0, help="Fraction of calls answered 500.")
        parser.add_argument("--rate-limit-rate", type=float, default=0.0, help="Fraction answered 429.")
        parser.add_argument("--retry-after", type=float, default=1, help="Retry-After seconds sent with a 429.")
        parser.add_argument("--malformed-rate", type=float, default=0.0, help="Fraction answered invalid JSON.")
        parser.add_argument("--hang-rate", type=float, default=0.0, help="Fraction that wait --hang-seconds.")
        parser.add_argument("--hang-seconds", type=float, default=30.0, help="How long a hanging call waits.")
        parser.add_argument("--pending-seconds", default="5,40", help="MIN,MAX seconds a new scan stays PENDING.")
        parser.add_argument("--running-seconds", default="10,90", help="MIN,MAX seconds a scan stays IN-PROGRESS.")
        parser.add_argument("--failure-rate", type=float, default=0.25, help="Fraction of scans ending FAILED.")
        parser.add_argument(
            "--no-accept-unknown",
            action="store_true",
            help="Leave IDs the simulator has not seen out of status answers instead of creating them.",
        )
        parser.add_argument("--seed", type=int, default=None, help="Seed for reproducible randomness.")
        parser.add_argument("--quiet", action="store_true", help="Do not log one line per request.")

    def _token(self, given: str | None) -> str:
        """--token, else $SIMULATOR_TOKEN, else the dashboard's token in demo mode, else simulator-token."""
        if given is not None:
            return given
        from_env = os.environ.get("SIMULATOR_TOKEN", "").strip()
        if from_env:
            return from_env
        # Only in demo mode is the dashboard's token meant for the simulator; a real tenant's token stays put.
        if getattr(settings, "DEMO_MODE", False) and getattr(settings, "PROTECTO_AUTH_TOKEN", ""):
            return settings.PROTECTO_AUTH_TOKEN
        return "simulator-token"

    def handle(self, *args: Any, **options: Any) -> None:
        """Validate the options, then serve until interrupted."""
        port = options["port"]
        if not 0 <= port <= 65535:
            raise CommandError(f"--port must be between 0 and 65535, not {port}")
        config = SimulatorConfig(
            token=self._token(options["token"]),
            shape=options["shape"],
            latency=options["latency"],
            error_rate=options["error_rate"],
            rate_limit_rate=options["rate_limit_rate"],
            retry_after=options["retry_after"],
            malformed_rate=options["malformed_rate"],
            hang_rate=options["hang_rate"],
            hang_seconds=options["hang_seconds"],
            pending_seconds=_seconds_range("--pending-seconds", options["pending_seconds"]),
            running_seconds=_seconds_range("--running-seconds", options["running_seconds"]),
            failure_rate=options["failure_rate"],
            accept_unknown_ids=not options["no_accept_unknown"],
            seed=options["seed"],
            quiet=options["quiet"],
        )
        try:
            config.validate()
        except ValueError as exc:
            # Setting names in the message map to the options: error_rate is --error-rate.
            raise CommandError(f"invalid simulator option: {exc}") from None

        def announce(url: str) -> None:
            self.stdout.write(
                f"Protecto simulator ({config.shape} shape) serving on {url}\n"
                f"  status: {', '.join(config.status_paths)}; async: {', '.join(config.submit_paths)}\n"
                "  Ctrl-C to stop."
            )
            # Piped output is block-buffered; a supervisor or test waiting for the URL must see it now.
            self.stdout.flush()

        simulator = ProtectoSimulator(config)
        try:
            simulator.serve_forever(options["host"], port, on_ready=announce)
        except OSError as exc:
            raise CommandError(f"could not listen on {options['host']}:{port}: {exc.strerror or exc}") from None
        except KeyboardInterrupt:
            self.stdout.write("Simulator stopped.")
