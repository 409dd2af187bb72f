"""python manage.py track ID [ID ...] [--file PATH|-] [--label TEXT]: start tracking scans."""

import sys

from django.core.management.base import BaseCommand, CommandError

from scans.forms import split_ids
from scans.services import scans_track


class Command(BaseCommand):
    help = "Start tracking Protecto scans by tracking ID. Invalid IDs are reported; the valid ones are stored."

    def add_arguments(self, parser) -> None:
        parser.add_argument("ids", nargs="*", metavar="ID", help="tracking IDs; - reads them from standard input")
        parser.add_argument(
            "--file",
            metavar="PATH",
            help="read IDs from a file (one per line, or separated by commas or spaces); '-' reads standard input",
        )
        parser.add_argument("--label", default="", help="a free-text label for every scan added")

    def handle(self, *args, **options) -> None:
        ids = [tracking_id for tracking_id in options["ids"] if tracking_id != "-"]
        if "-" in options["ids"] and options["file"] != "-":
            ids.extend(_read_ids("-"))  # `track -` reads standard input, like `--file -`
        if options["file"]:
            ids.extend(_read_ids(options["file"]))
        if not ids:
            raise CommandError("Give at least one tracking ID, or --file PATH (or --file - for standard input).")
        if len(options["label"]) > 200:
            raise CommandError("--label is longer than 200 characters.")

        result = scans_track(ids=ids, label=options["label"])
        for tracking_id in result.added:
            self.stdout.write(f"added            {tracking_id}")
        for tracking_id in result.already_tracked:
            self.stdout.write(f"already tracked  {tracking_id}")
        for raw, reason in result.rejected:
            self.stderr.write(f"rejected         {_shown(raw)}: {reason}")
        self.stdout.write(
            f"{len(result.added)} added, {len(result.already_tracked)} already tracked, "
            f"{len(result.rejected)} rejected"
        )
        if result.rejected:
            sys.exit(1)


def _read_ids(path: str) -> list[str]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not UTF-8 text") from None
    return split_ids(text)


def _shown(raw: str) -> str:
    """The rejected value, shortened and with control characters made visible, for a one-line message."""
    text = raw if len(raw) <= 60 else f"{raw[:57]}..."
    return repr(text)
