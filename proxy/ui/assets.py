"""The UI's vendored browser assets (DESIGN §12): htmx and its SSE extension, pinned.

They are the npm packages' own minified files, copied unchanged into ``static/vendor/`` with
their licences: package data, so the UI works offline with no CDN and no build step. The
pins below are what ``tests/unit/test_ui_assets.py`` checks each file against; how to refresh
them is in docs/design-notes.md ("UI assets"). htmx stays on 2.0.x: npm's ``latest`` is a
breaking 4.x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True, slots=True)
class Vendored:
    path: str  # under static/
    package: str  # npm name@version it was copied from
    source: str  # the file inside that package
    sha256: str


VENDORED = (
    Vendored("vendor/htmx-2.0.11.min.js", "htmx.org@2.0.11", "dist/htmx.min.js",
             "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"),
    Vendored("vendor/htmx-ext-sse-2.2.4.min.js", "htmx-ext-sse@2.2.4", "dist/sse.min.js",
             "98a46496de0c3605fbffdce9167ba427bdd9553184f83f149c261891a92c0136"),
    Vendored("vendor/htmx.LICENSE", "htmx.org@2.0.11", "LICENSE",
             "d3d2456f76414f2456104660ebd65aff1c04cd7966b942bdabd63f3cdb316a38"),
    Vendored("vendor/htmx-ext-sse.LICENSE", "htmx-ext-sse@2.2.4", "LICENSE",
             "a17d224ce9afdc21ec9491b76a2f5d036d19aa641ac4f85ca29c21f9f7e54fdf"),
)
