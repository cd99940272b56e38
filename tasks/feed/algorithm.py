"""The feed algorithm in one place: every tunable is a named constant here.

A post's score in one viewer's feed is

    score = engagement × decay × relationship

* engagement   = ENGAGEMENT_BASE + ln(1 + W_HEARTS·hearts + W_REACTIONS·reactions + W_SHARES·shares)
  from the cached counters on ``posts`` (no joins to likes/shares). The log
  damps runaway posts: 1,000 hearts is worth ~3× 10 hearts, not 100×. The
  base of 1 keeps a fresh post without engagement above zero, so followed
  posts nobody has reacted to yet still rank by recency and relationship.
* decay        = 2 ** (-age / HALF_LIFE), exponential with HALF_LIFE = 12 h.
  Exponential rather than Hacker News' power law (age + 2) ** 1.8 because the
  ratio of two posts' decays does not change as time passes: a rescore every
  10 minutes never reshuffles posts whose counts did not change, and the
  trending order can be stored as one time-invariant number (see
  ``trending_score_sql``). 12 h suits this app's daily rhythm (people post
  and read about once a day): yesterday's post keeps 1/4 of its weight, so a
  well-liked post survives one day, while a week-old post (2**-14) is
  negligible, which matches the 7-day candidate window.
* relationship = MUTUAL_MULTIPLIER for authors who follow the viewer back,
  FOLLOW_MULTIPLIER for authors the viewer follows, 1 otherwise (trending).

Eligibility, for every candidate: not the viewer's own post, visible to the
viewer (db/visibility.py: public, not soft-deleted, not held by moderation;
a ``friends`` post only for the author's accepted friends), created within
CANDIDATE_WINDOW before now and not after it, and no ``blocked`` row between
viewer and author, in follows or friendships, in either direction.

An accepted friend counts as a mutual follow (MUTUAL_MULTIPLIER, reason
``mutual``), whether or not either follows the other.

Candidates: posts of actively followed authors and of friends in the window; the global
trending top TRENDING_TOP_K (``popular_posts``); the RECENT_POOL newest public
posts.

Composition of one feed of FEED_SIZE rows: every RECENT_EVERY-th slot (5, 10,
…) is reserved for the most recent eligible candidates not chosen by score
(about 20 %); the other slots take the best scored followed/mutual/trending
candidates. Diversity: at most AUTHOR_CAP posts of one author in the first
AUTHOR_CAP_WINDOW slots (a 4th post of an author is demoted below every
other author's top 3; a recent slot goes to at most one post per author and
never to an author who already has AUTHOR_CAP scored posts in that window).
If there are too few scored candidates, recent posts fill the rest.

``feed_items.score`` stores the display order, not the raw score:
``SLOT_BASE - slot``, so the web tier reads ``ORDER BY score DESC``.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import settings

# --- Engagement weights: a share puts the post in front of a new audience, so
# it weighs most; a reaction takes more effort than a heart.
W_HEARTS = 1.0
W_REACTIONS = 1.5
W_SHARES = 3.0
ENGAGEMENT_BASE = 1.0

# --- Recency.
HALF_LIFE = timedelta(hours=12)
# Origin of the time-invariant trending score; any fixed instant before the
# first post works (it only shifts every score by the same constant).
TRENDING_EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)

# --- Relationship multipliers.
FOLLOW_MULTIPLIER = 1.5
MUTUAL_MULTIPLIER = 2.0
TRENDING_MULTIPLIER = 1.0

# --- Candidates.
CANDIDATE_WINDOW = timedelta(days=7)
TRENDING_WINDOW = timedelta(days=7)     # posts outside it get engagement_score 0
TRENDING_TOP_K = 100                    # trending candidates offered to every viewer
RECENT_POOL = 60                        # newest public posts offered for recent slots

# --- Composition.
FEED_SIZE = settings.current().feed_size
FEED_TTL = timedelta(hours=settings.current().feed_ttl_hours)
RECENT_EVERY = 5                         # every 5th slot is a recent slot: 20 %
RECENT_SLOTS = FEED_SIZE // RECENT_EVERY
SCORED_SLOTS = FEED_SIZE - RECENT_SLOTS
AUTHOR_CAP = 3
AUTHOR_CAP_WINDOW = 50
# Scored positions 1..N land in slots 1..AUTHOR_CAP_WINDOW once recent slots are interleaved.
AUTHOR_CAP_SCORED = AUTHOR_CAP_WINDOW - AUTHOR_CAP_WINDOW // RECENT_EVERY
SLOT_BASE = RECENT_EVERY * FEED_SIZE + 1

# --- Jobs.
SCORE_CHUNK_SIZE = settings.current().feed_score_chunk_size   # users per feed.score_users
ACTIVE_WINDOW = timedelta(days=7)       # a user with any activity in it is "active"
EXPIRE_BATCH = 5000                     # rows per DELETE of the expiry sweep
EXPIRE_MAX_BATCHES = 200                # one sweep deletes at most 1 M rows, then yields

LN2 = math.log(2.0)


def engagement_sql(p: str = "p") -> str:
    """SQL for the engagement factor of posts aliased ``p`` (constants inlined)."""
    return (f"({ENGAGEMENT_BASE!r}::float8 + ln(1 + {W_HEARTS!r}::float8 * {p}.hearts_count"
            f" + {W_REACTIONS!r}::float8 * {p}.reactions_count + {W_SHARES!r}::float8 * {p}.shares_count))")


def decay_sql(created_at: str, now_param: str = ":now") -> str:
    """SQL for 2 ** (-age / HALF_LIFE); the age is taken against the bound Python "now"."""
    half_life_s = HALF_LIFE.total_seconds()
    return (f"exp(-{LN2!r}::float8 * extract(epoch FROM ({now_param} - {created_at}))::float8"
            f" / {half_life_s!r}::float8)")


def trending_score_sql(p: str = "p") -> str:
    """SQL for posts.engagement_score: ln(engagement × decay) + ln2·(now − EPOCH)/HALF_LIFE.

    That equals ln(engagement) + ln2·(created_at − EPOCH)/HALF_LIFE, which does not depend
    on now, so ordering by it is ordering by the decayed score at any instant
    (Reddit's "hot" trick). It only changes when the post's counters change, so
    update_trending rewrites only posts with new engagement. It is > 0 for every
    post after TRENDING_EPOCH, which leaves 0 free to mean "outside the window".
    """
    half_life_s = HALF_LIFE.total_seconds()
    epoch_s = TRENDING_EPOCH.timestamp()
    return (f"(ln({engagement_sql(p)}) + {LN2!r}::float8"
            f" * (extract(epoch FROM {p}.created_at)::float8 - {epoch_s!r}::float8) / {half_life_s!r}::float8)")


def decayed_score(hearts: int, reactions: int, shares: int, age: timedelta, multiplier: float = 1.0) -> float:
    """The same score in Python, for tests and docs."""
    engagement = ENGAGEMENT_BASE + math.log(1 + W_HEARTS * hearts + W_REACTIONS * reactions + W_SHARES * shares)
    return engagement * 2 ** (-age / HALF_LIFE) * multiplier
