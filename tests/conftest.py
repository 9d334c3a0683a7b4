"""Shared fixtures: small real data (scikit-learn digits) written as an anomalib Folder tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_utils import write_digits_folder


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-vs-rest task (digit 0 normal) as a Folder tree, shared by the session."""
    return write_digits_folder(tmp_path_factory.mktemp("digits"))
