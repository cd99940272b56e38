"""#hashtag extraction following twitter-text's hashtag rules.

The sibling of the @mention parser (tasks/mentions/parser.py), and pure like
it: no database, no Celery. ``extract_hashtags`` returns the normalized key of
each tag (``normalize_tag``: NFKC, then case folding) in order of first
appearance, deduplicated by that key. The key is what the ``tags`` table stores
as ``name``, so "#Café", "#CAFÉ" and "#ｃａｆé" count as one tag.

It reuses the mention parser's preparation, so both see the same text: only
the first MAX_PARSED_CHARS characters are parsed, and code spans, fenced code
blocks and links are blanked (positions kept) so no tag is found inside them.

Linear time. There is no backtracking pattern: each hash sign is looked at
once, and the run of tag characters after it is scanned once. A run holds no
hash sign, so the runs scanned for different hash signs never overlap.
"""
from __future__ import annotations

import re
import unicodedata

from tasks.mentions.parser import _parsed_part, strip_non_mention_text

__all__ = ["MAX_TAGS_PER_POST", "MAX_TAG_LENGTH", "extract_hashtags", "normalize_tag"]

# A longer tag is rejected, not truncated: a cut tag would be a different tag.
# The limit holds for the tag as written and for its key, which is what gets
# stored and may be longer ("ß" folds to "ss", "ﬃ" to "ffi").
MAX_TAG_LENGTH = 100

# The first this many distinct tags of a text count; the rest are ignored, so
# a text of nothing but tags cannot flood the tags table.
MAX_TAGS_PER_POST = 30

HASH_SIGNS = "#\uff03"  # "#" and the fullwidth "＃"
_HASH_SIGN = re.compile(f"[{HASH_SIGNS}]")

# Zero-width non-joiner and joiner: Persian and Indic words need them inside a
# word (twitter-text counts them as tag characters). Variation selectors 15/16
# are combining marks, but like the joiners they are invisible, so a tag that
# ends in one (pasted "#tag\ufe0f") keeps only what is visible.
_JOINERS = "\u200c\u200d"
_INVISIBLE_AT_END = _JOINERS + "\ufe0e\ufe0f"

# twitter-text lets a tag follow an emoji's variation selector ("❤️#love"),
# though the selector is a combining mark.
_VARIATION_SELECTORS = "\ufe0e\ufe0f"

# A "#" after one of these is part of an HTML entity ("&#39;") or a run of
# hash signs ("##tag"), never a tag.
_BLOCKING_PRECEDING = "&" + HASH_SIGNS


def _is_mark(char: str) -> bool:
    # Python's \w and str.isalnum() leave out most combining marks (Devanagari
    # and Thai vowel signs, virama): "\w+" cuts "हिन्दी" into three pieces.
    return unicodedata.category(char)[0] == "M"


def _starts_tag(char: str) -> bool:
    """A letter of any script, a decimal digit or "_": what may follow the hash sign.

    Not a mark: one right after "#" has no letter to combine with, and this
    keeps out the keycap "#️⃣" (U+FE0F U+20E3), as twitter-text does.
    """
    return char.isalpha() or char.isdecimal() or char == "_"


def _in_tag(char: str) -> bool:
    """twitter-text's hashtag characters: \\p{L}, \\p{M}, \\p{Nd}, "_" and the joiners.

    Not the other numbers Python's \\w accepts ("²", "½", "Ⅻ"): NFKC would
    turn them into digits and fraction slashes ("a½" into "a1⁄2").
    """
    return _starts_tag(char) or char in _JOINERS or _is_mark(char)


def normalize_tag(tag: str) -> str:
    """The key a tag is stored and deduplicated by: NFKC, then case folding.

    NFKC folds compatibility forms (fullwidth "ｔａｇ", ligatures) and composes
    accents, so "é" typed as one character or as "e" plus U+0301 is one key;
    casefold() is the Unicode caseless match, stronger than lower() ("ß" is "ss").
    """
    return unicodedata.normalize("NFKC", tag).casefold()


def _tag_at(text: str, sign: int) -> str | None:
    """The normalized tag that starts with the hash sign at ``sign``, or None."""
    if sign > 0:
        before = text[sign - 1]
        if before in _BLOCKING_PRECEDING or (_in_tag(before) and before not in _VARIATION_SELECTORS):
            return None   # mid-word ("abc#tag"), an entity or a second hash sign
    start = sign + 1
    if start == len(text) or not _starts_tag(text[start]):
        return None
    end = start + 1
    while end < len(text) and _in_tag(text[end]):
        end += 1
    # twitter-text's end rule: a tag running into another hash sign or into
    # "://" is something else ("#tag#other", "#日本http://…").
    if end < len(text) and (text[end] in HASH_SIGNS or text.startswith("://", end)):
        return None
    tag = text[start:end].rstrip(_INVISIBLE_AT_END)
    if len(tag) > MAX_TAG_LENGTH:
        return None
    # Not a number ("#1", "#2024"): twitter-text wants a letter or a mark, so
    # "#_" and "#1_000" are not tags either.
    if not any(char.isalpha() or _is_mark(char) for char in tag):
        return None
    key = normalize_tag(tag)
    return key if len(key) <= MAX_TAG_LENGTH else None


def extract_hashtags(text: str | None) -> list[str]:
    """Normalized keys of the text's hashtags, first appearance first, at most MAX_TAGS_PER_POST."""
    if not text:
        return []
    text = _parsed_part(text)
    if not any(sign in text for sign in HASH_SIGNS):
        return []
    # Hash signs are taken from the blanked text, so none inside code or a link
    # counts; the tag itself is read from the text as written. A link may start
    # inside a word ("#tagwww.example.com", "#日本http://…"), and reading the
    # blanked text would cut the tag short at the link instead of applying
    # twitter-text's rules to the whole word.
    blanked = strip_non_mention_text(text)
    found: list[str] = []
    seen: set[str] = set()
    for sign in _HASH_SIGN.finditer(blanked):
        key = _tag_at(text, sign.start())
        if key is not None and key not in seen:
            seen.add(key)
            found.append(key)
            if len(found) == MAX_TAGS_PER_POST:
                break
    return found
