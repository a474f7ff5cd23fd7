"""Fixtures for the differential conformance test against flagd's JS evaluator."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.reference import ReferenceUnavailable, install


@pytest.fixture(scope="session")
def reference_prefix() -> Path:
    """The pinned @openfeature/flagd-core install (npm ci into a cache folder, once).
    node and npm are on every machine: their absence fails the test, it does not skip."""
    try:
        return install()
    except ReferenceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
