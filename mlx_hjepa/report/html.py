"""The report page: one static HTML file, inline style, images by relative path, nothing fetched."""

import html

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f4f4f4; text-align: left; } img { max-width: 100%; image-rendering: pixelated; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
p.note { color: #555; }
"""


def table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def section(title, note, image=None, extra=""):
    parts = [f"<h2>{html.escape(title)}</h2>"]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    if image:
        parts.append(f'<img src="{html.escape(image)}" alt="{html.escape(title)}">')
    return "\n".join(parts) + extra


def page(title, sections):
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n" + "\n".join(sections)
            + "\n</body></html>\n")
