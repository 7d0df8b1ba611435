"""Shared fixtures: the nrfutil-made packages in ../shared/fixtures and a guard against leaked tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def shared_fixture(name: str) -> Path:
    """Path of a file in ../shared/fixtures; fails the test with a clear message if it is missing."""
    path = SHARED_FIXTURES / name
    if not path.is_file():
        pytest.fail(
            f"reference fixture {path} is missing: the tests expect the shared/ folder beside the "
            "repository (../shared/fixtures)"
        )
    return path


@pytest.fixture
def fixtures_dir() -> Path:
    shared_fixture("README.md")
    return SHARED_FIXTURES


@pytest.fixture(autouse=True)
async def _no_lingering_tasks() -> AsyncIterator[None]:
    """Fail any async test that leaves tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in leftover:
        task.cancel()
    if leftover:
        await asyncio.gather(*leftover, return_exceptions=True)
        pytest.fail(f"test left {len(leftover)} task(s) running: {leftover}")
