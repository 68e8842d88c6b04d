"""HEAD on every GET route (RFC 9110 §9.3.2): the GET's status and headers, no body.

Load balancers and uptime checks probe with HEAD. Starlette adds HEAD to its own GET routes, FastAPI's routes
do not (they would answer 405), and the hot path (``skyrec.serve.hotpath``) takes GET only. So a HEAD request
is handed to the app as the GET it asks about, and the body of the answer is dropped on the way out: every
GET route, the hot path included, answers HEAD with the same status and headers (``Content-Length`` the
GET's) by construction, and a path with no GET route answers HEAD with the GET's 405. The server's own
scope still says HEAD (uvicorn frames the response by it), and so do the access log and the metrics.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """ASGI middleware: HEAD runs the GET and sends its ``http.response.start`` with an empty body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        inner = dict(scope)  # the server's scope keeps saying HEAD
        inner["method"] = "GET"

        async def send_head(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # a streamed body: nothing of it goes out
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app(inner, receive, send_head)
        finally:  # what routing recorded (route, endpoint, path parameters) for the middleware outside
            scope.update({k: v for k, v in inner.items() if k != "method"})
