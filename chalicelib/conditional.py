"""HTTP conditional requests (RFC 9110, section 13): parsing and comparing entity tags."""

from __future__ import annotations

import re

_ENTITY_TAG = re.compile(r'\s*(W/)?("[^"]*"|[^,\s]+)\s*(?:,|$)')


def parse_entity_tags(header: str) -> list[tuple[bool, str]] | None:
    """Parse an If-Match or If-None-Match value into (is_weak, quoted tag) pairs.

    Returns None for `*`. A tag sent without quotes is accepted as if it were quoted, since
    people paste ETags into Postman and curl without them.
    """
    if header.strip() == "*":
        return None
    tags = []
    for match in _ENTITY_TAG.finditer(header):
        weak, tag = match.group(1) is not None, match.group(2)
        if not tag.startswith('"'):
            tag = f'"{tag}"'
        tags.append((weak, tag))
    return tags


def if_match_passes(header: str | None, current_etag: str) -> bool:
    """Apply If-Match with the strong comparison: a weak tag never matches."""
    if header is None:
        return True
    tags = parse_entity_tags(header)
    if tags is None:
        return True
    return any(not weak and tag == current_etag for weak, tag in tags)


def if_none_match_hits(header: str | None, current_etag: str) -> bool:
    """Return True when If-None-Match names the current representation (weak comparison)."""
    if header is None:
        return False
    tags = parse_entity_tags(header)
    if tags is None:
        return True
    return any(tag == current_etag for _, tag in tags)
