"""Shared fixtures: a small synthetic image set and the location of the real Omniglot zips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fewshot.data import ImageSet, make_synthetic

OMNIGLOT_DIR = Path(
    os.environ.get("FEWSHOT_OMNIGLOT", Path(__file__).resolve().parents[2] / "shared/data/omniglot")
)


@pytest.fixture(scope="session")
def small_synthetic() -> ImageSet:
    """100 synthetic characters in 5 alphabets, 20 drawings each."""
    return make_synthetic(num_classes=100, seed=3)


@pytest.fixture(scope="session")
def omniglot_zip():
    """Path of a real Omniglot zip by name; skips the test when the data is absent."""

    def get(name: str) -> Path:
        path = OMNIGLOT_DIR / name
        if not path.is_file():
            pytest.skip(f"Omniglot data not found at {path} (set FEWSHOT_OMNIGLOT to its folder)")
        return path

    return get
