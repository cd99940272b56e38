"""The Grateful schema's constraints, checked against real PostgreSQL."""
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DataError, IntegrityError

from db.models import Comment, Follow, Like, Notification, Post, User


def make_user(session, name: str) -> User:
    user = User(email=f"{name}@example.com", username=name, hashed_password="x")
    session.add(user)
    session.flush()
    return user


def make_post(session, author: User, **kwargs) -> Post:
    post = Post(author_id=author.id, content="thanks", **kwargs)
    session.add(post)
    session.flush()
    return post


def test_user_ids_are_integers_and_post_ids_uuids(db_session):
    user = make_user(db_session, "ids")
    post = make_post(db_session, user)
    assert isinstance(user.id, int)
    assert len(post.id) == 36 and post.id.count("-") == 4
    assert post.post_type.value == "daily" and post.hearts_count == 0


def test_duplicate_like_is_refused(db_session):
    user = make_user(db_session, "liker")
    post = make_post(db_session, user)
    db_session.add(Like(user_id=user.id, post_id=post.id))
    db_session.flush()
    db_session.add(Like(user_id=user.id, post_id=post.id))
    with pytest.raises(IntegrityError, match="uq_likes_user_id_post_id"):
        db_session.flush()


def test_self_follow_is_refused(db_session):
    user = make_user(db_session, "narcissus")
    db_session.add(Follow(follower_id=user.id, followed_id=user.id))
    with pytest.raises(IntegrityError, match="ck_follows_no_self_follow"):
        db_session.flush()


def test_duplicate_follow_is_refused(db_session):
    a, b = make_user(db_session, "fa"), make_user(db_session, "fb")
    db_session.add(Follow(follower_id=a.id, followed_id=b.id))
    db_session.flush()
    db_session.add(Follow(follower_id=a.id, followed_id=b.id, status="pending"))
    with pytest.raises(IntegrityError, match="uq_follows_follower_id_followed_id"):
        db_session.flush()


def test_bad_follow_status_is_refused(db_session):
    a, b = make_user(db_session, "sa"), make_user(db_session, "sb")
    db_session.add(Follow(follower_id=a.id, followed_id=b.id, status="friends"))
    with pytest.raises(IntegrityError, match="ck_follows_status_valid"):
        db_session.flush()


def test_bad_post_type_enum_is_refused(db_session):
    user = make_user(db_session, "enum")
    with pytest.raises(DataError, match="post_type"):
        db_session.execute(text(
            "INSERT INTO posts (author_id, content, post_type) VALUES (:a, 'x', 'weekly')"), {"a": user.id})


def test_bad_notification_priority_and_channel_are_refused(db_session):
    user = make_user(db_session, "notified")
    for column, value, constraint in (("priority", "urgent", "priority_valid"),
                                      ("channel", "pigeon", "channel_valid")):
        with pytest.raises(IntegrityError, match=constraint):
            with db_session.begin_nested():
                db_session.add(Notification(user_id=user.id, type="like", title="t", message="m",
                                            **{column: value}))
                db_session.flush()


def test_batch_structure_checks(db_session):
    user = make_user(db_session, "batcher")
    parent = Notification(user_id=user.id, type="like", title="t", message="m", is_batch=True,
                          batch_count=2, batch_key="like:post:x")
    db_session.add(parent)
    db_session.flush()
    with pytest.raises(IntegrityError, match="chk_child_structure|chk_batch_structure"):
        with db_session.begin_nested():
            db_session.add(Notification(user_id=user.id, type="like", title="t", message="m",
                                        is_batch=True, parent_id=parent.id))
            db_session.flush()
    with pytest.raises(IntegrityError, match="read_matches_read_at"):
        with db_session.begin_nested():
            db_session.add(Notification(user_id=user.id, type="like", title="t", message="m", read=True))
            db_session.flush()


def test_deleting_a_user_cascades(db_session):
    author, fan = make_user(db_session, "author"), make_user(db_session, "fan")
    post = make_post(db_session, author)
    top = Comment(author_id=fan.id, post_id=post.id, content="yay")
    db_session.add_all([Like(user_id=fan.id, post_id=post.id), top,
                        Follow(follower_id=fan.id, followed_id=author.id),
                        Notification(user_id=author.id, type="like", title="t", message="m")])
    db_session.flush()
    db_session.add(Comment(author_id=author.id, post_id=post.id, parent_id=top.id, content="reply"))
    db_session.flush()
    db_session.execute(text("DELETE FROM users WHERE id = :id"), {"id": author.id})
    for model in (Post, Like, Comment, Follow, Notification):
        assert db_session.scalar(select(func.count()).select_from(model)) == 0, model.__name__


def test_documented_indexes_exist(db_session):
    names = set(db_session.scalars(text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")))
    expected = {
        "idx_posts_created_at_desc", "idx_posts_author_created_desc", "idx_posts_engagement",
        "idx_follows_follower_id", "idx_follows_followed_id", "idx_follows_follower_followed",
        "idx_follows_status", "idx_follows_created_at", "idx_users_display_name", "idx_users_city",
        "idx_users_profile_photo_filename", "idx_notifications_user_parent_read",
        "idx_notifications_batch_lookup", "idx_notifications_timeline", "idx_notifications_batch_children",
        "idx_notifications_batch_key_recent", "idx_notifications_batch_key_user",
    }
    assert expected <= names, expected - names
