"""The parser's cost is linear and capped: adversarial megabytes parse in well under a second,
the cap never shortens a name, and the anchored link scan blanks what the plain pattern would."""
import random
import re
import time

import pytest

from tasks.mentions import extract_mentions
from tasks.mentions.parser import MAX_PARSED_CHARS, strip_non_mention_text

MEGABYTE = 1_000_000
TIME_BOUND_SECONDS = 0.5

NORMAL_TEXT = "Thanks @alice and @Bob! See https://example.com/@nobody and `@in_code`.\n"
NORMAL_MENTIONS = ["alice", "Bob"]

# Each unit is repeated to fill a megabyte. Most make a backtracking pattern
# retry from every position of a long run (the old parser took minutes on
# them); the last few flood the scans with anchors, candidates and fences.
# Endless tokens and tokens cut into words both matter: the cap drops a token
# cut in half, so only words put adversarial text inside the parsed part.
ADVERSARIAL_UNITS = {
    "dots": "a.",
    "dots_in_words": "a." * 5_000 + " ",
    "backtick_run": "`",
    "backtick_runs_of_growing_length": "".join("`" * n + "x " for n in range(1, 200)),
    "at_signs_before_long_names": "@" + "a" * 5_000 + " ",
    "at_signs_in_dotted_words": "@bob" + ".a-b" * 2_500 + " ",
    "http_fragments": "http.",
    "http_fragments_in_words": "http.http-" * 1_000 + "http:/ ",
    "emails_with_long_domains": "bob@" + "mail." * 2_000 + "com ",
    "emails_with_long_local_parts": "first.last-" * 500 + "@example.com ",
    "link_anchors": "a.bc/" * 200 + "www.x http://y ",
    "at_names": "@a ",
    "code_fences": "```\n~~~x\n",
    "mixed": "a." * 3_000 + "@x `" + "http." * 1_000 + "`` bob@" + "mail." * 1_000 + "com ~~~ ＠é@の@y \n",
}


def _timed(function, text):
    started = time.perf_counter()
    result = function(text)
    return result, time.perf_counter() - started


@pytest.mark.parametrize("unit", ADVERSARIAL_UNITS.values(), ids=ADVERSARIAL_UNITS.keys())
def test_a_megabyte_of_adversarial_text_parses_fast_and_keeps_the_mentions_before_it(unit):
    text = NORMAL_TEXT + unit * (MEGABYTE // len(unit))
    assert len(text) >= MEGABYTE - len(unit)
    mentions, elapsed = _timed(extract_mentions, text)
    assert elapsed < TIME_BOUND_SECONDS, f"{elapsed:.3f} s"
    assert mentions[:2] == NORMAL_MENTIONS
    assert "nobody" not in mentions and "in_code" not in mentions


@pytest.mark.parametrize("unit", ADVERSARIAL_UNITS.values(), ids=ADVERSARIAL_UNITS.keys())
def test_the_scans_are_linear_without_the_cap(unit):
    """The cap is a second guard, not the reason parsing is fast: the scans
    themselves take linear time on four times the capped length."""
    text = unit * (4 * MAX_PARSED_CHARS // len(unit))
    stripped, elapsed = _timed(strip_non_mention_text, text)
    assert elapsed < TIME_BOUND_SECONDS, f"{elapsed:.3f} s"
    assert len(stripped) == len(text)


def test_mentions_past_the_cap_are_ignored():
    filler = "word " * (MAX_PARSED_CHARS // 5)
    assert extract_mentions("@alice " + filler + "@bob") == ["alice"]


def test_a_text_exactly_at_the_cap_is_parsed_whole():
    text = "@alice " + "x" * (MAX_PARSED_CHARS - len("@alice ") - len(" @bob")) + " @bob"
    assert len(text) == MAX_PARSED_CHARS
    assert extract_mentions(text) == ["alice", "bob"]


def _words_then(tail: str, cut_after: int) -> str:
    """"@alice", filler words, then ``tail`` with the cap falling after its first ``cut_after`` characters."""
    head = "@alice " + "x" * (MAX_PARSED_CHARS - len("@alice ") - 1 - cut_after) + " "
    assert len(head) + cut_after == MAX_PARSED_CHARS
    return head + tail


@pytest.mark.parametrize("cut_after", [2, 5, 9])
def test_the_cap_never_shortens_a_name(cut_after):
    text = _words_then("@alexander and more", cut_after)     # cut to "@a", "@alex", "@alexande"
    assert extract_mentions(text) == ["alice"]


def test_the_cap_never_cuts_a_link_in_half():
    text = _words_then("@bob.example.com/path and more", len("@bob.exa"))
    assert extract_mentions(text[:MAX_PARSED_CHARS]) == ["alice", "bob"]   # what a blind cut would see
    assert extract_mentions(text) == ["alice"]


# The plain patterns the scans replace: same blanks, quadratic time.
_REFERENCE_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)
_REFERENCE_LINK = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)\S+"
    r"|\b[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}/\S*")
_PIECES = list("aw.w/:h1-+_ é\n@~xc") + ["://", "www.", ".com/", "~~~", "\n~~~\n", " \t", "http://",
                                         "@bob", "＠", "の", "\u3000"]


def _reference_strip(text):
    def blank(match):
        return " " * len(match.group(0))
    return _REFERENCE_LINK.sub(blank, _REFERENCE_FENCE.sub(blank, text))


def test_fences_and_links_are_blanked_as_the_plain_patterns_blank_them():
    rng = random.Random(20261125)
    for _ in range(20_000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 30)))
        assert strip_non_mention_text(text) == _reference_strip(text), repr(text)
