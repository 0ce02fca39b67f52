"""The HTTP API and the drawing page of `mnist-edge serve`, as a Starlette app.

Every error a client can cause is a 4xx response with a JSON `error`; a request body over the limit is
refused from its Content-Length before any of it is read, or as soon as a streamed (chunked) body
passes the limit, and the connection is closed rather than drained.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.applications import Starlette
from starlette.datastructures import QueryParams, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_edge.errors import MnistEdgeError
from mnist_edge.spec import NUM_CLASSES
from mnist_edge.edge.serve.engine import Engine, WorkerDied
from mnist_edge.edge.serve.protocol import Upload

# The page's files, served from the package itself: the Pi may have no internet.
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page loads nothing from anywhere else, and no other site may frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
USAGE = (
    "send multipart/form-data with one or more parts named 'file', or one image as the body with an image/* "
    "Content-Type"
)
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
# A whole number as HTTP writes one: ASCII digits only (str.isdigit also takes '²' and '٣', which int() refuses
# or reads), and no more of them than a 64-bit length has (leading zeros too), so no int() parses thousands.
WHOLE_NUMBER = re.compile(r"[0-9]{1,20}")


class RequestError(Exception):
    """A request the server refuses: its status and one line saying why."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close  # the body may be unread: close the connection instead of draining it


def error_response(status: int, message: str, close: bool = False, **extra: Any) -> JSONResponse:
    headers = {"X-Content-Type-Options": "nosniff"}
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class BodyLimit:
    """Refuse request bodies over MAX_BODY bytes: by Content-Length before reading, else while streaming."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(next((v for k, v in scope["headers"] if k == b"content-length"), None))
        if refusal is not None:
            await error_response(*refusal, close=True)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise RequestError(413, self._too_large(), close=True)
            return message

        await self.app(scope, limited, send)

    def refusal(self, declared: bytes | None) -> tuple[int, str] | None:
        """The status and reason to refuse a request unread whose Content-Length is DECLARED, or None."""
        if declared is None:
            return None
        length = whole_number(declared.decode("latin-1"))
        if length is None:
            return 400, f"Content-Length is not a length in bytes: {declared[:20].decode('latin-1')!r}"
        return (413, self._too_large()) if length > self.max_body else None

    def _too_large(self) -> str:
        return f"request body over the {self.max_body:,}-byte limit (the server's --max-body)"


def whole_number(text: str) -> int | None:
    """TEXT as a whole number of at most 20 ASCII digits, or None."""
    return int(text) if WHOLE_NUMBER.fullmatch(text) else None


def _flag(params: QueryParams, name: str) -> bool:
    value = params.get(name, "0").lower()
    if value not in TRUE + FALSE:
        raise RequestError(400, f"?{name}= takes 1 or 0, not {value[:20]!r}", close=True)  # the body is unread
    return value in TRUE


def _top(params: QueryParams) -> int:
    value = params.get("top", "3")
    top = whole_number(value)
    if top is None or not 1 <= top <= NUM_CLASSES:
        raise RequestError(400, f"?top= takes a whole number from 1 to {NUM_CLASSES}, not {value[:20]!r}", close=True)
    return top


async def _uploads(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the request's images, whichever of the two ways it sent them."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind == b"multipart/form-data":
        if b"boundary" not in options:
            raise RequestError(400, "multipart/form-data without a boundary")
        uploads = []
        try:
            # Non-file fields are few and small in any real form: the limits keep a flood of them cheap.
            async with request.form(max_files=max_files, max_fields=16, max_part_size=64 * 1024) as form:
                for part in form.getlist("file"):
                    if not isinstance(part, UploadFile):
                        raise RequestError(
                            400, "the part named 'file' is a text field, not a file upload (no filename)"
                        )
                    name = part.filename or "upload"
                    data = await part.read()
                    if not data:
                        raise RequestError(400, f"{name}: empty file")
                    uploads.append((name, data))
        except FormParserError as exc:  # older Starlette (0.44, the floor) lets python-multipart's own errors out
            raise RequestError(400, f"malformed multipart/form-data body ({exc})") from None
        except OSError as exc:  # Starlette spools a file part over 1 MB to a temporary file: a full or missing $TMPDIR
            raise RequestError(
                503, f"the server cannot hold the upload now ({exc.strerror or exc})", close=True
            ) from None
        if not uploads:
            raise RequestError(400, f"no part named 'file': {USAGE}")
        return uploads
    if kind.startswith(b"image/"):
        data = await request.body()
        if not data:
            raise RequestError(400, "empty request body: no image")
        return [(request.query_params.get("name", "upload"), data)]
    if not kind:
        raise RequestError(415, f"no Content-Type: {USAGE}", close=True)
    raise RequestError(415, f"Content-Type {kind.decode('latin-1')[:60]!r} is not accepted: {USAGE}", close=True)


async def page(request: Request) -> Response:
    # /favicon.ico: what a browser asks for on its own (a page it shows as JSON, /healthz, names no icon)
    name = request.path_params.get("name", "favicon.svg" if request.url.path == "/favicon.ico" else "index.html")
    static = request.app.state.static
    if name not in static:
        raise RequestError(404, f"no such file: /static/{name[:60]}")
    return Response(static[name], media_type=STATIC[name], headers=PAGE_HEADERS)


async def healthz(request: Request) -> Response:
    engine = request.app.state.engine
    return JSONResponse({
        "status": "ok", "model": engine.model_info["file"], "workers": engine.workers,
        "images": engine.images, "prepared_by_server": engine.prepared_here,
    })


async def model(request: Request) -> Response:
    return JSONResponse(request.app.state.engine.model_info)


async def predict(request: Request) -> Response:
    params, state = request.query_params, request.app.state
    raw, preview, top = _flag(params, "raw"), _flag(params, "preview"), _top(params)
    refuse = not (state.always_digit or _flag(params, "always_digit"))
    uploads = [Upload(name, data, raw, top, preview, refuse) for name, data in await _uploads(request, state.max_files)]
    try:
        outcomes = await state.engine.predict(uploads)
    except WorkerDied as exc:
        return error_response(503, str(exc))
    except MnistEdgeError as exc:  # the model itself failed (a runtime error): not the client's fault
        return error_response(500, str(exc))
    rows = [o.body for o in outcomes]
    status = max(o.status for o in outcomes)
    if status == 200:
        return JSONResponse(rows)
    first = next(o for o in outcomes if o.status == status)
    return error_response(status, first.body["error"], results=rows)


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, str(exc), close=exc.close)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # Starlette's: no route, wrong method, bad multipart
    return error_response(exc.status_code, exc.detail, close=request.method == "POST")


async def gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # the client hung up: nobody reads this


async def crashed(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal server error (the server's log says more)")  # Starlette logs the traceback


ROUTES = [
    Route("/", page),
    Route("/static/{name}", page),
    Route("/favicon.ico", page),
    Route("/healthz", healthz),
    Route("/model", model),
    Route("/predict", predict, methods=["POST"]),
]


def create_app(engine: Engine, max_body: int, max_files: int, always_digit: bool = False) -> Starlette:
    """The app for ENGINE, which is open (its model_info is known) for as long as the app serves; the endpoints
    read ENGINE, MAX_FILES, ALWAYS_DIGIT and the page's files from app.state. ALWAYS_DIGIT: answer a digit even for
    what the model says is not one, as every request's ?always_digit=1 asks."""
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(BodyLimit, max_body=max_body)],
        exception_handlers={
            RequestError: refused, HTTPException: http_error, ClientDisconnect: gone, Exception: crashed,
        },
    )
    app.state.engine, app.state.max_files, app.state.always_digit = engine, max_files, always_digit
    folder = resources.files(__package__).joinpath("static")
    app.state.static = {name: folder.joinpath(name).read_bytes() for name in STATIC}
    return app
