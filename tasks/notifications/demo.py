"""Demo: record the demo likes and follows as the web tier would after each commit."""
from sqlalchemy import select

from db.models import Follow, Like, Notification
from db.session import session_scope
from tasks.notifications.tasks import record
from workers.dev.demo import DemoGraph

FAMILY = "notifications"


def enqueue(graph: DemoGraph) -> list:
    with session_scope() as session:
        like_ids = session.scalars(select(Like.id).where(Like.post_id == graph.post_ids[0])).all()
        follow_ids = session.scalars(select(Follow.id).where(
            Follow.followed_id.in_([graph.user_ids["alice"], graph.user_ids["carol"]]))).all()
    # The like notifications are sent twice, like a redelivery: the second copy is a no-op.
    return ([record.delay("like", like_id) for like_id in like_ids for _ in range(2)]
            + [record.delay("follow", follow_id) for follow_id in follow_ids])


def summarize(graph: DemoGraph) -> str:
    alice = graph.user_ids["alice"]
    key = f"post_interaction:post:{graph.post_ids[0]}"
    with session_scope() as session:
        batch = session.scalars(select(Notification).where(
            Notification.user_id == alice, Notification.batch_key == key,
            Notification.parent_id.is_(None))).first()
        follows = session.scalars(select(Notification.batch_count).where(
            Notification.user_id == alice, Notification.type == "follow",
            Notification.parent_id.is_(None))).all()
    likes = f"{batch.message!r} ({batch.batch_count} in one batch)" if batch else "no like notification"
    return f"alice: {likes}; follow notifications: {sum(follows)} in {len(follows)} row(s)"
