"""The README stays true: the settings table matches the code row by row, every documented close code is one the
relay uses, the test prerequisites are the packages ./run-tests needs, and what it links to and quotes exists."""

from __future__ import annotations

import re

from relay.config import SETTINGS
from relay.protocol import CloseCode
from tests.harness import REPO

README = (REPO / "README.md").read_text()
# | `ENV` | `--flag` or env only | `default` or — | meaning |
SETTING_ROW = re.compile(r"^\| `([A-Z_]+)` \| ([^|]+) \| (`[^`]*`|—) \| ([^|]+) \|$", flags=re.MULTILINE)


def settings_rows() -> dict[str, tuple[str, str, str]]:
    return {
        env: (flag.strip(), default, meaning.strip())
        for env, flag, default, meaning in SETTING_ROW.findall(README)
    }


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE))
    assert {s.env for s in SETTINGS} <= documented
    assert documented <= {s.env for s in SETTINGS}


def test_every_row_of_the_settings_table_matches_the_code() -> None:
    rows = settings_rows()
    assert set(rows) == {s.env for s in SETTINGS}, (
        "a row that is not shaped | `ENV` | flag | `default` | meaning |"
    )
    for setting in SETTINGS:
        flag, default, meaning = rows[setting.env]
        assert flag == ("env only" if setting.secret else f"`--{setting.name.replace('_', '-')}`"), (
            setting.env
        )
        assert default == (f"`{setting.default}`" if setting.default else "—"), setting.env
        assert meaning, setting.env


def test_the_instructions_row_quotes_the_default_in_full() -> None:
    instructions = next(s for s in SETTINGS if s.env == "RELAY_INSTRUCTIONS")
    assert settings_rows()["RELAY_INSTRUCTIONS"][1] == f"`{instructions.default}`"


def test_every_close_code_is_documented() -> None:
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", README, flags=re.MULTILINE)}
    assert {int(code) for code in CloseCode} <= documented


def test_the_commands_exist() -> None:
    for script in ("run-relay", "run-tests", "run-checks"):
        assert f"./{script}" in README
        assert (REPO / script).stat().st_mode & 0o111


def test_test_prerequisites_are_the_packages_run_tests_installs() -> None:
    script = (REPO / "run-tests").read_text()
    needed = set(re.findall(r"[\w.+-]+:([\w.+-]+)", script.split("missing=()", 1)[1].split("done", 1)[0]))
    needed |= set(re.findall(r"missing\+=\(([\w.+-]+)\)", script))
    assert {"chromium", "firefox-esr", "fonts-ipafont-gothic"} <= needed  # the parse found the list
    install = next(line for line in README.splitlines() if line.startswith("sudo apt-get install "))
    assert set(install.split()[3:]) == needed


def test_linked_files_exist() -> None:
    links = re.findall(r"\]\(((?:docs|examples)/[^)#]+)", README)
    assert any(link.startswith("docs/") for link in links) and any(
        link.startswith("examples/") for link in links
    )
    for link in links:
        assert (REPO / link).is_file(), link
    for page in (REPO / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in README, f"{page.name} is not linked from the README"


def test_the_sdk_excerpt_is_what_the_example_does() -> None:
    excerpt = README.split("```python\n", 1)[1].split("```", 1)[0]
    example = (REPO / "examples" / "text_turn.py").read_text()
    calls = re.findall(r"connection\.[\w.]+\(", excerpt)
    handled = re.findall(r'event\.type == "[\w.]+"', excerpt)
    assert len(calls) >= 3 and len(handled) >= 4
    for fragment in calls + handled:
        assert fragment in example, fragment
