"""The OpenAPI document is the contract: requests generated from it, for every operation, against the live API
(a real uvicorn process over a real redis-server), with every schemathesis check on.

- positive (schema-valid) requests are accepted: no 422 for anything the schema allows (limit/offset bounds,
  id patterns and lengths are in the schema);
- every response conforms: status code documented, content type documented, body valid against its schema;
- negative (schema-invalid) requests are rejected with a 4xx JSON error in the one error shape. schemathesis's
  own rejection check lists the statuses it expects and 414 (request target too long, documented on every
  route) is not among them, so this suite checks rejections itself: any 4xx, JSON, ``error`` and ``message``.
  A negative case is judged by the request that went over the wire (a value that cannot be written into the
  URL is dropped or coerced there), and a request the HTTP parser itself refuses gets the same JSON shape
  (``test_a_request_the_http_parser_refuses_gets_a_json_400``).

Admin calls go without a key (401): a valid key would let the fuzzer roll publications back mid-run.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from test_serve_live import live  # noqa: F401 - the module-scoped live API fixture

from skyrec.redis_local import free_port

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("SKYREC_CONTRACT_EXAMPLES", "60"))  # per operation and mode; more for a long fuzz


def test_every_operation_conforms_to_its_openapi_contract(live):  # noqa: F811
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import negative_data_rejection
    from schemathesis.generation import GenerationMode

    spec = httpx.get(live.url + "/openapi.json").json()

    @schemathesis.check
    def rejected_as_json_4xx(ctx, response, case):
        if case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE:
            if 200 <= response.status_code < 300 and _sent_parameters_are_valid(spec, case, response):
                return None  # the invalid value did not survive serialisation (e.g. [] or {} in a query: omitted)
            where = (f"{case.operation.method.upper()} {response.request.url} -> {response.status_code} "
                     f"{response.headers.get('content-type')}: {response.content[:200]!r}")
            assert 400 <= response.status_code < 500, f"invalid request answered {response.status_code}: {where}"
            try:
                body = response.json()
            except ValueError:
                raise AssertionError(f"invalid request rejected without a JSON body: {where}") from None
            assert body.get("error") and body.get("message"), body
        return None

    api = schemathesis.openapi.from_url(live.url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10
    calls: dict[str, int] = {}
    with_parameters = {op.label for op in operations if list(op.iter_parameters())}
    for op in operations:
        modes = [GenerationMode.POSITIVE]
        if list(op.iter_parameters()):  # nothing to make invalid in a parameterless operation
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case) -> None:
                label = case.operation.label
                calls[label] = calls.get(label, 0) + 1
                case.call_and_validate(excluded_checks=[negative_data_rejection],
                                       additional_checks=[rejected_as_json_4xx])

            check()
    assert set(calls) == {op.label for op in operations}, calls
    assert all(calls[label] >= 10 for label in with_parameters), calls  # one case is all a parameterless one has
    metrics = httpx.get(live.url + "/metrics").text  # and nothing reached the catch-all handler
    assert "skyrec_unhandled_errors_total 0.0" in metrics and 'status="500"' not in metrics


def _coerce(value: str, schema: dict):
    """A query/path string as the API reads it for ``schema`` (an integer where the schema says integer)."""
    kinds = [schema.get("type")] + [s.get("type") for s in schema.get("anyOf", [])]
    if "integer" in kinds:
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _sent_path_values(template: str, raw_path: bytes) -> dict[str, str] | None:
    """The path parameters as the server reads them from the path that was sent (percent-decoded), or None
    when that path does not match the operation's template."""
    import re
    from urllib.parse import unquote

    pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]*)", re.escape(template))
    match = re.fullmatch(pattern, raw_path.decode("ascii", "replace"))
    return None if match is None else {k: unquote(v) for k, v in match.groupdict().items()}


def _sent_parameters_are_valid(spec: dict, case, response) -> bool:
    """Whether the request that went over the wire (not the generated case) satisfies the operation's
    parameters: a negative case whose invalid part could not be written into the URL is a valid request."""
    from urllib.parse import parse_qsl, urlsplit

    import jsonschema

    if case.operation.method.upper() not in ("GET", "HEAD"):
        return False  # bodies are sent as generated: only URLs can lose an invalid value
    operation = spec["paths"][case.operation.path][case.operation.method.lower()]
    url = urlsplit(str(response.request.url))  # a requests PreparedRequest's url: already percent-encoded
    query = parse_qsl(url.query, keep_blank_values=True)
    sent: dict[str, list[str]] = {}
    for name, value in query:
        sent.setdefault(name, []).append(value)
    path_values = _sent_path_values(case.operation.path, url.path.encode("ascii", "replace"))
    if path_values is None:
        return False  # the path sent does not have the operation's shape
    for param in operation.get("parameters", []):
        name, where, schema = param["name"], param["in"], param.get("schema", {})
        values = sent.pop(name, []) if where == "query" else (
            [path_values[name]] if where == "path" and name in path_values else [])
        if where not in ("query", "path"):
            return False  # headers and cookies: not checked here
        if not values:
            if param.get("required"):
                return False
            continue
        if len(values) > 1:
            return False
        try:
            jsonschema.validate(_coerce(values[0], schema), schema)
        except jsonschema.ValidationError:
            return False
    return not sent  # an unknown query parameter is invalid


def test_page_bounds_are_in_the_schema_and_enforced_the_same(live):  # noqa: F811
    spec = httpx.get(live.url + "/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/v1/recommendations/{variant}/{user_id}"]["get"]["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 100 and params["offset"]["schema"]["maximum"] == 1000
    ok = httpx.get(live.url + "/v1/recommendations/comedy_featured/u1?limit=100&offset=1000")
    assert ok.status_code == 200
    bad = httpx.get(live.url + "/v1/recommendations/comedy_featured/u1?limit=101")
    assert bad.status_code == 422 and bad.json()["details"][0]["loc"] == ["query", "limit"]
    report = spec["paths"]["/v1/variants/{variant}/report"]["get"]["responses"]
    assert all(set(r["content"]) == {"application/json"} for s, r in report.items() if s[0] in "45")


def test_a_route_declared_bound_is_not_overwritten(live):  # noqa: F811
    spec = httpx.get(live.url + "/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/v1/users/{user_id}/history"]["get"]["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 1000
    assert httpx.get(live.url + "/v1/users/u1/history?limit=1000").status_code == 200
    assert httpx.get(live.url + "/v1/users/u1/history?limit=1001").status_code == 422


MALFORMED_REQUESTS = [
    b"GET /v1/recommendations/comedy_featured/u\xff HTTP/1.1\r\nHost: x\r\n\r\n",          # raw non-ASCII path
    b"GET /v1/recommendations/comedy_featured/u1?limit=\xff HTTP/1.1\r\nHost: x\r\n\r\n",  # ... query
    b"POST /v1/admin/reload HTTP/1.1\r\nHost: x\r\nX-API-Key: a\x01b\r\nContent-Length: 0\r\n\r\n",  # control byte
    b"GET /v1/variants HTTP/1.1 junk\r\nHost: x\r\n\r\n",                                 # bad request line
]


def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as raw bytes (no client library to correct it); (status, headers, body) of the answer."""
    import socket

    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # the server closes the connection after a malformed request
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("request_bytes", MALFORMED_REQUESTS)
def test_a_request_the_http_parser_refuses_gets_a_json_400(live, request_bytes: bytes) -> None:  # noqa: F811
    status, headers, body = raw_exchange(live.url, request_bytes)
    assert status == 400 and headers["content-type"] == "application/json", (status, headers, body)
    payload = json.loads(body)
    assert payload["error"] == "bad_request" and "malformed HTTP request" in payload["message"]
    assert payload["request_id"] == headers["x-request-id"]
    spec = httpx.get(live.url + "/openapi.json").json()
    assert all("400" in op["responses"] for ops in spec["paths"].values() for op in ops.values())
    assert httpx.get(live.url + "/healthz").status_code == 200  # and the server is still there


def test_the_h11_protocol_answers_malformed_requests_in_json_too(tmp_path) -> None:
    """Where httptools is not installed the API runs on h11 (``skyrec.serve.main.run``): same JSON 400."""
    import threading

    import uvicorn

    async def app(scope, receive, send):  # never reached by a malformed request
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="critical",
                                           http="skyrec.serve.uvicorn_http:JsonErrorH11Protocol"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.02)
        status, headers, body = raw_exchange(f"http://127.0.0.1:{port}", b"GET /x\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 400 and headers["content-type"] == "application/json", (status, headers, body)
        assert json.loads(body)["error"] == "bad_request"
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_sent_request_is_read_from_the_url_schemathesis_reports():
    """schemathesis reports the request as requests' PreparedRequest, whose url is a string: a negative case
    whose invalid part was dropped on the way (an empty list in a query) is judged by that string."""
    from types import SimpleNamespace

    import requests

    spec = {"paths": {"/v1/users/{user_id}": {"get": {"parameters": [
        {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}]}}}}
    case = SimpleNamespace(operation=SimpleNamespace(method="get", path="/v1/users/{user_id}"))

    def sent(url: str) -> bool:
        request = requests.Request("GET", url).prepare()
        return _sent_parameters_are_valid(spec, case, SimpleNamespace(request=request))

    assert sent("http://h/v1/users/0?limit=1")
    assert sent("http://h/v1/users/a%20b")
    assert not sent("http://h/v1/users/0?limit=0")
    assert not sent("http://h/v1/users/0?limit=1&limit=2")
    assert not sent("http://h/v1/users/0?other=1")
    assert not sent("http://h/v1/other/0")
