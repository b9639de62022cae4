"""`GET /v1/me`: who the bearer token belongs to, so clients (`lapse login`) can verify a token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from lapse_shared.http.identity import CurrentIdentity
from lapse_shared.http.problems import PROBLEM_RESPONSES


class Me(BaseModel):
    subject: str = Field(description="Who the token belongs to.")
    groups: list[str] = Field(description="Their groups, sorted.")
    reader: bool = Field(description="Whether they may read everyone's requests (a reader group).")


router = APIRouter(prefix="/v1", tags=["identity"], responses=PROBLEM_RESPONSES)


@router.get("/me", response_model=Me, summary="Who the bearer token belongs to.")
async def whoami(identity: CurrentIdentity, request: Request) -> Me:
    return Me(
        subject=identity.subject,
        groups=sorted(identity.groups),
        reader=identity.in_any(request.app.state.reader_groups),
    )
