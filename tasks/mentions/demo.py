"""Demo: extract the mentions of the three demo posts, as the web tier does after a post is saved."""
from sqlalchemy import func, select

from db.models import Notification
from db.session import session_scope
from tasks.mentions.tasks import extract
from workers.dev.demo import DemoGraph

FAMILY = "mentions"


def enqueue(graph: DemoGraph) -> list:
    return [extract.delay(post_id=post_id) for post_id in graph.post_ids]


def summarize(graph: DemoGraph) -> str:
    keys = [f"mention:post:{post_id}" for post_id in graph.post_ids]
    with session_scope() as session:
        rows = session.execute(select(Notification.user_id, func.count()).where(
            Notification.batch_key.in_(keys), Notification.is_batch.is_(False)).group_by(Notification.user_id)).all()
    names = {uid: name for name, uid in graph.user_ids.items()}
    notified = ", ".join(sorted(f"@{names.get(uid, uid)}" for uid, _count in rows))
    return f"{sum(c for _u, c in rows)} mention notifications ({notified}); @nobody_here reported invalid"
