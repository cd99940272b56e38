"""The docs stay in step with the code: every task is documented, the settings
table is the one settings.py renders, and the README stays a small entry page
whose links lead somewhere."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TASKS_DOC = ROOT / "docs" / "tasks.md"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

README_MAX_BYTES = 12288
SETTINGS_START = "<!-- settings-table:start -->"
SETTINGS_END = "<!-- settings-table:end -->"

# [text](target) and [text](target "title"); images too. Reference definitions: [id]: target
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _without_code(markdown: str) -> str:
    """Drop fenced code blocks and inline code: a link inside them is not a link."""
    markdown = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", markdown)


def relative_links(markdown: str) -> list[str]:
    text = _without_code(markdown)
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [t for t in targets if not SCHEME.match(t) and not t.startswith(("#", "//"))]


def declared_task_names() -> set[str]:
    """Names in ``@job("...")`` across tasks/: catches a module the app forgot to include."""
    names = set()
    for path in (ROOT / "tasks").rglob("*.py"):
        names.update(re.findall(r'@job\(\s*"([^"]+)"', path.read_text(encoding="utf-8")))
    return names


def test_every_registered_task_is_in_the_task_reference(celery_app):
    registered = {name for name in celery_app.tasks if not name.startswith("celery.")}
    declared = declared_task_names()
    assert declared, "found no @job declarations under tasks/"
    assert declared <= registered, f"declared but not registered with Celery: {sorted(declared - registered)}"
    reference = TASKS_DOC.read_text(encoding="utf-8")
    missing = sorted(name for name in registered if f"`{name}`" not in reference)
    assert not missing, f"tasks missing from docs/tasks.md: {missing}"


def test_operations_guide_carries_the_generated_settings_table():
    import settings

    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    assert text.count(SETTINGS_START) == 1 and text.count(SETTINGS_END) == 1, \
        "docs/operations.md needs exactly one pair of settings-table markers"
    start = text.index(SETTINGS_START) + len(SETTINGS_START)
    end = text.index(SETTINGS_END)
    assert start < end, "settings-table markers are out of order"
    expected = settings.settings_table()
    assert text[start:end].strip("\n") == expected.strip("\n"), (
        "docs/operations.md's settings table differs from settings.settings_table(); regenerate it with\n"
        '  .venv/bin/python -c "import settings; print(settings.settings_table())"')


def test_readme_is_a_small_entry_page():
    data = README.read_bytes()
    assert len(data) < README_MAX_BYTES, f"README.md is {len(data)} bytes; the limit is {README_MAX_BYTES}"
    text = data.decode("utf-8")
    assert "make run" in text
    assert "make test" in text


def test_readme_quickstart_is_make_run_and_make_test():
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## Quickstart' section"
    block = re.search(r"^```[a-z]*\n(.*?)^```", section.group(1), flags=re.MULTILINE | re.DOTALL)
    assert block, "the Quickstart has no code block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]


def test_every_relative_link_in_the_readme_exists():
    links = relative_links(README.read_text(encoding="utf-8"))
    assert links, "README.md links to no docs"
    broken = []
    for target in links:
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (README.parent / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to missing files: {broken}"


@pytest.mark.parametrize("markdown, expected", [
    ("[a](docs/x.md) [b](https://e.com) [c](#top) `[d](no.md)`", ["docs/x.md"]),
    ("[a](docs/y.md#part \"title\")\n```\n[b](z.md)\n```\n[ref]: other.md", ["docs/y.md#part", "other.md"]),
])
def test_relative_links_parser(markdown, expected):
    assert relative_links(markdown) == expected


def test_operations_guide_carries_the_generated_retention_table():
    from tasks.upkeep.retention import retention_table

    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    start, end = "<!-- retention-table:start -->", "<!-- retention-table:end -->"
    assert text.count(start) == 1 and text.count(end) == 1, "docs/operations.md needs one pair of retention markers"
    assert text[text.index(start) + len(start):text.index(end)].strip("\n") == retention_table(), (
        "docs/operations.md's retention table differs from tasks.upkeep.retention.retention_table(); regenerate it")
