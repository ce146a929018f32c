"""Every option and argument of ``edgectl`` (and ``edged-ota``) has help text (issue 14,
item 13): the test walks the whole argparse tree, so a new option without help fails it."""

from __future__ import annotations

import argparse

import pytest

from edged.cli import main, ota


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


@pytest.mark.parametrize("build", [main.build_parser, ota.build_parser],
                         ids=["edgectl", "edged-ota"])
def test_every_option_has_help(build) -> None:  # type: ignore[no-untyped-def]
    parser = build()
    assert _undocumented(parser, parser.prog) == []


def test_the_walk_sees_subcommand_options() -> None:
    parser = main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    install = sub.choices["install"]
    assert any("--warmup" in a.option_strings for a in install._actions)
    assert any("--json" in a.option_strings for a in install._actions)  # global, after it
    install._actions[-1].help = None
    assert _undocumented(parser, "edgectl")  # the walk would catch a missing help
