"""Argument parsing for every `realtime-relay` command: whole option names only, and unknown options explained.

argparse's default prefix matching turned `--access-tokens abc` into `--access-tokens-file abc`, an unreadable
file; with abbreviations off such a typo is an unknown option, and the error names the closest real one.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn


class StrictParser(argparse.ArgumentParser):
    """An `ArgumentParser` without prefix matching whose unknown-option error suggests the closest option.

    `env_only` maps option names that deliberately do not exist (secrets) to the environment variable to use instead.
    Sub-commands made with `add_subparsers().add_parser` are `StrictParser`s too.
    """

    def __init__(self, *args: Any, env_only: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.env_only = dict(env_only or {})

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.fail_unknown(extras)
        return parsed, extras

    def fail_unknown(self, extras: Sequence[str]) -> NoReturn:
        """Stop with one message about the first unknown argument: what it may have meant, and where help is."""
        options = [word for word in extras if word.startswith("-")]
        if not options:
            self.error(f"unexpected argument {extras[0]!r}; see `{self.prog} --help`")
        given = options[0].split("=", 1)[0]
        note = ""
        if given in self.env_only:
            note = f" ({self.env_only[given]} is read only from the environment, so that it never shows in a process list)"
        sentences = [f"unknown option {given}{note}."]
        suggestion = self.closest_option(given)
        if suggestion:
            sentences.append(f"Did you mean {suggestion}?")
        sentences.append(f"See `{self.prog} --help`.")
        self.error(" ".join(sentences))

    def closest_option(self, given: str) -> str | None:
        """The option a user most likely meant: one `given` abbreviates, else the most similar name."""
        known = sorted(name for name in self._option_string_actions if name.startswith("--"))
        extended = [name for name in known if name.startswith(given)]
        if extended:
            return extended[0]
        close = difflib.get_close_matches(given, known, n=1, cutoff=0.7)
        return close[0] if close else None
