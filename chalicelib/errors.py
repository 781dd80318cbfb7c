"""Exceptions raised by the plan service, each mapped to one HTTP status.

Routes never build error responses by hand: they raise one of these and `problem_response`
in `app.py` turns it into an RFC 9457 problem+json body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Violation:
    """One problem in a request document, located by a JSON Pointer (RFC 6901)."""

    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class PlanApiError(Exception):
    """Base class: `status` and `title` become the problem+json members of the same name."""

    status = 500
    title = "Internal Server Error"
    type_suffix = "internal-error"

    def __init__(self, detail: str, *, errors: list[Violation] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://plan-api.dev/problems/{self.type_suffix}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [violation.to_json() for violation in self.errors]
        return body


class MalformedRequest(PlanApiError):
    status = 400
    title = "Bad Request"
    type_suffix = "malformed-request"


class InvalidDocument(PlanApiError):
    """The body is JSON but breaks the schema, the identifier rules or the size limits."""

    status = 400
    title = "Invalid Document"
    type_suffix = "invalid-document"


class PlanNotFound(PlanApiError):
    status = 404
    title = "Not Found"
    type_suffix = "not-found"


class PlanAlreadyExists(PlanApiError):
    status = 409
    title = "Conflict"
    type_suffix = "plan-exists"


class OwnershipConflict(PlanApiError):
    """A document names a stored object that another plan owns."""

    status = 409
    title = "Conflict"
    type_suffix = "object-owned-by-another-plan"


class PreconditionFailed(PlanApiError):
    status = 412
    title = "Precondition Failed"
    type_suffix = "precondition-failed"


class PayloadTooLarge(PlanApiError):
    status = 413
    title = "Payload Too Large"
    type_suffix = "payload-too-large"


class UnsupportedMediaType(PlanApiError):
    status = 415
    title = "Unsupported Media Type"
    type_suffix = "unsupported-media-type"


class BackendUnavailable(PlanApiError):
    status = 503
    title = "Service Unavailable"
    type_suffix = "backend-unavailable"


class WriteContention(PlanApiError):
    """Optimistic retries ran out because other writers kept changing the same plan."""

    status = 503
    title = "Service Unavailable"
    type_suffix = "write-contention"
