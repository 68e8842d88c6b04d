"""The OpenAPI document is the contract: requests generated from it, for every operation, against the live API
(a real uvicorn process over a real redis-server), with every schemathesis check on.

- positive (schema-valid) requests are accepted: no 422 for anything the schema allows (limit/offset bounds,
  id patterns and lengths are in the schema);
- every response conforms: status code documented, content type documented, body valid against its schema;
- negative (schema-invalid) requests are rejected with a 4xx JSON error in the one error shape. schemathesis's
  own rejection check lists the statuses it expects and 414 (request target too long, documented on every
  route) is not among them, so this suite checks rejections itself: any 4xx, JSON, ``error`` and ``message``.

Admin calls go without a key (401): a valid key would let the fuzzer roll publications back mid-run.
"""

from __future__ import annotations

import httpx
import pytest
from test_serve_live import live  # noqa: F401 - the module-scoped live API fixture

pytestmark = pytest.mark.integration
EXAMPLES = 60


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


def _sent_parameters_are_valid(spec: dict, case, response) -> bool:
    """Whether the request that went over the wire (not the generated case) satisfies the operation's
    parameters: a negative case whose invalid part could not be written into the URL is a valid request."""
    from urllib.parse import parse_qsl, urlsplit

    import jsonschema

    if case.operation.method.upper() not in ("GET", "HEAD"):
        return False  # bodies are sent as generated: only URLs can lose an invalid value
    operation = spec["paths"][case.operation.path][case.operation.method.lower()]
    query = parse_qsl(urlsplit(str(response.request.url)).query, keep_blank_values=True)
    sent: dict[str, list[str]] = {}
    for name, value in query:
        sent.setdefault(name, []).append(value)
    path_values = case.path_parameters or {}
    for param in operation.get("parameters", []):
        name, where, schema = param["name"], param["in"], param.get("schema", {})
        values = sent.pop(name, []) if where == "query" else (
            [str(path_values[name])] if where == "path" and name in path_values else [])
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
