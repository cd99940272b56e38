"""The mentions family reaches notifications only through the family's public package."""
import ast
from pathlib import Path

import tasks.notifications

MENTIONS = Path(__file__).resolve().parents[2] / "tasks" / "mentions"


def _imports(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_mentions_imports_nothing_but_the_notifications_package_api():
    notification_imports = {(file.name, name) for file in MENTIONS.glob("*.py") for name in _imports(file)
                            if name.startswith("tasks.notifications.")}
    assert notification_imports, "the scan found no import of notifications at all"
    public = {f"tasks.notifications.{name}" for name in tasks.notifications.__all__}
    assert {(file, name) for file, name in notification_imports if name not in public} == set()
