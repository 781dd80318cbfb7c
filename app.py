"""Chalice routes of the Healthcare Plan Management API.

Each route parses the request, calls the plan service, and maps the result or the error to an
HTTP response. Domain rules live in `chalicelib/`.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from typing import Any, Callable

import opensearchpy
import redis
from chalice import AuthResponse, Chalice, Response
from chalice.app import Request

from chalicelib.bootstrap import components, token_verifier
from chalicelib.conditional import if_none_match_hits
from chalicelib.errors import (BackendUnavailable, MalformedRequest, PayloadTooLarge,
                               PlanApiError, UnsupportedMediaType)
from chalicelib.logs import configure_logging
from chalicelib.search.documents import SearchIndexError
from chalicelib.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PlanState

MAX_BODY_BYTES = 1024 * 1024
# Failures to reach a store or index become 503, so clients know to retry. OSError covers
# refused connections, timeouts and an embedded database file that cannot be opened.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, sqlite3.OperationalError,
    opensearchpy.exceptions.ConnectionError, SearchIndexError, OSError)
JSON_CONTENT_TYPES = ("application/json", "application/merge-patch+json")
# Chalice returns its own 415 for a Content-Type outside this list, so the list is broad and
# the routes check the type themselves to return problem+json.
ACCEPTED_CONTENT_TYPES = [
    "application/json", "application/merge-patch+json", "application/problem+json",
    "text/plain", "text/html", "text/xml", "application/xml", "application/x-www-form-urlencoded",
    "multipart/form-data", "application/octet-stream", "application/x-yaml", "text/csv",
]
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

configure_logging()
logger = logging.getLogger("plan_api.http")


class ThreadLocalChalice(Chalice):
    """Chalice whose `current_request` belongs to the calling thread.

    Chalice keeps `current_request` in one attribute of the app. `chalice local` 1.34 swaps in
    a thread-local class of its own, but other hosts that serve several threads with one app
    object (a WSGI adapter, threads driving `chalice.test.Client`) do not, and concurrent
    requests could then read each other's request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._thread_state = threading.local()
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def current_request(self) -> Request | None:
        return getattr(self._thread_state, "request", None)

    @current_request.setter
    def current_request(self, value: Request | None) -> None:
        self._thread_state.request = value

    @property  # type: ignore[override]
    def lambda_context(self) -> Any:
        return getattr(self._thread_state, "lambda_context", None)

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        self._thread_state.lambda_context = value


app = ThreadLocalChalice(app_name="plan-api")
app.log.setLevel(logging.INFO)

try:
    from chalice.local import NotAuthorizedError as _LocalNotAuthorized

    class TokenRejected(_LocalNotAuthorized):
        """Makes `chalice local` and `chalice.test.Client` return 401."""

        def __init__(self) -> None:
            super().__init__({"x-amzn-ErrorType": "UnauthorizedException"},
                             b'{"message":"Unauthorized"}')
except ImportError:  # On Lambda only the Chalice runtime is packaged, without chalice.local.
    class TokenRejected(Exception):  # type: ignore[no-redef]
        """API Gateway returns 401 when an authorizer fails with the message 'Unauthorized'."""

        def __init__(self) -> None:
            super().__init__("Unauthorized")


@app.authorizer()
def jwt_auth(auth_request: Any) -> AuthResponse:
    from chalicelib.auth import InvalidToken

    try:
        claims = token_verifier().verify(auth_request.token or "")
    except InvalidToken as error:
        logger.info("bearer token rejected", extra={"reason": str(error)})
        raise TokenRejected() from None
    return AuthResponse(routes=["*"], principal_id=str(claims.get("sub", "unknown")))


@app.middleware("http")
def observe_request(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Log one line per request, echo X-Request-ID, and turn Chalice's own errors into problem+json."""
    started = time.perf_counter()
    supplied = event.headers.get("x-request-id", "")
    request_id = supplied if REQUEST_ID_PATTERN.fullmatch(supplied) else uuid.uuid4().hex
    response = get_response(event)
    if response.status_code >= 400 and not _is_problem(response):
        response = _problem_from_chalice_error(response)
    response.headers["X-Request-ID"] = request_id
    logger.info("request", extra={
        "request_id": request_id,
        "method": event.method,
        "path": event.path,
        "plan_id": (event.uri_params or {}).get("plan_id"),
        "status": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    })
    return response


def _is_problem(response: Response) -> bool:
    return str(response.headers.get("Content-Type", "")).startswith("application/problem+json")


def _problem_from_chalice_error(response: Response) -> Response:
    body = response.body if isinstance(response.body, dict) else {}
    error = PlanApiError(str(body.get("Message", "The request failed.")))
    error.status = response.status_code
    error.title = str(body.get("Code", "Error"))
    error.type_suffix = re.sub(r"(?<!^)(?=[A-Z])", "-", error.title).lower()
    problem = problem_response(error)
    for name, value in response.headers.items():
        problem.headers.setdefault(name, value)
    return problem


def problem_response(error: PlanApiError) -> Response:
    headers = {"Content-Type": "application/problem+json", **error.headers}
    return Response(body=json.dumps(error.to_problem()), status_code=error.status, headers=headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body=json.dumps(body), status_code=status,
                    headers={"Content-Type": "application/json", **(headers or {})})


def handle_errors(route: Callable[..., Response]) -> Callable[..., Response]:
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return route(*args, **kwargs)
        except PlanApiError as error:
            return problem_response(error)
        except BACKEND_ERRORS as error:
            logger.error("backend unavailable", extra={"error": f"{type(error).__name__}: {error}"})
            return problem_response(BackendUnavailable(
                "A backend the API depends on is unavailable; retry later."))
        except Exception:
            logger.exception("unhandled error")
            return problem_response(PlanApiError("The server failed to handle the request."))

    wrapper.__name__ = route.__name__
    wrapper.__doc__ = route.__doc__
    return wrapper


def _request() -> Request:
    request = app.current_request
    assert request is not None, "a route runs only inside a request"
    return request


def read_json_body(request: Request) -> Any:
    """Parse the JSON body, enforcing the media type, the size limit and strict JSON."""
    raw = request.raw_body or b""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES} bytes.")
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media_type not in JSON_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{media_type}' is not supported; send application/json.",
            headers={"Accept-Patch": ", ".join(JSON_CONTENT_TYPES)})
    if not raw.strip():
        raise MalformedRequest("The request body is empty; send a JSON document.")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise MalformedRequest(f"The request body is not valid JSON: {error}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def plan_response(state: PlanState, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(state.document, status, {"ETag": state.etag, **(headers or {})})


def _check_store() -> None:
    components().store.check_health()


def _check_search() -> None:
    components().search_service().index.check_health()


def _check_queue() -> None:
    relay = components().relay
    if relay is not None and relay.consecutive_failures > 0:
        raise RuntimeError(f"outbox delivery failed {relay.consecutive_failures} time(s) in a row")


HEALTH_CHECKS: dict[str, Callable[[], None]] = {
    "store": _check_store, "search": _check_search, "queue": _check_queue}


@app.route("/health", methods=["GET"])
def health() -> Response:
    checks: dict[str, str] = {}
    for name, check in HEALTH_CHECKS.items():
        try:
            check()
            checks[name] = "ok"
        except Exception as error:
            logger.warning("health check failed", extra={"backend": name, "error": str(error)})
            checks[name] = f"failed: {type(error).__name__}"
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        problem = PlanApiError(f"Backend(s) unavailable: {', '.join(failing)}.")
        problem.status, problem.title, problem.type_suffix = 503, "Service Unavailable", "unhealthy"
        response = problem_response(problem)
        body = json.loads(response.body)
        # `status` stays the HTTP status code, as RFC 9457 defines that member.
        body["checks"] = checks
        response.body = json.dumps(body)
        return response
    return json_response({"status": "ok", "checks": checks})


@app.route("/v1/plan", methods=["POST"], authorizer=jwt_auth, content_types=ACCEPTED_CONTENT_TYPES)
@handle_errors
def create_plan() -> Response:
    document = read_json_body(_request())
    state = components().service.create(document)
    return plan_response(state, 201, {"Location": f"/v1/plan/{state.plan_id}"})


@app.route("/v1/plan", methods=["GET"], authorizer=jwt_auth)
@handle_errors
def list_plans() -> Response:
    params = _request().query_params or {}
    limit = _page_size(params.get("limit"))
    page = components().service.list(params.get("cursor"), limit)
    return json_response({"items": page.items, "next": page.next_cursor})


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise MalformedRequest(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, got '{raw[:40]}'.")
    return int(raw)


@app.route("/v1/plan/{plan_id}", methods=["GET"], authorizer=jwt_auth)
@handle_errors
def get_plan(plan_id: str) -> Response:
    state = components().service.get(plan_id)
    if if_none_match_hits(_request().headers.get("if-none-match"), state.etag):
        return Response(body="", status_code=304, headers={"ETag": state.etag})
    return plan_response(state)


@app.route("/v1/plan/{plan_id}", methods=["PUT"], authorizer=jwt_auth,
           content_types=ACCEPTED_CONTENT_TYPES)
@handle_errors
def replace_plan(plan_id: str) -> Response:
    request = _request()
    document = read_json_body(request)
    state = components().service.replace(plan_id, document, request.headers.get("if-match"))
    return plan_response(state)


@app.route("/v1/plan/{plan_id}", methods=["PATCH"], authorizer=jwt_auth,
           content_types=ACCEPTED_CONTENT_TYPES)
@handle_errors
def patch_plan(plan_id: str) -> Response:
    request = _request()
    patch = read_json_body(request)
    state = components().service.patch(plan_id, patch, request.headers.get("if-match"))
    return plan_response(state)


@app.route("/v1/plan/{plan_id}", methods=["DELETE"], authorizer=jwt_auth)
@handle_errors
def delete_plan(plan_id: str) -> Response:
    components().service.delete(plan_id, _request().headers.get("if-match"))
    return Response(body="", status_code=204)


@app.route("/v1/plan/es_plan/{plan_id}", methods=["GET"], authorizer=jwt_auth)
@handle_errors
def get_indexed_plan(plan_id: str) -> Response:
    return json_response(components().search_service().get_plan(plan_id))


@app.route("/v1/plan/es_data", methods=["GET"], authorizer=jwt_auth)
@handle_errors
def find_indexed_objects() -> Response:
    params = _request().query_params or {}
    search = components().search_service()
    return json_response(search.find(params.get("id"), params.get("parent_type")))
