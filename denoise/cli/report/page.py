"""The report as one self-contained HTML page: inline CSS, PNG figures as data URIs, no JavaScript.

Every piece of text is escaped here; callers pass plain strings, numbers and PNG bytes.
"""

from __future__ import annotations

import base64
from html import escape

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: right; } th { background: #f4f4f4; }
.note { color: #666; font-size: .9em; } .cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; min-width: 9em; }
.card b { display: block; font-size: 1.4em; }
.gallery { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: 0; } figcaption { font-size: .75em; max-width: 12em; }
.gallery img { border: 1px solid #ccc; image-rendering: pixelated; }
"""


def image(png: bytes, alt: str) -> str:
    """An <img> holding the PNG inline."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{escape(alt)}">'


def table(header: list[str], rows: list[list]) -> str:
    """A table of the rows (floats with 3 decimals)."""
    def cell(value) -> str:
        return escape(f"{value:.3f}" if isinstance(value, float) else str(value))

    head = "".join(f"<th>{escape(str(name))}</th>" for name in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(value)}</td>" for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def cards(values: list[tuple[str, str]]) -> str:
    """A row of headline figures, each ``(label, value)``."""
    return '<div class="cards">' + "".join(f'<div class="card"><b>{escape(value)}</b>{escape(label)}</div>'
                                           for label, value in values) + "</div>"


def gallery(items: list[tuple[bytes, str]]) -> str:
    """Thumbnails, each ``(png, caption)``."""
    return '<div class="gallery">' + "".join(f"<figure>{image(png, caption)}<figcaption>{escape(caption)}"
                                             f"</figcaption></figure>" for png, caption in items) + "</div>"


def note(text: str) -> str:
    """A grey paragraph (what a section shows, or why it is empty)."""
    return f'<p class="note">{escape(text)}</p>'


def section(anchor: str, title: str, *parts: str) -> str:
    """A titled section with the HTML ``parts``; ``anchor`` is its id."""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def document(title: str, subtitle: str, sections: list[str]) -> str:
    """The whole page."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{note(subtitle)}{''.join(sections)}"
            "</body></html>\n")
