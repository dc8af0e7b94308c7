"""/api/studies/{uid}/review, /sign, /versions: a physician reviews an automatic result and signs it.

The review state, the versions and the audit live in the database (store/reviews.py); engine/review.py
decides what a change or a signature does (a new version, made and delivered by durable jobs). The
audit is returned here and has no route that changes it.
"""
from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from neuropetrix.api.auth import PRINCIPAL
from neuropetrix.api.database import DATABASE
from neuropetrix.api.endpoint import endpoint
from neuropetrix.api.node_config import SETTINGS
from neuropetrix.api.params import Body, bad_request
from neuropetrix.api.permissions import RESULTS_READ, RESULTS_REVIEW, RESULTS_SIGN
from neuropetrix.api.routes_studies import _uid
from neuropetrix.engine import review
from neuropetrix.engine.review_result import REANALYSIS_KEYS
from neuropetrix.reports.keyimages import key_image_name, mip_image_name

routes = web.RouteTableDef()
Status = Literal["preliminary", "final", "amended"]


class RegionDecision(BaseModel):
    """A region's decision; engine/review.py checks the label and the decision (naming both)."""

    label: int
    decision: str = Field(json_schema_extra={"enum": list(review.DECISIONS)})


class ReviewChange(Body):
    decisions: list[RegionDecision] = []
    impression: str | None = Field(None, max_length=10000)
    analysis: dict[str, Any] | None = Field(None, description=f"settings to analyse again with: "
                                                              f"{', '.join(REANALYSIS_KEYS)}")


class Region(BaseModel):
    label: int
    decision: Literal["lesion", "rejected", "physiological"]


class Review(BaseModel):
    status: Status
    version: int
    pending_version: int | None = None
    impression: str | None = None
    lesions: list[Region]
    physiological: list[Region]
    totals: dict[str, Any]
    versions: list[dict] = []
    audit: list[dict]


class Signed(BaseModel):
    version: int
    status: Status
    job: int | None = None
    state: str | None = None


class Versions(BaseModel):
    items: list[dict]


def _actor(request: web.Request) -> review.Actor:
    who = request[PRINCIPAL]
    return review.Actor(who.username, who.role)


async def _call(request: web.Request, fn, *args):
    """`fn(session, *args)` in one transaction; ReviewError becomes its HTTP status with the message."""
    try:
        return await request.app[DATABASE](fn, *args)
    except review.ReviewError as exc:
        raise _http(exc) from None


def _http(exc: review.ReviewError) -> web.HTTPException:
    kinds = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 409: web.HTTPConflict}
    return kinds.get(exc.status, web.HTTPConflict)(text=str(exc))


@routes.get("/api/studies/{study_uid}/review")
@endpoint(RESULTS_READ, response=Review)
async def get_review(request: web.Request) -> web.Response:
    """The review of a study's result: status, version, lesions and physiological regions with their decisions."""
    return web.json_response(await _call(request, review.review_json, _uid(request)))


@routes.post("/api/studies/{study_uid}/review")
@endpoint(RESULTS_REVIEW, body=ReviewChange, response=Review)
async def post_review(request: web.Request, body: ReviewChange) -> web.Response:
    """Record decisions and the impression; `analysis` settings run the analysis again."""
    uid = _uid(request)
    settings = request.app[SETTINGS]
    if body.analysis:
        _check_analysis(settings.analysis, body.analysis)
        await _call(request, review.reanalyse, uid, _actor(request), body.analysis, settings.engine.retry)
    else:
        await _call(request, review.change, uid, _actor(request), [d.model_dump() for d in body.decisions],
                    body.impression)
    return web.json_response(await _call(request, review.review_json, uid))


def _check_analysis(current, settings: dict) -> None:
    """400 naming the setting when the changed analysis settings are unknown or not valid together."""
    unknown = sorted(set(settings) - set(REANALYSIS_KEYS))
    if unknown:
        raise bad_request(f"analysis: unknown setting(s) {', '.join(unknown)} (known: {', '.join(REANALYSIS_KEYS)})")
    try:
        type(current).model_validate({**current.model_dump(), **settings})
    except ValidationError as exc:
        raise bad_request(f"analysis: {exc.errors()[0]['msg']}") from None


@routes.post("/api/studies/{study_uid}/sign")
@endpoint(RESULTS_SIGN, response=Signed, status=202)
async def post_sign(request: web.Request) -> web.Response:
    """Sign the review: the next version (final, or amended after a signature) is made and delivered."""
    retry = request.app[SETTINGS].engine.retry
    answer = await _call(request, review.sign, _uid(request), _actor(request), retry)
    return web.json_response(answer, status=202)


@routes.get("/api/studies/{study_uid}/versions")
@endpoint(RESULTS_READ, response=Versions)
async def get_versions(request: web.Request) -> web.Response:
    """Every version of a study's results: status, signer, object UIDs and delivery states."""
    uid = _uid(request)

    def query(s):
        review.review_json(s, uid)            # 404 when the study has no review
        return review.versions_json(s, uid)
    return web.json_response({"items": await _call(request, query)})


@routes.get(r"/api/studies/{study_uid}/review/{kind:key|mip}-{label:\d+}.png")
@endpoint(RESULTS_READ)
async def region_image(request: web.Request) -> web.StreamResponse:
    """A region's key image (axial slice through its hottest voxel) or its MIP position (the MIP with it alone)."""
    uid = _uid(request)
    state = await _call(request, review.review_json, uid)
    folder = review.VersionStore(request.app[SETTINGS].node.data_dir / "versions").folder(
        uid, state["candidates_version"])
    name = key_image_name if request.match_info["kind"] == "key" else mip_image_name
    path = folder / name(int(request.match_info["label"]))
    if not path.is_file():
        raise web.HTTPNotFound(text="no such picture of this region")
    return web.FileResponse(path, headers={"Content-Type": "image/png", "Cache-Control": "no-store"})
