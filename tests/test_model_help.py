"""``anomalib train --model FIRM --model.help FIRM`` documents every option, as ``--model.help Firm`` does."""

from __future__ import annotations

import contextlib
import io

import pytest
from anomalib.cli.cli import AnomalibCLI
from jsonargparse import ArgumentParser

from anomalib_firm import models

ALIASES = [("FIRM", "Firm"), ("MSC", "Msc"), ("MCL", "Mcl")]


def _option_help(class_name: str) -> dict[str, str | None]:
    """Option -> description, as jsonargparse reads them from the class's docstring (``None``: undocumented)."""
    parser = ArgumentParser()
    parser.add_class_arguments(getattr(models, class_name), "model")
    return {
        action.dest: None if action.help in (None, "", "_EMPTY_HELP_") else action.help  # jsonargparse's "no help"
        for action in parser._actions
        if action.dest.startswith("model.")
    }


def _cli_help(class_name: str) -> str:
    """What ``anomalib train --model NAME --model.help NAME`` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        AnomalibCLI(args=["train", "--model", class_name, "--model.help", class_name])
    return out.getvalue()


@pytest.mark.parametrize(("alias", "name"), ALIASES)
def test_alias_documents_every_option(alias: str, name: str) -> None:
    documented = _option_help(name)
    assert len(documented) > 10
    assert [option for option, text in documented.items() if text is None] == []
    assert _option_help(alias) == documented


@pytest.mark.parametrize(("alias", "name"), ALIASES[:1])
def test_cli_help_of_alias_reads_like_the_models(alias: str, name: str) -> None:
    alias_help = _cli_help(alias)
    for text in _option_help(name).values():
        assert " ".join(str(text).split()[:3]) in " ".join(alias_help.split())
    summary = getattr(models, name).__doc__.strip().splitlines()[0].rstrip(".")
    assert summary in alias_help  # the model's own summary heads the group, not only "Alias of ..."
