"""python -m demo.simulator: serve the Protecto simulator on a port until Ctrl-C (or SIGTERM).

No Django: the simulator starts even while the dashboard's database is being migrated, and without settings.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from demo.simulator import ProtectoSimulator, SimulatorConfig
from demo.simulator.persistence import StateFileError

_TRUE = {"1", "true", "yes", "on"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the message names the option, and --help is there for the rest.
        self.exit(2, f"{self.prog}: {message}\n")


class OptionError(ValueError):
    """An option value the simulator cannot run with; the message names the option."""


def build_parser() -> argparse.ArgumentParser:
    """One option per SimulatorConfig setting, plus where to listen."""
    parser = _Parser(prog="python -m demo.simulator", description="Serve a simulated Protecto Data Scan API.")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    add("--port", type=int, default=8765, help="Port to listen on; 0 picks a free one.")
    add("--shape", choices=("2024", "2025"), default="2024", help="Answer shape of the docs.")
    add(
        "--token",
        help="Bearer token to accept (default: $SIMULATOR_TOKEN, else $PROTECTO_AUTH_TOKEN when DEMO_MODE is "
        "true, else simulator-token).",
    )
    add("--latency", type=float, default=0.0, help="Seconds added to every answer.")
    add("--error-rate", type=float, default=0.0, help="Fraction of calls answered 500.")
    add("--rate-limit-rate", type=float, default=0.0, help="Fraction answered 429.")
    add("--retry-after", type=float, default=1, help="Retry-After seconds sent with a 429.")
    add("--malformed-rate", type=float, default=0.0, help="Fraction answered invalid JSON.")
    add("--hang-rate", type=float, default=0.0, help="Fraction that wait --hang-seconds.")
    add("--hang-seconds", type=float, default=30.0, help="How long a hanging call waits.")
    add(
        "--drip-seconds",
        type=float,
        default=0.0,
        help="Send every API answer (status line, headers, body) one byte every this many seconds; 0 is off.",
    )
    add(
        "--huge-bytes",
        type=int,
        default=0,
        help="Pad every API answer to this many bytes with a long error message (the first scan's error_msg "
        "when the answer lists scans, e.g. 10000000 for a 10 MB error); 0 is off.",
    )
    add(
        "--redirect-url",
        default="",
        help="Answer every API call with a 302 to this URL (or path) instead; empty is off.",
    )
    add("--pending-seconds", default="5,40", help="MIN,MAX seconds a new scan stays PENDING.")
    add("--running-seconds", default="10,90", help="MIN,MAX seconds a scan stays IN-PROGRESS.")
    add("--failure-rate", type=float, default=0.25, help="Fraction of scans ending FAILED.")
    add(
        "--no-accept-unknown",
        action="store_true",
        help="Leave IDs the simulator has not seen out of status answers instead of creating them.",
    )
    add("--seed", type=int, default=None, help="Seed for reproducible randomness.")
    add("--quiet", action="store_true", help="Do not log one line per request.")
    _add_supervisor_options(add)
    return parser


def _add_supervisor_options(add: Callable[..., object]) -> None:
    """What `make run` needs: scans that survive a restart, and a port handed over already bound."""
    add(
        "--state-file",
        default=None,
        help="Keep the scans in this JSON file: read at start, written on every change, so a restart never "
        "sends a scan back to an earlier status (default: scans live in memory only).",
    )
    add(
        "--fd",
        type=int,
        default=None,
        help="Serve on this inherited, already bound socket instead of --host/--port (how `make run` hands over "
        "a port it reserved).",
    )


def _seconds_range(option: str, text: str) -> tuple[float, float]:
    """Read "MIN,MAX" seconds."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise OptionError(f"{option} must be MIN,MAX in seconds (e.g. 5,40), not {text!r}") from None


def token_from(given: str | None, environ: Mapping[str, str]) -> str:
    """--token, else $SIMULATOR_TOKEN, else $PROTECTO_AUTH_TOKEN in demo mode, else simulator-token."""
    if given is not None:
        return given
    from_env = environ.get("SIMULATOR_TOKEN", "").strip()
    if from_env:
        return from_env
    # Only in demo mode is the dashboard's token meant for the simulator; a real tenant's token stays put.
    dashboard_token = environ.get("PROTECTO_AUTH_TOKEN", "").strip()
    if environ.get("DEMO_MODE", "").strip().lower() in _TRUE and dashboard_token:
        return dashboard_token
    return "simulator-token"


def config_from(options: argparse.Namespace, environ: Mapping[str, str]) -> SimulatorConfig:
    """The validated SimulatorConfig for parsed options; OptionError names what is wrong."""
    if not 0 <= options.port <= 65535:
        raise OptionError(f"--port must be between 0 and 65535, not {options.port}")
    config = SimulatorConfig(
        token=token_from(options.token, environ),
        shape=options.shape,
        latency=options.latency,
        error_rate=options.error_rate,
        rate_limit_rate=options.rate_limit_rate,
        retry_after=options.retry_after,
        malformed_rate=options.malformed_rate,
        hang_rate=options.hang_rate,
        hang_seconds=options.hang_seconds,
        drip_seconds=options.drip_seconds,
        huge_bytes=options.huge_bytes,
        redirect_url=options.redirect_url,
        pending_seconds=_seconds_range("--pending-seconds", options.pending_seconds),
        running_seconds=_seconds_range("--running-seconds", options.running_seconds),
        failure_rate=options.failure_rate,
        accept_unknown_ids=not options.no_accept_unknown,
        seed=options.seed,
        quiet=options.quiet,
    )
    try:
        config.validate()
    except ValueError as exc:
        # Setting names in the message map to the options: error_rate is --error-rate.
        raise OptionError(f"invalid simulator option: {exc}") from None
    return config


def _announce(config: SimulatorConfig) -> Callable[[str], None]:
    def announce(url: str) -> None:
        print(f"Protecto simulator ({config.shape} shape) serving on {url}", flush=True)
        if config.quiet:
            return  # under a supervisor (`make run`): the one line is enough
        print(f"  status: {', '.join(config.status_paths)}; async: {', '.join(config.submit_paths)}")
        # Piped output is block-buffered; a supervisor or test waiting for the URL must see it now.
        print("  Ctrl-C to stop.", flush=True)

    return announce


def _inherited_socket(fd: int) -> socket.socket:
    """The listening TCP socket a parent passed as file descriptor `fd`."""
    listener = socket.socket(fileno=fd)
    if listener.type != socket.SOCK_STREAM:
        raise OSError(f"file descriptor {fd} is not a TCP socket")
    return listener


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and serve until stopped: 0 on a clean stop, 2 on bad options, 1 if it cannot listen."""
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        config = config_from(options, os.environ)
    except OptionError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    try:
        simulator = ProtectoSimulator(config, state_file=options.state_file)
    except StateFileError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    # A supervisor (demo/run.py) stops its children with SIGTERM; that is a normal stop, not a crash.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        listener = _inherited_socket(options.fd) if options.fd is not None else None
        simulator.serve_forever(options.host, options.port, on_ready=_announce(config), listener=listener)
    except OSError as exc:
        where = f"file descriptor {options.fd}" if options.fd is not None else f"{options.host}:{options.port}"
        print(f"{parser.prog}: could not listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Simulator stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
