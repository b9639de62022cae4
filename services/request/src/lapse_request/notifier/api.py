"""HTTP of the notifier: health (from the service host) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lapse_request.notifier.metrics import NotifierMetrics
from lapse_shared.http.identity import CurrentIdentity
from lapse_shared.http.problems import PROBLEM_RESPONSES, ProblemError

router = APIRouter(tags=["operations"], responses=PROBLEM_RESPONSES)


@router.get(
    "/metrics",
    summary="Prometheus metrics (notices recorded, sent, failed; delivery latency).",
    response_class=Response,
    responses={403: PROBLEM_RESPONSES[401] | {"description": "Not a monitor."}},
)
async def metrics(identity: CurrentIdentity, request: Request) -> Response:
    groups: set[str] = request.app.state.metrics_groups
    if not identity.in_any(groups):
        raise ProblemError(
            403, "forbidden", "Forbidden", f"Reading metrics needs membership in one of: {sorted(groups)}."
        )
    registry: NotifierMetrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
