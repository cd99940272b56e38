"""A flusher in a process of its own that SIGKILLs itself at one step: the crash the tests recover from.

    python -m tests.analytics.flusher_child STEP
"""
import os
import signal
import sys

from db.session import session_scope
from tasks.analytics import flush


def main(kill_at: str) -> None:
    def checkpoint(step: str) -> None:
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    flush.flush(session_scope, flush.analytics_redis(), checkpoint=checkpoint)


if __name__ == "__main__":
    main(sys.argv[1])
