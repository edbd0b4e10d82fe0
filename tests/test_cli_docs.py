"""Every command-line invocation in the README and the docs names a real command, real options of that
command, and files that exist: the documented steps are the commands as they are."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from cds.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "fixtures" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_SH_OWN = {"test", "bench"}  # run.sh's own commands; everything else goes to `cds`
BLOCK = re.compile(r"^```(?:sh|bash|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`((?:\./run\.sh|cds) [^`]+)`")


def _line(line: str) -> list[list[str]]:
    """The words after each ``./run.sh`` or ``cds`` of one shell line (also inside ``$(...)``)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    lexer.wordchars += "./-=:,[]{}$@%+"
    try:
        tokens = list(lexer)
    except ValueError:  # a line inside a quoted multi-line argument (JSON for curl)
        return []
    found = []
    for i, token in enumerate(tokens):
        if "$(" in token:
            found += _line(token.split("$(", 1)[1].rsplit(")", 1)[0])
        if not (token == "./run.sh" or (token == "cds" and (i == 0 or tokens[i - 1] in "|;&("))):
            continue
        words = []
        for word in tokens[i + 1:]:
            if word and all(ch in "();<>|&" for ch in word):
                break
            words.append(word)
        # a placeholder such as <bundle> is read by the shell as a redirection: kept, to be reported
        words += re.findall(r"<[A-Za-z][\w.-]*>", line)
        found.append(words)
    return found


def _invocations(text: str) -> list[list[str]]:
    """The words of each ``./run.sh ...`` or ``cds ...`` command in the shell blocks and code spans."""
    found = []
    for block in BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            found += _line(line)
    for span in INLINE.findall(BLOCK.sub("", text)):
        found += _line(span)
    return found


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = cli
    rest = list(words)
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def _cases() -> list[tuple[str, list[str]]]:
    return [(f"{path.relative_to(ROOT)}: {' '.join(words)}", words)
            for path in DOCS for words in _invocations(path.read_text(encoding="utf-8"))
            if not words or words[0] not in RUN_SH_OWN]


CASES = _cases()


def test_the_docs_show_the_commands():
    assert len(CASES) >= 20
    named = {" ".join(words[:2]) for _, words in CASES}
    assert {"wait --url", "replay fixtures", "audit show"} <= named


@pytest.mark.parametrize(("where", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_documented_invocation_names_a_real_command_options_and_files(where, words):
    command, rest = _resolve([w for w in words if w != "..."])  # "cds audit ...": any audit command
    assert not isinstance(command, click.Group) or not rest or rest[0].startswith("-"), (
        f"{where}: no command {' '.join(words[:2])!r}")
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    options |= {"--help", "-h"}
    for word in rest:
        word = word.strip("[]")
        if word.startswith("-") and not word.startswith("--") and len(word) > 2:
            continue  # a negative number, not an option
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"{where}: {command.name} has no option {word}"
        elif word.startswith("fixtures/") and not re.search(r"\b[A-Z]{3,}\b", word):  # NAME: the reader's own
            assert (ROOT / word).exists(), f"{where}: {word} does not exist"
        assert "<" not in word, f"{where}: placeholder {word} (name a real file, or NAME for your own)"
