"""Class names or indices given as a category (``"T-shirt/top"``, ``3``, ``"cat+dog"``) -> class indices."""

from __future__ import annotations

import re
from collections.abc import Sequence

from anomalib_firm.console import InputError


def _normalise_name(name: str) -> str:
    """Lower-case a class name and drop everything but letters and digits ("T-shirt/top" -> "tshirttop")."""
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def resolve_classes(category: int | str | Sequence[int | str], class_names: Sequence[str], dataset: str) -> list[int]:
    """Turn a category argument into sorted, unique class indices.

    Args:
        category (int | str | Sequence[int | str]): Class name or index (``int`` or digit
            string), a list of those, or names joined with ``"+"`` (``"cat+dog"``). Names
            match exactly, else ignoring case and punctuation (``"T-shirt/top"``).
        class_names (Sequence[str]): Names of the data set's classes, in label order.
        dataset (str): Name of the data set, for error messages.

    Returns:
        list[int]: Indices into ``class_names``, sorted, without duplicates.

    Raises:
        ValueError: If a class is unknown (the message lists the valid names) or none is given.
    """
    items: list[int | str] = [category] if isinstance(category, int | str) else list(category)
    indices: set[int] = set()
    for item in items:
        indices.update(_resolve_one(item, class_names, dataset))
    if not indices:
        msg = f"No normal class given for {dataset}: category must name at least one class."
        raise InputError(msg)
    return sorted(indices)


def _resolve_one(item: int | str, class_names: Sequence[str], dataset: str) -> list[int]:
    """Resolve one class name or index (or ``"a+b"``) to class indices."""
    if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(class_names):
        return [item]
    if isinstance(item, str):
        name = item.strip()
        if name in class_names:
            return [class_names.index(name)]
        normalised = [_normalise_name(class_name) for class_name in class_names]
        if _normalise_name(name) and _normalise_name(name) in normalised:
            return [normalised.index(_normalise_name(name))]
        if name.isdigit() and int(name) < len(class_names):
            return [int(name)]
        if "+" in name:
            return [
                index for part in name.split("+") if part.strip() for index in _resolve_one(part, class_names, dataset)
            ]
    valid = ", ".join(f"{index}={name!r}" for index, name in enumerate(class_names))
    msg = f"Unknown class {item!r} for {dataset}. Valid classes (index=name; give either): {valid}."
    raise InputError(msg)
