"""@mention extraction following twitter-text's mention rules.

Pure: no database, no Celery. Returns candidate usernames in order of first
appearance, deduplicated case-insensitively (the first spelling wins).
"""
from __future__ import annotations

import re

MAX_USERNAME_LENGTH = 30

AT_SIGNS = "@\uff20"  # "@" and the fullwidth "＠"

# twitter-text validMentionPrecedingChars: an "@" right after one of these is
# part of a word, a hashtag, a cashtag or an email, never a mention.
_BLOCKING_PRECEDING = set("_!#$%&*") | set(AT_SIGNS)

# twitter-text latinAccentChars: a name running into one of these is a longer
# word ("@josé"), so it is rejected rather than cut short to "@jos".
_LATIN_ACCENTS = re.compile(
    "[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0100-\u024f\u0253\u0254\u0256\u0257\u0259\u025b"
    "\u0263\u0268\u026f\u0272\u0289\u028b\u02bb\u0300-\u036f\u1e00-\u1eff]")

_CANDIDATE = re.compile(f"[{AT_SIGNS}]([A-Za-z0-9_]+)")

# Text that is displayed literally or links elsewhere: no mentions inside.
_FENCED_CODE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
_URL = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)\S+"          # scheme:// or www.
    r"|\b[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}/\S*",  # bare domain with a path
)


def _blank(match: re.Match) -> str:
    # Replace with spaces of the same length so positions and boundaries stay put.
    return " " * len(match.group(0))


def strip_non_mention_text(text: str) -> str:
    text = _FENCED_CODE.sub(_blank, text)
    text = _CODE_SPAN.sub(_blank, text)
    return _URL.sub(_blank, text)


def extract_mentions(text: str | None) -> list[str]:
    if not text:
        return []
    text = strip_non_mention_text(text)
    found: list[str] = []
    seen: set[str] = set()
    for match in _CANDIDATE.finditer(text):
        start, end = match.span()
        if start > 0:
            before = text[start - 1]
            if before.isalnum() or before in _BLOCKING_PRECEDING:
                continue
        after = text[end:end + 3]
        if after[:1] and (after[0] in AT_SIGNS or _LATIN_ACCENTS.match(after[0])):
            continue
        if after.startswith("://"):
            continue
        name = match.group(1)
        if len(name) > MAX_USERNAME_LENGTH:
            continue
        key = name.lower()
        if key not in seen:
            seen.add(key)
            found.append(name)
    return found
