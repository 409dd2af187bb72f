"""How many status checks adaptive polling saves on a realistic mix of scans (no servers: the schedule alone).

    .venv/bin/python bench/adaptive_polling.py [--scans 10000] [--max-interval 300]

Each scan waits PENDING, then runs IN-PROGRESS, then ends; both durations are drawn from log-normal
distributions (medians 2 min and 15 min, a long tail of multi-hour runs, the shape queue and run times usually
have). Every scan is checked from submission until the check that sees its end, once with a fixed
REFRESH_INTERVAL_SECONDS and once with scans.schedule.next_check_delay (the delay restarts at each change).
Prints checks per scan, the API calls per hour at the given number of active scans (batches of 100), the share
saved, and how much later the end of a scan is seen on average and at p95.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

START = datetime(2026, 1, 1, tzinfo=UTC)


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=10_000, help="active scans at any time (steady state)")
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--max-interval", type=int, default=120)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261129)
    return parser.parse_args()


def _lifetime(rng: random.Random) -> tuple[timedelta, timedelta]:
    pending = timedelta(seconds=rng.lognormvariate(math.log(120), 1.0))
    running = timedelta(seconds=rng.lognormvariate(math.log(900), 1.0))
    return pending, running


def _checks(changes: list[datetime], end: datetime, delay_for) -> tuple[int, timedelta]:
    """Checks from the first change until one sees `end`; and how long after `end` that check came."""
    now, checks, last_change = changes[0], 0, changes[0]
    while True:
        now += delay_for(last_change, now)
        checks += 1
        if now >= end:
            return checks, now - end
        seen = [moment for moment in changes if moment <= now]
        last_change = seen[-1]


def main() -> int:
    args = _options()
    from django.conf import settings

    settings.configure(REFRESH_INTERVAL_SECONDS=args.interval, REFRESH_MAX_INTERVAL_SECONDS=args.max_interval)
    from scans.schedule import next_check_delay

    rng = random.Random(args.seed)
    fixed = timedelta(seconds=args.interval)
    samples = [_lifetime(rng) for _ in range(2000)]
    results = {"fixed": [], "adaptive": []}
    for pending, running in samples:
        changes = [START, START + pending]
        end = START + pending + running
        results["fixed"].append(_checks(changes, end, lambda _last, _now: fixed))
        adaptive = lambda last, now: next_check_delay(last_change=last, now=now)  # noqa: E731
        results["adaptive"].append(_checks(changes, end, adaptive))
    _print(args, samples, results)
    return 0


def _print(args: argparse.Namespace, samples: list, results: dict) -> None:
    lifetimes = [(pending + running).total_seconds() for pending, running in samples]
    mean_life = statistics.fmean(lifetimes)
    print(
        f"{len(samples)} simulated scans; lifetime median {statistics.median(lifetimes) / 60:.0f} min, "
        f"mean {mean_life / 60:.0f} min; interval {args.interval} s, adaptive cap {args.max_interval} s"
    )
    # Steady state: `scans` active at any time, so scans finish at scans / mean lifetime per second.
    finishing_per_hour = args.scans / mean_life * 3600
    calls = {}
    for name, rows in results.items():
        checks = [n for n, _ in rows]
        late = sorted(lag.total_seconds() for _, lag in rows)
        calls[name] = statistics.fmean(checks) * finishing_per_hour / args.batch
        print(
            f"{name:<9} checks per scan {statistics.fmean(checks):7.1f}   API calls/hour at {args.scans:,} active "
            f"{calls[name]:9,.0f}   end seen late by mean {statistics.fmean(late):5.0f} s, "
            f"p95 {late[int(0.95 * len(late))]:5.0f} s"
        )
    print(
        f"adaptive saves {1 - calls['adaptive'] / calls['fixed']:.0%} of API calls "
        f"({calls['fixed'] - calls['adaptive']:,.0f} calls/hour)"
    )


if __name__ == "__main__":
    sys.exit(main())
