"""@mention extraction following twitter-text's mention rules.

Pure: no database, no Celery. Returns candidate usernames in order of first
appearance, deduplicated case-insensitively (the first spelling wins).

Linear time. No pattern here is tried at every position of an unbounded run:
code spans are paired from their backtick runs, links are found from their
anchors ("://", "www.", ".com/") and extended over their token, and only the
first MAX_PARSED_CHARS characters of a text are parsed at all.
"""
from __future__ import annotations

import re

MAX_USERNAME_LENGTH = 30

# Work per text is bounded whatever the web tier stores (posts.content and
# comments.content are unbounded TEXT): past this many characters the rest is
# ignored, as if the text ended at the last whitespace before the cut, so that
# no name or link is cut in half. 64,000 is above Facebook's 63,206-character
# post limit, among the longest of the mainstream networks, so a real post is
# parsed whole; a worst-case text of this size parses in tens of milliseconds.
MAX_PARSED_CHARS = 64_000

AT_SIGNS = "@\uff20"  # "@" and the fullwidth "＠"

# twitter-text validMentionPrecedingChars: an "@" right after one of these is
# part of a word, a hashtag, a cashtag or an email, never a mention.
_BLOCKING_PRECEDING = set("_!#$%&*") | set(AT_SIGNS)

# Chinese, Japanese and Korean are written without spaces between words, so a
# mention often follows a letter directly ("の@alice"). twitter-text blocks only
# ASCII letters and digits before the "@"; this parser also blocks other
# letters ("é@bob" is a word, as in an email), except these scripts.
_CJK_LETTER = re.compile(
    "[\u1100-\u11ff"           # Hangul Jamo
    "\u3005-\u3007"            # 々 〆 〇
    "\u3021-\u3029\u3031-\u3035\u3038-\u303c"  # Hangzhou numerals, kana repeat marks
    "\u3040-\u30ff"            # Hiragana, Katakana
    "\u3100-\u312f\u3130-\u318f\u31a0-\u31bf\u31f0-\u31ff"  # Bopomofo, Hangul compatibility Jamo, Katakana ext.
    "\u3400-\u4dbf\u4e00-\u9fff"  # CJK Unified Ideographs (and extension A)
    "\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff"  # Hangul Jamo ext. A, syllables, Jamo ext. B
    "\uf900-\ufaff"            # CJK Compatibility Ideographs
    "\uff66-\uff9f\uffa0-\uffdc"  # halfwidth Katakana and Hangul
    "\U0001b000-\U0001b16f"    # Kana supplement and extensions
    "\U00020000-\U0003134f]")  # CJK Unified Ideographs extensions B to G, compatibility supplement

# twitter-text latinAccentChars: a name running into one of these is a longer
# word ("@josé"), so it is rejected rather than cut short to "@jos".
_LATIN_ACCENTS = re.compile(
    "[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0100-\u024f\u0253\u0254\u0256\u0257\u0259\u025b"
    "\u0263\u0268\u026f\u0272\u0289\u028b\u02bb\u0300-\u036f\u1e00-\u1eff]")

_CANDIDATE = re.compile(f"[{AT_SIGNS}]([A-Za-z0-9_]+)")

# Fenced code blocks: an opening line of ``` or ~~~ runs to the next line that
# starts with the same marker, or to the end. Each search resumes where the
# last block ended and "^" only matches at line starts, so this stays linear.
_FENCE_OPEN = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n", re.MULTILINE)
_FENCE_CLOSE = {marker: re.compile(rf"^[ \t]*{re.escape(marker)}[^\n]*", re.MULTILINE)
                for marker in ("```", "~~~")}

_BACKTICK_RUN = re.compile("`+")

# Links, as the pattern
#   (?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)\S+          scheme:// or www.
#   |\b[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}/\S*   bare domain with a path
# would blank them, without trying it at every position (quadratic on
# "a.a.a…"). Every match of that pattern ends where its token (run of
# non-whitespace) ends, so a token holds at most one: from the leftmost start
# any of its anchors allows to the token's end. The anchors: "://", "www" before
# a dot (the dot may also start a top-level domain) and a top-level domain with
# its slash (".com/").
_URL_ANCHOR = re.compile(r"://|www(?=\.)|\.[A-Za-z]{2,}/")
_WHITESPACE = re.compile(r"\s")
# Matched on the reversed text: the run of these characters ending at a position.
_SCHEME_RUN = re.compile(r"[A-Za-z0-9+.\-]*")
_DOMAIN_RUN = re.compile(r"[A-Za-z0-9.\-]*")
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_LABEL_START = re.compile(r"[.\-][A-Za-z0-9]")
_ASCII_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _fenced_blocks(text: str) -> list[tuple[int, int]]:
    spans = []
    pos = 0
    while (opener := _FENCE_OPEN.search(text, pos)) is not None:
        closer = _FENCE_CLOSE[opener.group(1)].search(text, opener.end())
        end = len(text) if closer is None else closer.end()
        spans.append((opener.start(), end))
        if closer is None:
            break
        pos = end
    return spans


def _code_spans(text: str) -> list[tuple[int, int]]:
    """CommonMark code spans: a backtick run up to the next run of the same length.

    A run with no such closer is literal text. Pairing by run length, found
    right to left with one dict, keeps this linear in the number of runs.
    """
    runs = [match.span() for match in _BACKTICK_RUN.finditer(text)]
    next_same_length: list[int | None] = [None] * len(runs)
    last_seen: dict[int, int] = {}
    for index in range(len(runs) - 1, -1, -1):
        length = runs[index][1] - runs[index][0]
        next_same_length[index] = last_seen.get(length)
        last_seen[length] = index
    spans = []
    index = 0
    while index < len(runs):
        closer = next_same_length[index]
        if closer is None:
            index += 1
        else:
            spans.append((runs[index][0], runs[closer][1]))
            index = closer + 1
    return spans


def _run_start(pattern: re.Pattern, reversed_text: str, end: int) -> int:
    """Start of the longest run of ``pattern``'s characters ending just before ``end``."""
    rev_pos = len(reversed_text) - end
    return end - (pattern.match(reversed_text, rev_pos).end() - rev_pos)


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"   # what "\b" tests in a str pattern


def _link_start(text: str, reversed_text: str, anchor: re.Match, token_end: int) -> int | None:
    """Leftmost start of a link this anchor completes, or None."""
    at, after = anchor.span()
    kind = anchor.group()
    if kind == "www":   # "www." and at least one more character
        return at if after + 1 < token_end else None
    if kind == "://":
        if after >= token_end:
            return None
        letter = _ASCII_LETTER.search(text, _run_start(_SCHEME_RUN, reversed_text, at), at)
        return None if letter is None else letter.start()
    # ".com/": the domain's other labels run back from its dot
    start = _run_start(_DOMAIN_RUN, reversed_text, at)
    if start == at:
        return None
    if text[start] in _ASCII_ALNUM and (start == 0 or not _is_word_char(text[start - 1])):
        return start
    label = _LABEL_START.search(text, start, at)
    return None if label is None else label.start() + 1


def _link_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    reversed_text = ""
    token_end = -1
    leftmost: int | None = None
    for anchor in _URL_ANCHOR.finditer(text):
        if anchor.start() >= token_end:
            if leftmost is not None:
                spans.append((leftmost, token_end))
                leftmost = None
            space = _WHITESPACE.search(text, anchor.start())
            token_end = len(text) if space is None else space.start()
        if not reversed_text:
            reversed_text = text[::-1]
        start = _link_start(text, reversed_text, anchor, token_end)
        if start is not None and (leftmost is None or start < leftmost):
            leftmost = start
    if leftmost is not None:
        spans.append((leftmost, token_end))
    return spans


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """Spaces over the spans (sorted, disjoint), so positions and boundaries stay put."""
    if not spans:
        return text
    parts = []
    pos = 0
    for start, end in spans:
        parts.append(text[pos:start])
        parts.append(" " * (end - start))
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def strip_non_mention_text(text: str) -> str:
    """Blank what is displayed literally or links elsewhere: no mentions inside."""
    text = _blank(text, _fenced_blocks(text))
    text = _blank(text, _code_spans(text))
    return _blank(text, _link_spans(text))


def _parsed_part(text: str) -> str:
    """The text cut to MAX_PARSED_CHARS, back to a whitespace so no word is cut in half."""
    if len(text) <= MAX_PARSED_CHARS:
        return text
    head = text[:MAX_PARSED_CHARS]
    if head[-1].isspace() or text[MAX_PARSED_CHARS].isspace():
        return head
    before_last_word = head.rsplit(None, 1)
    return before_last_word[0] if len(before_last_word) == 2 else ""


def extract_mentions(text: str | None) -> list[str]:
    if not text:
        return []
    text = _parsed_part(text)
    if not any(sign in text for sign in AT_SIGNS):
        return []
    text = strip_non_mention_text(text)
    found: list[str] = []
    seen: set[str] = set()
    for match in _CANDIDATE.finditer(text):
        start, end = match.span()
        if start > 0:
            before = text[start - 1]
            if before in _BLOCKING_PRECEDING or (before.isalnum() and not _CJK_LETTER.match(before)):
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
