"""``/platforms``: the registry of ad platforms the fleet forecasts, bids on and accepts figures for."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response, status
from pydantic import BaseModel, Field

from api.auth import Context, Read, Write
from api.schemas import example
from common.errors import NotFound
from common.models import PlatformInfo

router = APIRouter(prefix="/platforms", tags=["platforms"])

PlatformId = Annotated[str, Path(description="The platform's id.", max_length=64)]


class PlatformList(BaseModel):
    platforms: list[PlatformInfo] = Field(description="In id order.")


@router.post(
    "",
    dependencies=[Write],
    response_model=PlatformInfo,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The platform was registered before: replaced."}, 422: {}},
)
def register_platform(
    ctx: Context,
    platform: Annotated[PlatformInfo, Body(openapi_examples=example({"id": "search", "price_sigma": 0.4}))],
    response: Response,
) -> PlatformInfo:
    """Register a platform (201), or replace its `price_sigma` (200). Without `price_sigma` it is 0.5.

    Campaigns may list it, and `POST /feed` accepts its figures, from then on.
    """
    if not ctx.store.add_platform(platform):
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/platforms/{platform.id}"
    return platform


@router.get("", dependencies=[Read], response_model=PlatformList)
def list_platforms(ctx: Context) -> PlatformList:
    return PlatformList(platforms=list(ctx.store.platforms().values()))


@router.get("/{platform_id}", dependencies=[Read], response_model=PlatformInfo, responses={404: {}})
def get_platform(ctx: Context, platform_id: PlatformId) -> PlatformInfo:
    found = ctx.store.platforms().get(platform_id)
    if found is None:
        raise NotFound(f"platform {platform_id!r} is not registered")
    return found


@router.delete(
    "/{platform_id}",
    dependencies=[Write],
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {}, 409: {"description": "An active or paused campaign lists the platform."}},
)
def remove_platform(ctx: Context, platform_id: PlatformId) -> Response:
    """Forget a platform. Refused (409, naming them) while active or paused campaigns list it."""
    ctx.store.remove_platform(platform_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
