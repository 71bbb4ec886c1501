"""The "Top stories" section of ``newsbeam report``.

A story (``story_id``, written by ``newsbeam run --stories``, newsbeam/stories.py)
is the articles about one event across outlets and languages. The section lists
the stories carried by the most outlets, then the most languages, over every
row of the ``articles`` view (the report has no date range of its own). Kept
apart from report.py, which holds the other sections, only for size.
"""
from __future__ import annotations

from typing import Any

import duckdb
import jinja2
from markupsafe import Markup

from newsbeam.analytics.dataset import ARTICLES_VIEW

TITLE = "Top stories"
MAX_STORIES = 10
NO_STORIES = "No stories: no article in this dataset has a story_id (they are written by newsbeam run --stories)."

# The representative title is the story's earliest article's (published, else fetched; then article_id).
# Not the one in the story's most common language: that is mostly the language of whichever outlets
# the dataset polls most, ties between languages need an arbitrary rule, and the answer can flip as
# articles arrive. The earliest article is a stable choice (later articles never change it) and names
# the outlet that carried the story first; its language is shown next to it. Blank titles are skipped.
EVENT_TIME = "coalesce(published_at, fetched_at)"
TITLED = "nullif(trim(title), '') IS NOT NULL"
QUERY = f"""
SELECT story_id,
       count(*) AS articles,
       count(DISTINCT source) AS outlets,
       list(DISTINCT language ORDER BY language) AS languages,
       strftime(min({EVENT_TIME}), '%Y-%m-%d %H:%M') AS first_published,
       strftime(max({EVENT_TIME}), '%Y-%m-%d %H:%M') AS last_published,
       first(title ORDER BY {EVENT_TIME}, article_id) FILTER (WHERE {TITLED}) AS title,
       first(language ORDER BY {EVENT_TIME}, article_id) FILTER (WHERE {TITLED}) AS title_language
FROM {ARTICLES_VIEW}
WHERE story_id IS NOT NULL
GROUP BY story_id
ORDER BY outlets DESC, len(languages) DESC, articles DESC, max({EVENT_TIME}) DESC, story_id
LIMIT ?
"""


def collect(connection: duckdb.DuckDBPyConnection, *, limit: int = MAX_STORIES) -> list[dict[str, Any]]:
    """The top ``limit`` stories, best first; [] when no row has a story_id.

    A dataset of schema version 1 files only has no ``story_id`` column at all;
    in one that mixes versions, the older files' rows read as null."""
    if "story_id" not in connection.table(ARTICLES_VIEW).columns:
        return []
    relation = connection.sql(QUERY, params=[int(limit)])
    return [dict(zip(relation.columns, row)) for row in relation.fetchall()]


SECTION = jinja2.Template("""<section>
<h2>{{ title }}</h2>
{% if stories %}
<table class="stories">
<tr><th>title</th><th>articles</th><th>outlets</th><th>languages</th><th>first published (UTC)</th><th>last published (UTC)</th></tr>
{% for story in stories %}
<tr><td class="wrap"><bdi{% if story.title_language %} lang="{{ story.title_language }}"{% endif %}>{{ story.title or "(untitled)" }}</bdi>{% if story.title_language %} <span class="meta">({{ story.title_language }})</span>{% endif %}</td>
<td class="n">{{ story.articles }}</td><td class="n">{{ story.outlets }}</td><td>{{ story.languages|join(", ") }}</td>
<td class="time">{{ story.first_published }}</td><td class="time">{{ story.last_published }}</td></tr>
{% endfor %}
</table>
{% else %}<p class="empty">{{ no_stories }}</p>{% endif %}
</section>
""", autoescape=True)


def render(stories: list[dict[str, Any]]) -> Markup:
    """The section's HTML; feed text in it is escaped."""
    return Markup(SECTION.render(title=TITLE, stories=stories, no_stories=NO_STORIES))
