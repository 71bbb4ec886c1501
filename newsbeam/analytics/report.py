"""``newsbeam report``: one self-contained static HTML page about the dataset.

Numbers come from DuckDB queries over the ``articles`` view; charts are
matplotlib figures inlined as SVG with their text kept as text, so the browser
shapes Arabic and other RTL labels (matplotlib alone would not). The page
loads nothing from anywhere: no scripts, no external styles or images, and a
Content-Security-Policy that forbids them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import duckdb
import jinja2
import matplotlib
import matplotlib.colors
import matplotlib.dates
import matplotlib.ticker
from markupsafe import Markup, escape
from matplotlib.figure import Figure

from newsbeam.analytics import dates, remote, stories_section, table_view
from newsbeam.analytics.dataset import DEFAULT_DATA_DIR, connect, read_run_manifests
from newsbeam.exit_codes import EXIT_CONFIG, EXIT_OK, first_line
from newsbeam.flags import COUNT, POSITIVE_INT
from newsbeam.iceberg import TableError

LOGGER = logging.getLogger(__name__)

NO_LABEL = "(none)"
SENTIMENT_COLOURS = {"negative": "#d1495b", "neutral": "#8d99ae", "positive": "#2a9d8f", NO_LABEL: "#e0e0e0"}
# matplotlib's tab20 without its greys (kept for "no label"): strong colours first, then
# their light variants, 18 in all, enough for the 17 IPTC top-level topics.
TOPIC_COLOURS = tuple(
    matplotlib.colors.to_hex(colour)
    for start in (0, 1) for index, colour in enumerate(matplotlib.colormaps["tab20"].colors)
    if index % 2 == start and index not in (14, 15)
)
NO_LABEL_COLOUR = "#cccccc"
# text.parse_math off: chart text is feed text (source titles, topics), never markup. With
# it on, matplotlib reads any text holding two "$" as mathtext ("Money $$ Talk" fails to
# parse and the whole report with it). The rcParam is every Text's default, so it covers
# tick labels, legend entries and bar labels created inside rc_context(CHART_STYLE),
# which is where every chart is drawn and saved.
CHART_STYLE = {"svg.fonttype": "none", "text.parse_math": False, "font.size": 10,
               "axes.spines.top": False, "axes.spines.right": False}
MAX_LABEL_CHARS = 42
MAX_DAY_TICKS = 14


def _label(column: str) -> str:
    """SQL for a label column where NULL and blank both read as NO_LABEL."""
    return f"coalesce(nullif(trim({column}), ''), '{NO_LABEL}')"


# --- queries ---------------------------------------------------------------

@dataclass(frozen=True)
class ReportData:
    summary: dict[str, Any]
    per_day_topic: list[tuple[dt.date, str, int]]
    sentiment_by_topic: list[tuple[str, str, int]]
    sentiment_by_language: list[tuple[str, str, int]]
    top_sources: list[tuple[str, int]]
    language_mix: list[tuple[str, int]]
    latest_articles: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    top_stories: list[dict[str, Any]]  # stories_section.collect: [] when no row has a story_id


def _records(relation: duckdb.DuckDBPyRelation) -> list[dict[str, Any]]:
    return [dict(zip(relation.columns, row)) for row in relation.fetchall()]


def collect(connection: duckdb.DuckDBPyConnection, runs: list[dict[str, Any]],
            *, top_sources: int = 15, latest_articles: int = 15) -> ReportData:
    """Everything the page shows, from the ``articles`` view and the run manifests."""
    day = "coalesce(CAST(published_at AS DATE), CAST(fetched_at AS DATE))"
    summary = _records(connection.sql(
        f"SELECT count(*) AS articles, min({day}) AS first_day, max({day}) AS last_day, "
        "count(DISTINCT source) AS sources, count(DISTINCT language) AS languages FROM articles"))[0]
    return ReportData(
        summary=summary,
        per_day_topic=connection.sql(
            f"SELECT {day} AS day, {_label('topic')} AS topic, count(*) FROM articles "
            "GROUP BY ALL ORDER BY day, topic").fetchall(),
        sentiment_by_topic=connection.sql(
            f"SELECT {_label('topic')}, {_label('sentiment')}, count(*) FROM articles GROUP BY ALL").fetchall(),
        sentiment_by_language=connection.sql(
            f"SELECT {_label('language')}, {_label('sentiment')}, count(*) FROM articles GROUP BY ALL").fetchall(),
        top_sources=connection.sql(
            "SELECT coalesce(nullif(trim(source_title), ''), source) AS name, count(*) AS n FROM articles "
            f"GROUP BY ALL ORDER BY n DESC, name LIMIT {int(top_sources)}").fetchall(),
        language_mix=connection.sql(
            f"SELECT {_label('language')} AS language, count(*) AS n FROM articles "
            "GROUP BY ALL ORDER BY n DESC, language").fetchall(),
        latest_articles=_records(connection.sql(
            f"SELECT {day} AS day, language, coalesce(nullif(trim(source_title), ''), source) AS source, "
            f"title, url, {_label('topic')} AS topic, {_label('sentiment')} AS sentiment FROM articles "
            f"ORDER BY coalesce(published_at, fetched_at) DESC, article_id LIMIT {int(latest_articles)}")),
        runs=runs,
        top_stories=stories_section.collect(connection),
    )


# --- charts ----------------------------------------------------------------

def _shorten(text: str) -> str:
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def _svg(figure: Figure, title: str) -> Markup:
    """The figure as inline SVG markup; matplotlib has already XML-escaped its text."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Title": title})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE, invalid inside HTML
    return Markup(svg.replace("<svg ", f'<svg role="img" aria-label="{escape(title)}" ', 1))


def _topic_colours(topics: list[str]) -> dict[str, str]:
    named = [topic for topic in topics if topic != NO_LABEL]
    colours = {topic: TOPIC_COLOURS[index % len(TOPIC_COLOURS)] for index, topic in enumerate(named)}
    colours[NO_LABEL] = NO_LABEL_COLOUR
    return colours


def chart_articles_per_day(rows: list[tuple[dt.date, str, int]]) -> Markup:
    """Stacked bars: one per day, one segment per topic (most frequent at the bottom)."""
    totals: dict[str, int] = {}
    for _, topic, count in rows:
        totals[topic] = totals.get(topic, 0) + count
    topics = sorted(totals, key=lambda topic: (topic == NO_LABEL, -totals[topic], topic))
    colours = _topic_colours(topics)
    days = sorted({day for day, _, _ in rows})
    counts = {(day, topic): count for day, topic, count in rows}
    with matplotlib.rc_context(CHART_STYLE):
        figure = Figure(figsize=(10, 3.6))
        axes = figure.subplots()
        bottoms = [0] * len(days)
        for topic in topics:
            heights = [counts.get((day, topic), 0) for day in days]
            axes.bar(days, heights, bottom=bottoms, width=0.8, label=topic, color=colours[topic])
            bottoms = [bottom + height for bottom, height in zip(bottoms, heights)]
        axes.set_ylabel("articles")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="topic")
        if len(days) <= MAX_DAY_TICKS:
            axes.set_xticks(days)  # one tick per day, never ticks between days
            axes.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%Y-%m-%d"))
        else:
            locator = matplotlib.dates.AutoDateLocator(minticks=4, maxticks=MAX_DAY_TICKS)
            axes.xaxis.set_major_locator(locator)
            axes.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))
        figure.autofmt_xdate()
        return _svg(figure, "Articles per day by topic")


def chart_shares(rows: list[tuple[str, str, int]], *, group_name: str) -> Markup:
    """100% stacked horizontal bars of sentiment per group, with the group's size."""
    groups: dict[str, dict[str, int]] = {}
    for group, sentiment, count in rows:
        groups.setdefault(group, {})[sentiment] = count
    order = sorted(groups, key=lambda group: (group == NO_LABEL, -sum(groups[group].values()), group))
    order.reverse()  # barh draws the first category at the bottom
    sentiments = [name for name in SENTIMENT_COLOURS if any(name in counts for counts in groups.values())]
    sentiments += sorted({s for counts in groups.values() for s in counts} - set(sentiments))
    with matplotlib.rc_context(CHART_STYLE):
        figure = Figure(figsize=(10, 0.8 + 0.42 * len(order)))
        axes = figure.subplots()
        lefts = [0.0] * len(order)
        labels = [f"{_shorten(group)} ({sum(groups[group].values())})" for group in order]
        for sentiment in sentiments:
            shares = [groups[group].get(sentiment, 0) / sum(groups[group].values()) for group in order]
            bars = axes.barh(labels, shares, left=lefts, label=sentiment,
                             color=SENTIMENT_COLOURS.get(sentiment, NO_LABEL_COLOUR))
            axes.bar_label(bars, labels=[f"{share:.0%}" if share >= 0.08 else "" for share in shares],
                           label_type="center", fontsize=8)
            lefts = [left + share for left, share in zip(lefts, shares)]
        axes.set_xlim(0, 1)
        axes.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="sentiment")
        return _svg(figure, f"Sentiment share by {group_name}")


def chart_counts(rows: list[tuple[str, int]], *, title: str, colour: str) -> Markup:
    """Horizontal bars, largest on top, each labelled with its count and share."""
    total = sum(count for _, count in rows) or 1
    rows = list(reversed(rows))
    with matplotlib.rc_context(CHART_STYLE):
        figure = Figure(figsize=(10, 0.8 + 0.34 * len(rows)))
        axes = figure.subplots()
        bars = axes.barh([_shorten(name) for name, _ in rows], [count for _, count in rows], color=colour)
        axes.bar_label(bars, labels=[f"{count} ({count / total:.0%})" for _, count in rows], padding=3, fontsize=8)
        axes.set_xlabel("articles")
        return _svg(figure, title)


# --- page ------------------------------------------------------------------

PAGE = jinja2.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>newsbeam report</title>
<style>
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 1.5rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; } .empty { color: #a00; font-style: italic; }
figure { margin: 0; } svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { border-bottom: 1px solid #eee; padding: .25rem .4rem; text-align: start; vertical-align: top; }
td.n { text-align: end; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.time, td.committed, td.failed { white-space: nowrap; } td.wrap { overflow-wrap: anywhere; } td ul { margin: 0; padding-inline-start: 1rem; }
.committed { color: #2a7; } .failed { color: #c33; font-weight: bold; }
dl.summary { display: grid; grid-template-columns: repeat(5, 1fr); gap: .5rem; }
dl.summary div { background: #f5f7fa; padding: .5rem; border-radius: 4px; }
dt { color: #666; font-size: .8rem; } dd { margin: 0; font-size: 1.3rem; }
</style>
</head>
<body>
<h1>newsbeam report</h1>
<p class="meta">Dataset <code dir="auto">{{ data_dir }}</code>{% if table %}, read as {{ table }}{% endif %}{% if days %}, only articles dated {{ days }}{% endif %}, generated {{ generated_at }}.</p>
<dl class="summary">
  <div><dt>articles</dt><dd>{{ summary.articles }}</dd></div>
  <div><dt>first day</dt><dd>{{ summary.first_day or "–" }}</dd></div>
  <div><dt>last day</dt><dd>{{ summary.last_day or "–" }}</dd></div>
  <div><dt>sources</dt><dd>{{ summary.sources }}</dd></div>
  <div><dt>languages</dt><dd>{{ summary.languages }}</dd></div>
</dl>
{% for chart in charts %}
<section>
<h2>{{ chart.title }}</h2>
{% if chart.svg %}<figure>{{ chart.svg }}</figure>
{% else %}<p class="empty">No articles in this dataset yet.</p>{% endif %}
</section>
{% endfor %}
{{ top_stories }}
<section>
<h2>Latest headlines</h2>
{% if articles %}
<table>
<tr><th>day</th><th>language</th><th>source</th><th>title</th><th>topic</th><th>sentiment</th></tr>
{% for article in articles %}
<tr><td>{{ article.day }}</td><td>{{ article.language }}</td><td dir="auto" class="wrap">{{ article.source }}</td>
<td dir="auto" class="wrap">{% if article.url and article.url.startswith(("http://", "https://")) %}<a href="{{ article.url }}">{{ article.title or "(untitled)" }}</a>{% else %}{{ article.title or "(untitled)" }}{% endif %}</td>
<td dir="auto">{{ article.topic }}</td><td>{{ article.sentiment }}</td></tr>
{% endfor %}
</table>
{% else %}<p class="empty">No articles in this dataset yet.</p>{% endif %}
</section>
<section>
<h2>Latest runs</h2>
{% if runs %}
<table>
<tr><th>run</th><th>status</th><th>started (UTC)</th><th>took</th><th>feeds ok</th><th>feeds failed</th>
<th>entries read</th><th>duplicates</th><th>dead-lettered</th><th>rows written</th><th>failures</th></tr>
{% for run in runs %}{% set counts = run.counts %}
<tr><td><code>{{ run.run_id }}</code></td><td class="{{ run.status }}">{{ run.status or "?" }}</td>
<td class="time">{{ run.started }}</td><td class="n">{{ run.duration }}</td>
{% for key in count_keys %}<td class="n">{{ counts[key] if counts[key] is not none else "" }}</td>{% endfor %}
<td class="wrap">{% if run.error %}<p dir="auto">{{ run.error }}</p>{% endif %}
{% if run.failures %}<ul>{% for failure in run.failures[:max_failures] %}
<li dir="auto">{% if failure.stage %}{{ failure.stage }} · {% endif %}{{ failure.source }}: {{ failure.reason }}</li>{% endfor %}
{% if run.failures|length > max_failures %}<li>… and {{ run.failures|length - max_failures }} more</li>{% endif %}
</ul>{% endif %}</td></tr>
{% endfor %}
</table>
{% else %}<p class="empty">No run manifests in _runs/.</p>{% endif %}
</section>
</body>
</html>
""", autoescape=True)

COUNT_KEYS = ("feeds_ok", "feeds_failed", "entries_read", "duplicates", "dead_lettered", "rows_written")


@dataclass(frozen=True)
class Chart:
    title: str
    svg: Optional[Markup]


def _timestamp(value: Any) -> Optional[dt.datetime]:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    except ValueError:
        return None


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    """A manifest as the runs table shows it: start time to the second, duration, failures as dicts."""
    started, finished = _timestamp(run.get("started_at")), _timestamp(run.get("finished_at"))
    seconds = int((finished - started).total_seconds()) if started and finished else None
    duration = "" if seconds is None else f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    failures = [failure for failure in run.get("failures") or [] if isinstance(failure, dict)]
    counts = run.get("counts") if isinstance(run.get("counts"), dict) else {}
    return {
        **run,
        "started": started.strftime("%Y-%m-%d %H:%M:%S") if started else str(run.get("started_at") or ""),
        "duration": duration,
        "failures": failures,
        "counts": counts,
    }


def render(data: ReportData, *, data_dir: str, max_failures: int = 10, table: Optional[str] = None,
           days: Optional[str] = None) -> str:
    """The HTML page for ``data``; charts are left out (with a note) when there are no articles.
    ``table``: the line naming the Iceberg table snapshot read (table_view.describe), if one was."""
    has_articles = data.summary["articles"] > 0
    charts = [
        ("Articles per day by topic", lambda: chart_articles_per_day(data.per_day_topic)),
        ("Sentiment share by topic", lambda: chart_shares(data.sentiment_by_topic, group_name="topic")),
        ("Sentiment share by language", lambda: chart_shares(data.sentiment_by_language, group_name="language")),
        ("Top sources", lambda: chart_counts(data.top_sources, title="Top sources", colour="#3b6ea5")),
        ("Language mix", lambda: chart_counts(data.language_mix, title="Language mix", colour="#6a4c93")),
    ]
    runs = [_run_row(run) for run in data.runs]
    return PAGE.render(
        data_dir=data_dir,
        table=table,
        days=days,
        generated_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=data.summary,
        charts=[Chart(title, draw() if has_articles else None) for title, draw in charts],
        top_stories=stories_section.render(data.top_stories),
        articles=data.latest_articles,
        runs=runs,
        count_keys=COUNT_KEYS,
        max_failures=max_failures,
    )


def build_report(data_dir: Path | str = DEFAULT_DATA_DIR, *, latest_runs: int = 10, top_sources: int = 15,
                 table: Optional[str] = None, catalog: Optional[str] = None, as_of: Optional[str] = None,
                 days: dates.DateRange = dates.DateRange()) -> str:
    """The report for the dataset at ``data_dir`` as one HTML string; with ``table``, its articles are
    that Iceberg table's snapshot (now, or ``as_of``), named in the header (TableError when it cannot be read);
    with ``days`` bounded, the articles of those days only (the runs and dead letters stay whole)."""
    snapshot = table_view.resolve(data_dir, table, catalog=catalog, as_of=as_of) if table else None
    connection = connect(data_dir, table=snapshot, dates=days)
    try:
        data = collect(connection, read_run_manifests(data_dir)[:latest_runs], top_sources=top_sources)
    finally:
        connection.close()
    return render(data, data_dir=str(data_dir), table=table_view.describe(snapshot) if snapshot else None,
                  days=days.describe() if days.bounded else None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=str, default=DEFAULT_DATA_DIR, help="dataset folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write (default: %(default)s)")
    parser.add_argument("--runs", type=COUNT, default=10, help="latest runs to list (default: %(default)s)")
    parser.add_argument("--top-sources", type=POSITIVE_INT, default=15, help="sources in the top chart (default: %(default)s)")
    dates.add_arguments(parser)
    table_view.add_arguments(parser)
    remote.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Write the report; 0 on success, 2 when the dataset folder is missing or the table cannot be read."""
    days, problem = table_view.dataset_flags(args)
    if problem:
        print(f"newsbeam report: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        html = build_report(args.data, latest_runs=args.runs, top_sources=args.top_sources,
                            table=args.table, catalog=args.iceberg_catalog, as_of=args.as_of, days=days)
    except (TableError, duckdb.Error) as error:  # duckdb: a file of the dataset it cannot read
        print(f"newsbeam report: {first_line(error)}", file=sys.stderr)
        return EXIT_CONFIG
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(html, encoding="utf-8")
    LOGGER.info("wrote %s (%d bytes)", args.out, len(html.encode("utf-8")))
    return EXIT_OK
