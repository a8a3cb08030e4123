"""``/campaigns``: create, read, list, change, pause, resume and delete campaigns."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response, status

from api.auth import Context, Read, Write
from api.errors import error_response
from api.schemas import ANY_ROUTE, TOKEN, CampaignList, CampaignRequest, CampaignView, errors, example
from api.views import campaign_views
from common import keys
from common.errors import InvalidInput
from common.fleet.clock import Clock
from common.flights import blame_times, place, place_fields
from common.ledger import AdjustRefused
from common.models import Campaign, CampaignStatus

router = APIRouter(prefix="/campaigns", tags=["campaigns"], responses={**ANY_ROUTE, **TOKEN})

CampaignId = Annotated[str, Path(description="The campaign's id.", max_length=64, pattern=keys.ID_JSON_PATTERN)]

_EXAMPLE = {
    "id": "spring-sale",
    "budget": 250.0,
    "value_per_conversion": 40.0,
    "platforms": {"search": 0.02, "social": 0.05},
    "start_tick": 0,
    "end_tick": 720,
    "max_bid": 6.0,
    "target_cpa": 30.0,
}


_TIMED_EXAMPLE = {
    "id": "winter-sale",
    "budget": 500.0,
    "value_per_conversion": 40.0,
    "platforms": {"search": 0.02},
    "start": "2026-12-02T10:00:00+01:00",
    "end": "2026-12-09T10:00:00+01:00",
}


def _clock(ctx: Context) -> Clock:
    """The fleet's clock, to place flights given in wall time (read, or started, only for those)."""
    return Clock(ctx.r, ctx.settings.tick_seconds)


def _view(ctx: Context, campaign: Campaign) -> CampaignView:
    return campaign_views(ctx.r, [campaign], ctx.tick_info())[0]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Write],
    response_model=CampaignView,
    responses=errors(409),
)
def create_campaign(
    ctx: Context,
    request: Annotated[
        CampaignRequest,
        Body(
            openapi_examples={
                "in ticks": {"value": _EXAMPLE},
                "in wall time": {"value": _TIMED_EXAMPLE},
            }
        ),
    ],
    response: Response,
) -> Any:
    """Create a campaign and open its budget in the ledger. Invalid input writes nothing.

    The flight is given in the fleet's ticks or as ISO-8601 date-times with an offset (`start`, `end`):
    it then covers the ticks wholly inside `[start, end)`.
    """
    given = request.model_dump(exclude_unset=True)
    spec = place(given, _clock(ctx))
    try:
        campaign = ctx.store.create(spec)
    except InvalidInput as exc:
        raise blame_times(exc, given) from None
    response.headers["Location"] = f"/campaigns/{campaign.id}"
    return _view(ctx, campaign)


@router.get("", dependencies=[Read], response_model=CampaignList)
def list_campaigns(
    ctx: Context,
    status_filter: Annotated[CampaignStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> CampaignList:
    """Campaigns in id order, with their balances and outcomes."""
    ids = ctx.store.ids(status_filter)
    if status_filter is not None and status_filter is not CampaignStatus.ACTIVE:
        found = [c for c in ctx.store.get_many(ids).values() if c.status is status_filter]
        total, page = len(found), found[offset : offset + limit]
    else:
        total = len(ids)
        page = list(ctx.store.get_many(ids[offset : offset + limit]).values())
    return CampaignList(total=total, campaigns=campaign_views(ctx.r, page, ctx.tick_info()))


@router.get("/{campaign_id}", dependencies=[Read], response_model=CampaignView, responses=errors(404))
def get_campaign(ctx: Context, campaign_id: CampaignId) -> CampaignView:
    return _view(ctx, ctx.store.get(campaign_id))


@router.patch(
    "/{campaign_id}",
    dependencies=[Write],
    response_model=CampaignView,
    responses=errors(404, 409),
)
def update_campaign(
    ctx: Context,
    campaign_id: CampaignId,
    changes: Annotated[dict[str, Any], Body(openapi_examples=example({"budget": 300.0, "max_bid": 4.5}))],
) -> Any:
    """Change fields of a campaign (not its id). A budget change goes through the ledger, which refuses
    to lower it below what is already spent and reserved. `start` and `end` (date-times with an offset)
    change the flight as `start_tick` and `end_tick` do."""
    try:
        return _view(ctx, ctx.store.update(campaign_id, place_fields(changes, _clock(ctx))))
    except InvalidInput as exc:
        raise blame_times(exc, changes) from None
    except AdjustRefused as exc:
        reason = exc.reason or str(exc)
        return error_response(422, f"budget: {reason}", [("budget", reason)])


@router.delete("/{campaign_id}", dependencies=[Write], status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
def delete_campaign(ctx: Context, campaign_id: CampaignId) -> Response:
    """Remove a campaign with its budget, reservations, ledger and state."""
    ctx.store.delete(campaign_id, archive_maxlen=ctx.settings.archive_maxlen)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{campaign_id}/pause", dependencies=[Write], response_model=CampaignView, responses=errors(404))
def pause_campaign(ctx: Context, campaign_id: CampaignId) -> CampaignView:
    """Stop bidding from the next tick on; pausing a paused campaign changes nothing."""
    return _view(ctx, ctx.store.pause(campaign_id))


@router.post("/{campaign_id}/resume", dependencies=[Write], response_model=CampaignView, responses=errors(404))
def resume_campaign(ctx: Context, campaign_id: CampaignId) -> CampaignView:
    """Bid again from the next tick on; a finished campaign cannot be resumed."""
    return _view(ctx, ctx.store.resume(campaign_id))
