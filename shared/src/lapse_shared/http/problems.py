"""RFC 9457 problem details for every error an HTTP caller can get."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("lapse.http")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://lapse.dev/problems/"


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `body.duration`.")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="URI naming the kind of problem.")
    title: str
    status: int
    detail: str = Field(description="What was wrong, and what to do about it.")
    instance: str | None = None
    errors: list[FieldError] | None = Field(None, description="Per-field validation errors.")


class ProblemError(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.errors, self.headers = errors, headers


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": text}
    for code, text in {
        401: "Missing or invalid bearer token.",
        404: "No such resource, or not visible to the caller.",
        422: "The request body or parameters are invalid.",
    }.items()
}
"""OpenAPI `responses=` entry shared by every authenticated route."""


def problem_responses(**by_status: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for further problem statuses: `problem_responses(s403="...")`."""
    return {
        int(key.removeprefix("s")): {
            "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {}},
            "description": text,
        }
        for key, text in by_status.items()
    }


def _respond(request: Request, problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    problem.instance = request.url.path
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error, including framework ones, a problem document; never a traceback."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        body = Problem(
            type=PROBLEM_BASE + exc.kind,
            title=exc.title,
            status=exc.status,
            detail=exc.detail,
            errors=exc.errors,
        )
        return _respond(request, body, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            FieldError(
                field=".".join(str(p) for p in e.get("loc", ())),
                message=str(e.get("msg", "invalid")).removeprefix("Value error, "),
            )
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "invalid request"
        body = Problem(
            type=PROBLEM_BASE + "invalid-request",
            title="Invalid request",
            status=422,
            detail=detail,
            errors=errors,
        )
        return _respond(request, body)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        body = Problem(
            type="about:blank",
            title=str(exc.detail) if exc.status_code < 500 else "Server error",
            status=exc.status_code,
            detail=str(exc.detail),
        )
        return _respond(request, body, getattr(exc, "headers", None))

    async def on_untranslatable(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL text cannot hold U+0000 (or bytes invalid in UTF-8): the input is at fault.
        body = Problem(
            type=PROBLEM_BASE + "invalid-request",
            title="Invalid request",
            status=422,
            detail="Text values must not contain NUL (U+0000) characters.",
        )
        return _respond(request, body)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        body = Problem(
            type=PROBLEM_BASE + "internal",
            title="Internal error",
            status=500,
            detail="The server failed to handle this request; it has been logged.",
        )
        return _respond(request, body)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(asyncpg.CharacterNotInRepertoireError, on_untranslatable)
    app.add_exception_handler(asyncpg.UntranslatableCharacterError, on_untranslatable)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
