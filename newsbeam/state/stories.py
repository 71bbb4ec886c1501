"""Recent stories in ``--state`` (:mod:`newsbeam.stories`): what a batch run's articles may join.

Beside the files of :mod:`newsbeam.state.store`::

    stories.jsonl                    one story a line, oldest first: id, first and last seen,
                                     counts, languages, sources (redacted), centroid as int8 + scale
    pending/<run_id>/stories.jsonl   the stories a run created or updated; ``commit_stories``
                                     folds them into stories.jsonl once the run's data is committed

Like the ids of written rows, the stories only advance after the data that
carries their ids is committed; each file is replaced in one step
(``write_text_atomically``). Every write drops the stories last seen more than
the window before ``now`` (wall-clock time unless given), so the file stays
about one window of news. A run killed between its data commit and
``commit_stories`` loses only its story updates: its articles keep their ids,
and the next run's articles about those events open stories of their own.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from typing import Iterable, Optional

import numpy as np

from newsbeam.embeddings import dequantise, normalise, quantise
from newsbeam.layout import filesystems, join_path, list_paths, read_text, write_text_atomically
from newsbeam.normalise import redact_url
from newsbeam.stories import DEFAULT_STORY_WINDOW_SECONDS, MICROS, Story, to_micros

LOGGER = logging.getLogger(__name__)

STORIES_FILE = "stories.jsonl"
PENDING_DIR = "pending"  # as newsbeam.state.store; feed statuses there are *.json, stories *.jsonl


def stories_path(state: str) -> str:
    return join_path(state, STORIES_FILE)


def pending_stories_path(state: str, run_id: str) -> str:
    return join_path(state, PENDING_DIR, run_id, STORIES_FILE)


def story_to_line(story: Story) -> str:
    """One story as a JSON line; the centroid as base64 int8 values and a scale (:mod:`newsbeam.embeddings`)."""
    values, scales = quantise(np.asarray(story.centroid, dtype=np.float32)[None, :])
    return json.dumps({
        "story_id": story.story_id, "first_seen": story.first_seen, "last_seen": story.last_seen,
        "article_count": story.article_count, "vector_count": story.vector_count,
        "languages": list(story.languages),
        "sources": sorted({redact_url(source) or "" for source in story.sources}),
        "centroid": base64.b64encode(values[0].tobytes()).decode("ascii"), "scale": float(scales[0]),
    }, ensure_ascii=False)


def story_from_line(line: str) -> Story:
    row = json.loads(line)
    values = np.frombuffer(base64.b64decode(row["centroid"]), dtype=np.int8)
    centroid = normalise(dequantise(values[None, :], np.array([row["scale"]], dtype=np.float32)))[0]
    return Story(story_id=row["story_id"], centroid=centroid, first_seen=row["first_seen"],
                 last_seen=row["last_seen"], article_count=int(row["article_count"]),
                 vector_count=int(row["vector_count"]), languages=tuple(row["languages"]),
                 sources=tuple(row["sources"]))


def _read_stories(path: str) -> list[Story]:
    stories = []
    for number, line in enumerate((read_text(path, errors="replace") or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            stories.append(story_from_line(line))
        except (ValueError, KeyError, TypeError):  # a cache of continuity: a bad line costs one story, not the run
            LOGGER.warning("skipping unreadable story on line %d of %s", number, path)
    return stories


def _recent(stories: Iterable[Story], now: Optional[dt.datetime], window_seconds: float) -> list[Story]:
    now = now or dt.datetime.now(dt.timezone.utc)
    cutoff = to_micros(now.isoformat()) - int(window_seconds * MICROS)
    kept = [story for story in stories if to_micros(story.last_seen) >= cutoff]
    return sorted(kept, key=lambda story: (story.first_seen, story.story_id))


def load_recent_stories(state: str, now: Optional[dt.datetime] = None,
                        window_seconds: float = DEFAULT_STORY_WINDOW_SECONDS) -> list[Story]:
    """The stories of earlier runs last seen within the window before ``now``, oldest first."""
    return _recent(_read_stories(stories_path(state)), now, window_seconds)


def save_recent_stories(state: str, stories: Iterable[Story], now: Optional[dt.datetime] = None,
                        window_seconds: float = DEFAULT_STORY_WINDOW_SECONDS) -> int:
    """Replace the state's stories with these, less those out of the window; how many were kept."""
    kept = _recent(stories, now, window_seconds)
    write_text_atomically(stories_path(state), "".join(story_to_line(story) + "\n" for story in kept))
    return len(kept)


def merge_stories(previous: Iterable[Story], updated: Iterable[Story]) -> list[Story]:
    """``previous`` with each story of ``updated`` put in place of the one of its id."""
    merged = {story.story_id: story for story in previous}
    merged.update((story.story_id, story) for story in updated)
    return list(merged.values())


def write_pending_stories(state: str, run_id: str, stories: Iterable[Story]) -> str:
    """A run's created and updated stories, kept aside until its data is committed."""
    path = pending_stories_path(state, run_id)
    write_text_atomically(path, "".join(story_to_line(story) + "\n" for story in stories))
    return path


def commit_stories(state: str, run_id: str, now: Optional[dt.datetime] = None,
                   window_seconds: float = DEFAULT_STORY_WINDOW_SECONDS) -> int:
    """After the run's data is committed: fold its pending stories into the state's; how many are kept.

    A run with no pending stories (no articles, or stories off) still drops
    the stories that left the window.
    """
    pending = list_paths(pending_stories_path(state, run_id))
    updated = [story for path in pending for story in _read_stories(path)]
    previous = _read_stories(stories_path(state))
    if not previous and not updated:
        return 0
    kept = save_recent_stories(state, merge_stories(previous, updated), now, window_seconds)
    if pending:
        filesystems().delete(pending)
    return kept
