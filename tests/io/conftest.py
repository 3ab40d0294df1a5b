"""Fixtures for the asset tests."""

from __future__ import annotations

import pytest

from asset_files import cached_load


@pytest.fixture(scope="session")
def load():
    """``load(name, scale=None, fps=None)`` → cached `Character` from `assets/`."""
    return cached_load
