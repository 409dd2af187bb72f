"""The code keeps the shape the next engineer can read: small functions, and the product never needs the demo."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dashboard", "scans", "protecto", "demo")
MAX_FUNCTION_LINES = 55  # "about 50": a signature or docstring may push one a little past
MAX_FILE_LINES = 500


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def test_no_function_is_longer_than_about_fifty_lines():
    too_long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert not too_long


def test_no_module_is_longer_than_five_hundred_lines():
    too_long = {
        str(path.relative_to(ROOT)): n for path in _modules() if (n := len(path.read_text().splitlines())) > 500
    }
    assert not too_long
