"""The protecto package as a whole: Django-free, and in step with its written contract, docs/protecto-api.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from protecto import parse_status_answer, parse_submit_answer

REPO = Path(__file__).resolve().parent.parent
CONTRACT = REPO / "docs" / "protecto-api.md"
_JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.DOTALL)
_CITED_DOC = re.compile(r"docs/[\w.-]+\.md")


def contract_examples() -> list[object]:
    """Every ```json example in the contract, decoded."""
    return [json.loads(block) for block in _JSON_BLOCK.findall(CONTRACT.read_text(encoding="utf-8"))]


def test_importing_protecto_loads_no_django():
    # A fresh interpreter: this test process has Django loaded already, so sys.modules here proves nothing.
    env = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
    script = (
        "import json, sys\n"
        "import protecto, protecto.answers, protecto.client, protecto.errors\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] == 'django')))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_contracts_status_examples_read_as_it_says():
    answers = [example for example in contract_examples() if isinstance(example.get("data"), list)]
    assert len(answers) == 2, "the contract shows one 2024 and one 2025 status answer"

    [in_2024] = parse_status_answer(answers[0])
    [in_2025] = parse_status_answer(answers[1])

    # 2024: trailing space in the status, "-" for the unset end time and for "no error".
    assert (in_2024.status, in_2024.raw_status) == ("IN-PROGRESS", "IN-PROGRESS ")
    assert in_2024.started_at is not None and in_2024.ended_at is None and in_2024.error_message == ""
    # 2025: request_status, a boolean success, and input_payload giving source and object path.
    assert (in_2025.status, in_2025.error_message) == ("FAILED", "Access denied to schema Marketingschema")
    assert in_2025.data_source == "salesforce"
    assert in_2025.object_path == "CustomerDB/Marketingschema/Customerstable"


def test_the_contracts_submit_example_yields_its_tracking_id():
    [submitted] = [example for example in contract_examples() if isinstance(example.get("data"), dict)]

    assert parse_submit_answer(submitted) == "47882682-9f38-4f45-afec-daadaa1b230b"


def test_every_contract_path_cited_in_code_exists():
    skipped = {".venv", "node_modules", "var"}
    cited: dict[str, list[str]] = {}
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if skipped.intersection(parts) or any(part.startswith(".") for part in parts):
            continue
        for doc in _CITED_DOC.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(doc, []).append(str(path.relative_to(REPO)))

    assert "docs/protecto-api.md" in cited
    missing = {doc: files for doc, files in cited.items() if not (REPO / doc).is_file()}
    assert missing == {}
