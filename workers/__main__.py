"""``python -m workers``: the operator CLI, plus the dev commands.

This entry point is the one place that joins the two: workers/cli.py never
imports dev code, and the dev commands (``run``, ``services``) come from
workers/dev/cli.py.
"""
from workers.cli import main
from workers.dev.cli import add_commands

raise SystemExit(main(extensions=(add_commands,)))
