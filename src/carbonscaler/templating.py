"""The report templates (``carbonscaler/templates/*``), rendered with Jinja2.

HTML templates are autoescaped: every value a template prints is text unless the caller marks
it otherwise (only the embedded PNGs' base64 data needs no marking, being plain ASCII).
Undefined names are errors, so a template and its caller cannot drift apart silently.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2

__all__ = ["render"]


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("carbonscaler", "templates"),
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, /, **context: Any) -> str:
    """Render ``template`` (a file name, e.g. ``"run_report.html.j2"``) with ``context``."""
    return _environment().get_template(template).render(**context)
