"""``POST /feed``: a platform publishes its CPC, CVR and volume of a tick that ended."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import Context, Write
from api.schemas import ANY_ROUTE, TOKEN, FeedAccepted, FeedPost
from common.errors import InvalidInput

router = APIRouter(tags=["feed"], responses={**ANY_ROUTE, **TOKEN})

# How far past the tick under way a publication may be dated: clocks differ a little, not more.
MAX_TICKS_AHEAD = 2


@router.post("/feed", dependencies=[Write], response_model=FeedAccepted)
def publish_feed(ctx: Context, post: FeedPost) -> FeedAccepted:
    """Store the figures of one tick for one or more platforms.

    Everything is checked before anything is written: figures must be finite (CPC > 0, CVR in
    [0, 1], volume >= 0), platforms registered, and the tick not more than two ticks past the one
    under way. A (platform, tick) is stored once: posting it again changes nothing.
    """
    errors = []
    known = ctx.store.platforms()
    for pid in post.platforms:
        if pid not in known:
            errors.append((f"platforms.{pid}", f"unknown platform; known: {', '.join(known) or 'none'}"))
    tick = ctx.tick_info()
    newest = max(tick.current, tick.last or 0)
    if post.tick > newest + MAX_TICKS_AHEAD:
        errors.append(
            (
                "tick",
                f"is {post.tick - newest} ticks past the tick under way ({newest}); figures of a "
                f"tick are published after it ends",
            )
        )
    if errors:
        raise InvalidInput(errors)
    written = ctx.feed.publish(post.tick, post.platforms)
    return FeedAccepted(
        tick=post.tick,
        platforms=sorted(post.platforms),
        written=written,
        already_published=len(post.platforms) - written,
    )
