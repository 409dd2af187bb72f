"""Every environment variable the settings read is listed once, in dashboard/settings.py, and documented.

The settings module is the list: each `env_*("NAME", default)` call names a variable and its default. The
README's settings table and .env.example must name exactly those variables, and where .env.example shows a
value it must be the default the settings use.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_README_ROW = re.compile(r"^\| ((?:`[A-Z0-9_]+`(?:, )?)+) \|", re.MULTILINE)


def _settings_variables() -> dict[str, object]:
    """NAME -> default (a literal, or None when the default is computed) for every env_* call in the settings."""
    tree = ast.parse((ROOT / "dashboard" / "settings.py").read_text())
    found: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("env_"):
            name = node.args[0].value
            default = node.args[1] if len(node.args) > 1 else None
            found[name] = default.value if isinstance(default, ast.Constant) else None
    return found


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def _readme_variables() -> set[str]:
    rows = _README_ROW.findall((ROOT / "README.md").read_text())
    return {name for row in rows for name in re.findall(r"`([A-Z0-9_]+)`", row)}


def _normal(value: object) -> str:
    """10, 10.0 and "10" are one value; True and "true" too."""
    text = str(value).lower()
    try:
        return repr(float(text))
    except ValueError:
        return text


def test_the_settings_read_a_known_set_of_variables():
    # Guards the parser above: if it found nothing, the comparisons below would pass vacuously.
    assert {"DATABASE_URL", "PROTECTO_API_URL", "DEMO_MODE", "SECRET_KEY"} <= set(_settings_variables())


def test_env_example_lists_exactly_the_variables_the_settings_read():
    assert set(_env_example()) == set(_settings_variables())


def test_the_readme_table_lists_exactly_the_variables_the_settings_read():
    assert _readme_variables() == set(_settings_variables())


def test_a_value_shown_in_env_example_is_the_settings_default():
    defaults = _settings_variables()
    shown = {name: value for name, value in _env_example().items() if value}

    wrong = {
        name: (value, defaults[name])
        for name, value in shown.items()
        if defaults.get(name) is not None and _normal(defaults[name]) != _normal(value)
    }
    assert not wrong, f".env.example value differs from the settings default: {wrong}"
