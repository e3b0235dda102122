"""The page a person opens at ``GET /``: one self-contained HTML file (no CDN: nothing loads from
outside the machine) that posts to ``/v1/parse`` and draws the parse."""

from __future__ import annotations

from importlib import resources

PAGE = resources.files("mtop_edge.serve").joinpath("page.html").read_text(encoding="utf-8")
