"""The pure @mention parser: twitter-text boundary rules, one table."""
import pytest

from tasks.mentions import extract_mentions

CASES = [
    # plain mentions and positions
    ("hello @bob", ["bob"]),
    ("@bob at the start", ["bob"]),
    ("at the end @bob", ["bob"]),
    ("@bob", ["bob"]),
    ("thanks @bob and @carol!", ["bob", "carol"]),
    ("(@bob)", ["bob"]),
    ("@bob, @carol; @dave.", ["bob", "carol", "dave"]),
    ("line one\n@bob on line two", ["bob"]),
    ("'@bob' \"@carol\"", ["bob", "carol"]),
    ("@bob's post", ["bob"]),
    ("@bob/friends list", ["bob"]),
    ("-@bob", ["bob"]),
    # order of first appearance, case-insensitive dedupe, first spelling kept
    ("@carol then @bob then @carol", ["carol", "bob"]),
    ("@Bob @bob @BOB", ["Bob"]),
    # username alphabet and length
    ("@bob_7 @B0b", ["bob_7", "B0b"]),
    ("@_underscore", ["_underscore"]),
    ("@123", ["123"]),
    ("@" + "a" * 30, ["a" * 30]),
    ("@" + "a" * 31, []),                      # too long: rejected, not truncated
    ("@" + "a" * 40 + " @bob", ["bob"]),
    ("@", []),
    ("@ bob", []),
    ("@-bob", []),
    # characters that may not precede the @
    ("email bob@example.com", []),
    ("a@b.com and @carol", ["carol"]),
    ("x@bob", []),
    ("9@bob", []),
    ("_@bob", []),
    ("!@bob", []),
    ("#@bob", []),
    ("$@bob", []),
    ("%@bob", []),
    ("&@bob", []),
    ("*@bob", []),
    ("@@bob", []),
    ("é@bob", []),                              # unicode letter before
    ("я@bob", []),
    ("foo@bar", []),
    ("日本a@bob", []),                            # a Latin letter right before, even in CJK text
    # CJK scripts have no spaces between words: a letter of theirs may precede the @
    ("の@usernameに到着を待っている", ["username"]),  # twitter-text conformance, extract.yml
    ("…の@alice に…", ["alice"]),
    ("ありがとう@alice", ["alice"]),              # hiragana
    ("サンキュー@alice", ["alice"]),              # katakana (ー included)
    ("ｻﾝｷｭｰ@alice", ["alice"]),                  # halfwidth katakana
    ("感謝@alice", ["alice"]),                    # kanji
    ("人々@alice", ["alice"]),                    # iteration mark
    ("谢谢@alice和@bob", ["alice", "bob"]),       # Chinese
    ("謝謝𠀋@alice", ["alice"]),                  # Han beyond the BMP
    ("감사합니다@alice", ["alice"]),              # Korean hangul
    ("ありがとう＠alice、@bobさん", ["alice", "bob"]),
    ("メールはbob@example.comまで", []),          # still an email: Latin letter before
    # what may not follow the name
    ("@a@b.com", []),
    ("@bob@", []),
    ("@bob＠carol", []),
    ("@josé", []),                              # accented Latin letter: rejected, not cut
    ("@bobñ", []),
    ("@http://example.com", []),
    ("@bob://x", []),
    # fullwidth at sign
    ("＠bob", ["bob"]),
    ("hi ＠Carol and @dave", ["Carol", "dave"]),
    # code spans, fenced blocks, URLs
    ("`@bob` but @carol", ["carol"]),
    ("``code @bob `x` ``, @dave", ["dave"]),
    ("```\n@bob in a block\n```\n@carol", ["carol"]),
    ("~~~python\nprint('@bob')\n~~~", []),
    ("```\nunterminated @bob", []),
    ("``@bob`", ["bob"]),                        # no closing run of the same length: literal
    ("`` a `@bob` b", []),                       # an unclosed run does not hide a later span
    ("see https://example.com/@bob for @carol", ["carol"]),
    ("http://t.co/@bob?x=@dave", []),
    ("www.example.com/@bob", []),
    ("example.com/@bob", []),
    ("mastodon.social/@bob and @erin", ["erin"]),
    # nothing to find
    ("", []),
    ("no mentions here", []),
    ("price is 5$ @ 3pm", []),
]


def test_the_table_has_at_least_40_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[repr(t)[:40] for t, _ in CASES])
def test_extract_mentions(text, expected):
    assert extract_mentions(text) == expected


def test_none_is_no_mentions():
    assert extract_mentions(None) == []
