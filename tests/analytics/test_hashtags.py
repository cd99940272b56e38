"""The pure #hashtag extractor: twitter-text boundary rules, one table, linear time."""
import gc
import time

import pytest

import tasks.analytics.hashtags as hashtags
from tasks.analytics.hashtags import MAX_TAG_LENGTH, MAX_TAGS_PER_POST, extract_hashtags, normalize_tag
from tasks.mentions.parser import MAX_PARSED_CHARS

CASES = [
    # plain tags and positions
    ("#python", ["python"]),
    ("I love #python", ["python"]),
    ("#python is fun", ["python"]),
    ("#a #b #c", ["a", "b", "c"]),
    ("line one\n#tag on line two", ["tag"]),
    ("tab\t#tag", ["tag"]),
    # punctuation ends a tag and may precede one
    ("(#tag)", ["tag"]),
    ("#tag, #other; #third.", ["tag", "other", "third"]),
    ("#tag! #other?", ["tag", "other"]),
    ("'#tag' \"#quoted\"", ["tag", "quoted"]),
    ("#tag's post", ["tag"]),
    ("-#tag", ["tag"]),
    ("#tag: details", ["tag"]),
    ("#", []),
    ("# tag", []),
    ("#!", []),
    # order of first appearance, dedupe by normalized key
    ("#b #a #b", ["b", "a"]),
    ("#Python #PYTHON #python", ["python"]),
    ("#Café #CAFÉ #café", ["café"]),
    ("#cafe\u0301 #café", ["café"]),            # e + combining acute composes to é
    ("#Straße #STRASSE", ["strasse"]),          # casefold, not lower()
    # not all digits; twitter-text wants a letter or a mark
    ("#123", []),
    ("#2024 #123abc #1st", ["123abc", "1st"]),
    ("#１２３", []),                             # fullwidth digits are digits too
    ("#_ #1_000", []),
    ("#snake_case #_lead #trail_", ["snake_case", "_lead", "trail_"]),
    # what may not precede the hash sign
    ("&#39;", []),
    ("it&#39;s #fine", ["fine"]),
    ("don&#x27;t", []),                          # a hex entity has letters: only the "&" rule stops it
    ("abc#tag", []),
    ("9#tag", []),
    ("_#tag", []),
    ("é#tag", []),
    ("日本#タグ", []),
    ("##tag", []),
    ("＃#tag", []),
    ("#＃tag", []),
    ("❤️#love", ["love"]),                       # an emoji's variation selector may
    ("#️⃣ #tag", ["tag"]),                        # keycap "#️⃣" is not a tag
    # what may not follow the tag
    ("#tag#other", []),
    ("#tag＃other", []),
    ("#tag://", []),
    ("#日本http://example.com", []),             # the word runs into "://"
    ("#tagwww.example.com", ["tagwww"]),         # a link starting mid-word does not cut the tag
    # links and code
    ("https://example.com/page#section", []),
    ("see example.com/#anchor and #real", ["real"]),
    ("http://t.co/x?q=#a #b", ["b"]),
    ("`#code` but #ok", ["ok"]),
    ("```\n#x in a block\n```\n#y", ["y"]),
    ("~~~\n#x\n~~~", []),
    ("```\nunterminated #x", []),
    # other scripts, whole, with their combining marks
    ("#日本語", ["日本語"]),
    ("日本語 #タグ、次", ["タグ"]),
    ("#한국어", ["한국어"]),
    ("#مرحبا", ["مرحبا"]),
    ("#हिन्दी", ["हिन्दी"]),
    ("#ภาษาไทย", ["ภาษาไทย"]),
    ("#привет #Привет", ["привет"]),
    ("#می\u200cخواهم", ["می\u200cخواهم"]),      # a zero-width non-joiner inside a Persian word
    ("#tag\u200d #tag\ufe0f", ["tag"]),          # invisible characters at the end are dropped
    # fullwidth hash sign and letters
    ("＃tag", ["tag"]),
    ("＃ｔａｇ #TAG", ["tag"]),
    # symbols end a tag
    ("#fun🎉", ["fun"]),
    ("#fun🎉#party", ["fun", "party"]),
    ("#a²", ["a"]),
    # length: longer is rejected, not truncated; the stored key counts too
    ("#" + "a" * 100, ["a" * 100]),
    ("#" + "a" * 101, []),
    ("#" + "a" * 101 + " #ok", ["ok"]),
    ("#" + "ß" * 50, ["ss" * 50]),
    ("#" + "ß" * 51, []),
    # nothing to find
    ("", []),
    ("no tags here", []),
]


def test_the_table_has_at_least_40_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[repr(t)[:40] for t, _ in CASES])
def test_extract_hashtags(text, expected):
    assert extract_hashtags(text) == expected


def test_none_is_no_tags():
    assert extract_hashtags(None) == []


def test_the_public_api():
    assert set(hashtags.__all__) == {"extract_hashtags", "normalize_tag", "MAX_TAG_LENGTH", "MAX_TAGS_PER_POST"}
    assert (MAX_TAG_LENGTH, MAX_TAGS_PER_POST) == (100, 30)


def test_normalize_tag_folds_case_width_and_composition():
    assert normalize_tag("Café") == normalize_tag("CAFÉ") == normalize_tag("cafe\u0301") == "café"
    assert normalize_tag("ｔａｇ") == normalize_tag("TAG") == "tag"
    assert normalize_tag("ß") == "ss"


def test_every_key_is_its_own_normal_form():
    """What the tags table stores normalizes to itself, so a lookup normalizing a stored name finds it."""
    tags = ["Café", "ǰ", "ＴＡＧ", "ﬁx", "हिन्दी", "Straße", "ΣΊΣΥΦΟΣ"]
    keys = extract_hashtags(" ".join("#" + tag for tag in tags))
    assert len(keys) == len(tags)
    assert [normalize_tag(key) for key in keys] == keys


def test_only_the_first_30_distinct_tags_count():
    text = "#tag0 #TAG0 " + " ".join(f"#tag{i}" for i in range(40))
    assert extract_hashtags(text) == [f"tag{i}" for i in range(30)]


def test_tags_past_the_parsed_part_are_ignored():
    filler = "word " * (MAX_PARSED_CHARS // 5)
    assert extract_hashtags("#first " + filler + "#late") == ["first"]


# Hostile texts of about n characters, with what they must give. The runs of tag
# characters after different hash signs never overlap, so each is linear.
HOSTILE = {
    "hash_signs": (lambda n: "#" * n, []),
    "hash_letter": (lambda n: "#a" * (n // 2), []),              # "#a" runs into "#"; the rest follow "a"
    "letter_hash": (lambda n: "a#" * (n // 2), []),
    "fullwidth_hash_letter": (lambda n: "＃a" * (n // 2), []),
    "entities": (lambda n: "&#39;" * (n // 5), []),
    "same_tag": (lambda n: "#a " * (n // 3), ["a"]),
    "one_long_run": (lambda n: "#" + "a" * (n - 1), []),        # too long: rejected after one scan
    "one_long_run_of_marks": (lambda n: "#क" + "\u093f" * (n - 2), []),
    "trailing_joiners": (lambda n: "#a" + "\u200d" * (n - 2), ["a"]),
    "digits": (lambda n: "#1 " * (n // 3), []),
    "code_spans": (lambda n: "`#a` " * (n // 5), []),
    "links": (lambda n: "http://x.co/#a " * (n // 15), []),
    "mid_word": (lambda n: ("a" * 50 + "#b" + " ") * (n // 53), []),
}

SMALL = MAX_PARSED_CHARS // 4   # 4 * SMALL is parsed whole: the cap does not hide the growth


def _growth(small, large, rounds=7):
    """How many times longer the large text takes: best of interleaved runs each.

    Interleaving and taking the best run keep a burst of load on the machine from
    landing on one size only; the garbage collector is paused so its passes over
    the whole test process's heap do not count as parsing time.
    """
    best = [float("inf"), float("inf")]
    gc.disable()
    try:
        for _ in range(rounds):
            for size, text in enumerate((small, large)):
                started = time.perf_counter()
                extract_hashtags(text)
                best[size] = min(best[size], time.perf_counter() - started)
    finally:
        gc.enable()
    return best[1] / best[0]


@pytest.mark.parametrize(("build", "expected"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_text_is_parsed_correctly_in_linear_time(build, expected):
    small, large = build(SMALL), build(4 * SMALL)
    assert 4 * SMALL - 60 <= len(large) <= MAX_PARSED_CHARS
    assert extract_hashtags(small) == expected
    assert extract_hashtags(large) == expected
    # Four times the text may take about four times as long; quadratic work would
    # take sixteen. A busy machine can still slow every large run of one
    # measurement, so it gets three tries; a quadratic parser fails all three.
    ratios = []
    while len(ratios) < 3 and (not ratios or ratios[-1] >= 8):
        ratios.append(_growth(small, large))
    assert ratios[-1] < 8, f"4x the text took {', '.join(f'{r:.1f}' for r in ratios)}x as long"
