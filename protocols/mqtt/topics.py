"""Topic matching with MQTT's wildcards.

``+`` matches exactly one level, ``#`` (last) matches any number of levels,
including none (``a/#`` matches ``a``). As the standard says, a wildcard in the
first level does not match topics that begin with ``$`` (``#`` does not match
``$SYS/uptime``).

:class:`TopicPattern` is a filter split into levels once, for code that matches
many topics against the same patterns (access lists)::

    from protocols.mqtt.topics import TopicPattern, topic_matches

    assert topic_matches("sensors/+/temp", "sensors/kitchen/temp")
    pattern = TopicPattern("sensors/#")
    assert pattern.matches("sensors") and pattern.matches("sensors/a/b")
    assert pattern.covers("sensors/+/temp")      # every topic it matches, we match
    assert not pattern.covers("#")
    assert TopicPattern("a/+/c").overlaps("a/b/+")   # both match a/b/c
"""

from __future__ import annotations

from ._wire import check_topic_filter

__all__ = ["TopicPattern", "topic_matches"]


class TopicPattern:
    """A topic filter, ready to match topic names and to judge other filters."""

    __slots__ = ("_exact", "_levels", "text")

    def __init__(self, text: str) -> None:
        problem = check_topic_filter(text)
        if problem:
            raise ValueError(problem)
        self.text = text
        self._levels = text.split("/")
        # A filter without wildcards matches one topic: compare strings, not levels.
        self._exact = "+" not in text and "#" not in text

    def matches(self, topic: str) -> bool:
        """Whether the topic name ``topic`` matches this filter."""
        if self._exact:
            return topic == self.text
        if topic.startswith("$") and self._levels[0] in ("+", "#"):
            return False
        return _match(self._levels, topic.split("/"))

    def covers(self, topic_filter: str) -> bool:
        """Whether every topic that ``topic_filter`` matches is matched by this
        pattern too (a subscription to ``topic_filter`` stays inside it). A shared
        subscription ``$share/GROUP/filter`` is judged by its ``filter``."""
        topic_filter = _unshared(topic_filter)
        if self._exact:
            return topic_filter == self.text
        levels = topic_filter.split("/")
        if levels[0].startswith("$") and self._levels[0] in ("+", "#"):
            return False
        return _covers(self._levels, levels)

    def overlaps(self, topic_filter: str) -> bool:
        """Whether some topic matches both this pattern and ``topic_filter`` (a
        subscription to ``topic_filter`` could receive one of ours; for deny
        lists). A shared subscription is judged by its filter, as in
        :meth:`covers`."""
        levels = _unshared(topic_filter).split("/")
        ours = self._levels
        if (ours[0].startswith("$") and levels[0] in ("+", "#")) or (
            levels[0].startswith("$") and ours[0] in ("+", "#")
        ):
            return False  # a wildcard first level never matches a "$" topic
        for i in range(max(len(ours), len(levels))):
            want = ours[i] if i < len(ours) else None
            have = levels[i] if i < len(levels) else None
            if want == "#" or have == "#":
                return True
            if want is None or have is None:
                return False
            if want != have and want != "+" and have != "+":
                return False
        return True

    def __repr__(self) -> str:
        return f"TopicPattern({self.text!r})"


def _unshared(topic_filter: str) -> str:
    """The filter of a shared subscription ``$share/GROUP/filter``."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether the topic name ``topic`` matches ``topic_filter``."""
    return TopicPattern(topic_filter).matches(topic)


def _match(pattern: list[str], levels: list[str]) -> bool:
    n = len(levels)
    for i, want in enumerate(pattern):
        if want == "#":
            return True
        if i >= n:
            return False
        if want != "+" and want != levels[i]:
            return False
    return len(pattern) == n


def _covers(pattern: list[str], levels: list[str]) -> bool:
    n = len(levels)
    for i, want in enumerate(pattern):
        if want == "#":
            return True
        if i >= n:
            return False
        have = levels[i]
        if have == "#":
            return False  # ours is narrower here
        if want != "+" and want != have:
            return False
    return len(pattern) == n
