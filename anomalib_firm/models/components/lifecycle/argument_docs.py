"""The options every model shares, described once, and the docstring plumbing that adds them to ``--model.help``.

jsonargparse builds ``--model.help`` from a model class's ``__init__`` signature and docstring:
options a model hands on to the mixin unchanged are described in the mixin's docstring (or
:data:`MODEL_ARGUMENTS_DOC`) and appended to a model's docstring that does not describe them.
"""

from __future__ import annotations

import inspect
import re

#: Options every model's ``__init__`` has with one meaning (all but ``gather_distributed``, which goes to the loss,
#: and ``frozen_modules``, which goes to the network, are handed to :class:`ContrastiveAnomalyMixin` unchanged):
#: described once, in the mixin's docstring and :data:`MODEL_ARGUMENTS_DOC`, and added to a model's docstring
#: that does not describe them (``--model.help``; MSC describes its own ``frozen_modules``, which has a preset).
SHARED_ARGUMENTS = (
    "gather_distributed",
    "frozen_modules",
    "mixed_precision",
    "compile_step",
    "max_epochs",
    "val_every_n_epochs",
    "pre_processor",
    "post_processor",
    "evaluator",
    "visualizer",
)


#: The shared options that are not the mixin's own, in the docstring format :func:`argument_entries` reads.
MODEL_ARGUMENTS_DOC = """Options of every model that the mixin does not take.

Args:
    gather_distributed: Under DDP (several processes), compute the loss over the global batch:
        the embeddings of all ranks are gathered with their gradients (default; see the README's
        "Multiple GPUs and long runs"). ``False``: each rank contrasts its own items only.
    frozen_modules: Sub-modules of the encoder's network kept as loaded, never trained (``[]``, the
        default, trains every layer): e.g. ``[conv_stem, bn1, blocks.0, blocks.1, blocks.2,
        blocks.3, blocks.4]`` for EfficientNet-Lite0, ``[conv1, bn1, layer1, layer2]`` for a
        ResNet. Meant for pretrained weights and few normal images: the lower blocks keep their
        ImageNet features while the top ones adapt (on Fashion-MNIST it did not lift the start
        either: model README).
"""


def argument_entries(doc: str) -> dict[str, str]:
    """The entries of a Google-style docstring's ``Args:`` section: name -> its lines (unindented by the section)."""
    lines = inspect.cleandoc(doc).splitlines()
    if "Args:" not in lines:
        return {}
    entries: dict[str, list[str]] = {}
    name = None
    for line in lines[lines.index("Args:") + 1 :]:
        if line and not line.startswith(" "):  # the next section
            break
        match = re.match(r"    (\w+)( \(.*\))?:", line)
        if match:
            name = match.group(1)
            entries[name] = [line]
        elif name is not None and line.startswith("        "):
            entries[name].append(line)
    return {name: "\n".join(entry_lines) for name, entry_lines in entries.items()}


def with_arguments(doc: str, entries: list[str]) -> str:
    """``doc`` (cleaned) with ``entries`` (lines of :func:`argument_entries`) appended to its ``Args:`` section."""
    lines = inspect.cleandoc(doc).splitlines()
    if not entries or "Args:" not in lines:
        return doc
    end = lines.index("Args:") + 1
    while end < len(lines) and (not lines[end] or lines[end].startswith(" ")):
        end += 1
    while not lines[end - 1]:  # before the blank lines that close the section
        end -= 1
    return "\n".join([*lines[:end], *entries, *lines[end:]])


_ROLE = re.compile(r":[a-z]+:`(~?)([^`<]+?)(?:\s*<[^>]*>)?`")


def plain_text(doc: str) -> str:
    """``doc`` without the reStructuredText markup a terminal would show raw (``--model.help`` prints it).

    ``x`` in double back-ticks becomes x; a role such as :meth:`~a.B.c` becomes ``c`` (its last part when
    written with ``~``, else the whole target), :mod:`text <target>` becomes its text.
    """

    def role(match: re.Match[str]) -> str:
        shortened, target = match.group(1), match.group(2).strip()
        return target.rsplit(".", 1)[-1] if shortened else target

    return _ROLE.sub(role, doc).replace("``", "")
