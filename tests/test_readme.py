"""The README stays true: every setting is documented, and every documented close code is one the relay uses."""

from __future__ import annotations

import re

from relay.config import SETTINGS
from relay.protocol import CloseCode
from tests.harness import REPO

README = (REPO / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE))
    assert {s.env for s in SETTINGS} <= documented
    assert documented <= {s.env for s in SETTINGS}


def test_every_close_code_is_documented() -> None:
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", README, flags=re.MULTILINE)}
    assert {int(code) for code in CloseCode} <= documented


def test_the_two_commands_exist() -> None:
    for script in ("run-relay", "run-tests"):
        assert f"./{script}" in README
        assert (REPO / script).stat().st_mode & 0o111


def test_documented_defaults_match_the_code() -> None:
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| [^|]+ \| `([^`]*)` \|", README, flags=re.MULTILINE))
    for setting in SETTINGS:
        if setting.env in rows and setting.name != "instructions":
            assert rows[setting.env] == setting.default, setting.env
