"""python manage.py track ID [ID ...] [--file PATH|-] [--label TEXT]: start tracking scans and refresh them now."""

import sys

from django.core.management.base import BaseCommand, CommandError

from scans import id_input
from scans.services import QueueRequest, scans_request_refresh, scans_track_entries


class Command(BaseCommand):
    help = (
        "Start tracking Protecto scans by tracking ID and have them refreshed at once. Entries are read as on the "
        "Add page: invalid ones are reported (exit status 1), repeats are reported, the valid ones are stored."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("ids", nargs="*", metavar="ID", help="tracking IDs; - reads them from standard input")
        parser.add_argument(
            "--file",
            metavar="PATH",
            help=(
                "read IDs from a file (one per line, or separated by commas, semicolons or tabs; a .csv file is "
                "read as on the Add page, with its Tracking ID and Label columns); '-' reads standard input"
            ),
        )
        parser.add_argument("--label", default="", help="a free-text label for every scan added")

    def handle(self, *args, **options) -> None:
        if len(options["label"]) > id_input.MAX_LABEL:
            raise CommandError(f"--label is longer than {id_input.MAX_LABEL} characters.")
        parsed = _read_input(options["ids"], options["file"])
        if not parsed.size:
            raise CommandError("Give at least one tracking ID, or --file PATH (or --file - for standard input).")

        # Recorded in the audit log as done by the command: no account runs it.
        result = scans_track_entries(entries=parsed.entries, label=options["label"], user="manage.py")
        # The same immediate refresh the Add page asks for: new scans never wait a whole cycle "Not checked yet".
        queue = scans_request_refresh() if result.added else None
        self._report(parsed, result, queue)
        if parsed.rejected:
            sys.exit(1)

    def _report(self, parsed: id_input.IdInput, result, queue: QueueRequest | None) -> None:
        for tracking_id in result.added:
            self.stdout.write(f"added            {tracking_id}")
        for tracking_id in result.already_tracked:
            self.stdout.write(f"already tracked  {tracking_id}")
        for tracking_id in parsed.repeated + result.repeated:
            self.stdout.write(f"repeated         {tracking_id} (given more than once; added once)")
        for raw, reason in parsed.rejected:
            self.stderr.write(f"rejected         {_shown(raw)}: {reason}")
        self.stdout.write(
            f"{len(result.added)} added, {len(result.already_tracked)} already tracked, "
            f"{len(parsed.repeated) + len(result.repeated)} repeated, {len(parsed.rejected)} rejected"
        )
        if queue is None:
            return
        if queue.unreachable:
            self.stderr.write("The task queue is unreachable: the new scans are polled at the next refresh cycle.")
        elif queue.sent:
            self.stdout.write("Refresh queued: a worker polls the new scans now.")
        else:  # inside a transaction that has not committed yet: the request goes out when it does
            self.stdout.write("Refresh requested for when this transaction commits.")


def _read_input(ids: list[str], path: str | None) -> id_input.IdInput:
    """Arguments, standard input and the file, read by the Add page's parser (a .csv file as a CSV)."""
    pasted = [tracking_id for tracking_id in ids if tracking_id != "-"]
    if "-" in ids and path != "-":
        pasted.append(_read_text("-"))  # `track -` reads standard input, like `--file -`
    csv_text = ""
    if path and path.lower().endswith(".csv"):
        csv_text = _read_text(path)
    elif path:
        pasted.append(_read_text(path))
    try:
        return id_input.read(pasted="\n".join(pasted), csv_text=csv_text)
    except id_input.IdInputError as exc:
        raise CommandError(f"{path}: {exc}") from None


def _read_text(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not UTF-8 text") from None


def _shown(raw: str) -> str:
    """The rejected value, shortened and with control characters made visible, for a one-line message."""
    text = raw if len(raw) <= 60 else f"{raw[:57]}..."
    return repr(text)
