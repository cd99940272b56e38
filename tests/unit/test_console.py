"""The CLI's output helper: aligned tables, and no terminal escape sequences from senders."""
from workers.console import printable, table


def test_control_characters_are_shown_escaped_not_sent_to_the_terminal():
    hostile = "evil\x1b[2J\x1b]0;pwned\x07\rtask\x9b"
    shown = printable(hostile)
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown and "\x9b" not in shown
    assert shown == "evil\\x1b[2J\\x1b]0;pwned\\x07\\x0dtask\\x9b"
    assert printable("ünïcode ok ✓") == "ünïcode ok ✓"


def test_table_aligns_columns_and_escapes_cells():
    text = table(("id", "name"), [(1, "alpha"), (22, "b\x1bc")])
    lines = text.splitlines()
    assert lines[0] == "  id  name"
    assert lines[1] == "  --  ------"
    assert lines[2] == "  1   alpha"
    assert lines[3] == "  22  b\\x1bc"
