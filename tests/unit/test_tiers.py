"""The test tiers: every end-to-end and reliability file is marked ``e2e`` (``-m "not e2e"``
runs the unit tier alone)."""
from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tier", ["e2e", "reliability"])
def test_every_file_of_a_slow_tier_is_marked_e2e(tier: str) -> None:
    files = sorted((TESTS / tier).glob("test_*.py"))
    unmarked = [f.name for f in files if "pytestmark = pytest.mark.e2e" not in f.read_text()]
    assert files and unmarked == [], unmarked
