"""The gallery page as one static HTML file: inline CSS, relative image paths, no script, nothing fetched.

Written with f-strings and html.escape rather than a template engine: the page is a few tables and lists,
and every piece of user data (captions, questions, answers, video keys, metric names) goes through `esc`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from snps3_ds.reports.thumbnails import Strips

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.notes { color: #555; margin: 0 0 1em; padding-left: 1.2em; }
table.metrics { border-collapse: collapse; }
.metrics th, .metrics td { padding: 2px 10px; border-bottom: 1px solid #ddd; }
.metrics th { text-align: left; font-weight: normal; font-family: monospace; } .metrics td { text-align: right; }
.curves img { max-width: 100%; border: 1px solid #ccc; }
.query { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .6em .8em; margin: .8em 0; }
.caption { font-size: 1.1em; font-weight: 600; margin: 0; } .meta { color: #555; margin: .2em 0 .5em; }
.results { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; padding: 4px; border: 3px solid transparent; border-radius: 4px; background: #f2f2f2; }
figure.gt { border-color: #2a9d3a; background: #e6f5e8; } figure.outside { border-style: dashed; }
figcaption { font-size: 12px; font-family: monospace; margin-bottom: 3px; }
.strip { display: flex; gap: 2px; } .strip img { height: 64px; display: block; outline: 1px solid #bbb; }
.hint { color: #555; font-style: italic; } .key { font: 12px monospace; } .missing { color: #a33; font-size: 12px; }
table.questions { border-collapse: collapse; background: #fff; }
.questions td, .questions th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
tr.wrong td.verdict { color: #b00; font-weight: 700; } tr.right td.verdict { color: #2a9d3a; font-weight: 700; }
li.answer { color: #2a9d3a; font-weight: 600; } li.predicted { text-decoration: underline; }
"""


@dataclass
class GalleryPage:
    """Everything one page shows; `queries` for retrieval, `questions` for QA / multi-choice
    (the rows of snps3_ds.reports.gallery.retrieval_queries / question_rows)."""

    title: str
    metrics: dict[str, float]
    metric_order: list[str] = field(default_factory=list)  # headline keys first; the rest follow sorted
    queries: list[dict] = field(default_factory=list)
    questions: list[dict] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)  # where the videos' frames are read (data.eval_shards)
    curves: Path | None = None  # the run's curves PNG, copied beside the page
    notes: list[str] = field(default_factory=list)  # one line each under the title (checkpoint, protocol, seed)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_value(key: str, value: float) -> str:
    """Counts (`num_*`) as integers, everything else with the console table's two decimals."""
    return str(int(value)) if key.rsplit("/", 1)[-1].startswith("num_") else f"{value:.2f}"


def metrics_table(metrics: dict[str, float], order: list[str]) -> str:
    """One row per metric; `data-value` holds the exact number (repr) behind the rounded cell."""
    keys = [k for k in order if k in metrics] + sorted(k for k in metrics if k not in order)
    rows = "".join(f'<tr data-key="{esc(k)}" data-value="{esc(repr(float(metrics[k])))}"><th>{esc(k)}</th>'
                   f'<td class="value">{esc(format_value(k, metrics[k]))}</td></tr>' for k in keys)
    return f'<table class="metrics" id="metrics"><tr><th>metric</th><th>value</th></tr>{rows}</table>'


def strip(key: str, strips: Strips) -> str:
    if key not in strips.frames:
        return f'<span class="missing">no frames: {esc(strips.missing.get(key, "not decoded"))}</span>'
    images = "".join(f'<img src="{esc(path)}" alt="{esc(key)} frame {t + 1}">'
                     for t, path in enumerate(strips.frames[key]))
    return f'<div class="strip">{images}</div>'


def query_block(row: dict, strips: Strips) -> str:
    """A caption, its ground truth's rank and its top videos (ground truth framed in green)."""
    truth = set(row["truth"])
    figures = []
    for place, key in enumerate(row["top"], start=1):
        mark = " gt" if key in truth else ""
        label = f"#{place} {esc(key)}" + (" &#10003; ground truth" if key in truth else "")
        figures.append(f'<figure class="cand{mark}"><figcaption>{label}</figcaption>{strip(key, strips)}</figure>')
    if not truth & set(row["top"]):
        figures.append(f'<figure class="cand gt outside"><figcaption>ground truth at #{row["rank"]}: '
                       f'{esc(row["video"])}</figcaption>{strip(row["video"], strips)}</figure>')
    meta = (f'ground truth ranked <b class="rank">{row["rank"]}</b> of {row["gallery_size"]} '
            f'({esc(row["similarity"])} scores); caption of {esc(row["video"])}')
    return (f'<div class="query {esc(row["group"])}"><p class="caption">{esc(row["text"])}</p>'
            f'<p class="meta">{meta}</p><div class="results">{"".join(figures)}</div></div>')


def question_row(row: dict, strips: Strips) -> str:
    options = ""
    if row["options"]:
        items = []
        for n, option in enumerate(row["options"]):
            classes = [c for c, hit in (("answer", n == row["answer_index"]), ("predicted", n == row["choice"])) if hit]
            items.append(f'<li class="{" ".join(classes)}">{esc(option)}</li>')
        options = f'<ol>{"".join(items)}</ol>'
    hint = "" if row["question"] else '<span class="hint">which option describes the video?</span>'
    verdict = "right" if row["correct"] else "wrong"
    return (f'<tr class="{verdict}"><td>{strip(row["video"], strips)}<div class="key">{esc(row["video"])}</div></td>'
            f'<td class="question"><span class="text">{esc(row["question"])}</span>{hint}{options}</td>'
            f'<td class="prediction">{esc(row["prediction"])}</td><td class="answer">{esc(row["answer"])}</td>'
            f'<td class="verdict">{verdict}</td></tr>')


GROUP_TITLES = {"worst": "Worst-ranked queries", "random": "A random sample of the other queries"}
QUESTION_TITLES = {"worst": "Wrongly answered questions", "random": "A random sample of the other questions"}


def render(page: GalleryPage, strips: Strips, curves: str | None) -> str:
    """The whole page; `curves` is the PNG's path relative to the page (None: no curves section)."""
    parts = [f"<h1>{esc(page.title)}</h1>", '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in page.notes)
             + "</ul>", "<h2>Metrics</h2>", metrics_table(page.metrics, page.metric_order)]
    if curves:
        parts.append(f'<h2>Training curves</h2><p class="curves"><a href="{esc(curves)}"><img src="{esc(curves)}" '
                     f'alt="training curves"></a></p>')
    for group, title in GROUP_TITLES.items():
        rows = [r for r in page.queries if r["group"] == group]
        if rows:
            parts.append(f'<h2 id="{group}">{title} ({len(rows)})</h2>' + "".join(query_block(r, strips) for r in rows))
    for group, title in QUESTION_TITLES.items():
        rows = [r for r in page.questions if r["group"] == group]
        if rows:
            head = "<tr><th>video</th><th>question</th><th>prediction</th><th>answer</th><th></th></tr>"
            parts.append(f'<h2 id="{group}">{title} ({len(rows)})</h2><table class="questions">{head}'
                         + "".join(question_row(r, strips) for r in rows) + "</table>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(page.title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
