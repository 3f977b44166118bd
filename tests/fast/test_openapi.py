"""GET /openapi.json: generated from the route table, it lists exactly the routes the app
serves, every schema it names resolves, and real answers fit the schemas it documents."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from api.app import served_routes
from api.auth import rate_limited
from tests.fast.api_rig import Api, example_path

JSON = "application/json"
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


@pytest.fixture
async def doc(api: Api) -> dict[str, Any]:
    status, body, _ = await api.call("GET", "/openapi.json")
    assert status == 200
    return body


def resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def conforms(doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "$") -> None:
    """A small JSON Schema check, enough for what msgspec generates: $ref, anyOf, type,
    required, properties, additionalProperties, items, enum, minimum/maximum."""
    if "$ref" in schema:
        return conforms(doc, resolve(doc, schema["$ref"]), value, at)
    if "anyOf" in schema:
        failures = []
        for option in schema["anyOf"]:
            try:
                return conforms(doc, option, value, at)
            except AssertionError as e:
                failures.append(str(e))
        raise AssertionError(f"{at}: fits no option: {failures}")
    if "type" in schema:
        t = schema["type"]
        assert isinstance(value, _TYPES[t]), f"{at}: {value!r} is not {t}"
        assert not (t in ("integer", "number") and isinstance(value, bool)), f"{at}: a bool is not {t}"
    if "enum" in schema:
        assert value in schema["enum"], f"{at}: {value!r} not in {schema['enum']}"
    if "minimum" in schema:
        assert value >= schema["minimum"], at
    if "maximum" in schema:
        assert value <= schema["maximum"], at
    if isinstance(value, dict):
        for name in schema.get("required", []):
            assert name in value, f"{at}: missing {name!r}"
        extra = schema.get("additionalProperties", True)
        for name, v in value.items():
            if name in schema.get("properties", {}):
                conforms(doc, schema["properties"][name], v, f"{at}.{name}")
            elif extra is False:
                raise AssertionError(f"{at}: undocumented field {name!r}")
            elif isinstance(extra, dict):
                conforms(doc, extra, v, f"{at}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            conforms(doc, schema["items"], v, f"{at}[{i}]")
    return None


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return doc["paths"][path][method.lower()]


# --- the document and the app agree ---------------------------------------------------------------
async def test_the_document_lists_exactly_the_routes_the_app_serves(api: Api, doc: dict[str, Any]):
    served = {(r.method, r.resource.canonical) for r in api.client.app.router.routes()}
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    assert {
        ("POST", "/halt"),
        ("PATCH", "/slots/{id}"),
        ("GET", "/audit"),
        ("GET", "/openapi.json"),
    } <= served
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_every_declared_schema_resolves(api: Api, doc: dict[str, Any]):
    assert doc["openapi"] == "3.1.0"
    for ref in refs(doc):
        resolve(doc, ref)
    for r in served_routes(api.client.app):
        op = operation(doc, r.method, r.path)
        if r.body is not None:
            schema = op["requestBody"]["content"][JSON]["schema"]
            assert resolve(doc, schema["$ref"])["title"] == r.body.__name__
        if r.response is not None and r.content_type == JSON:
            schema = op["responses"]["200"]["content"][JSON]["schema"]
            if isinstance(r.response, type) and issubclass(r.response, msgspec.Struct):
                assert resolve(doc, schema["$ref"])["title"] == r.response.__name__
            else:
                assert schema == {"type": "object"}, r.path
        for status, answer in op["responses"].items():
            if status != "200":
                assert answer["content"][JSON]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


async def test_security_errors_and_parameters_are_documented(api: Api, doc: dict[str, Any]):
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert {"bearerAuth": []} in doc["security"]
    for r in served_routes(api.client.app):
        op = operation(doc, r.method, r.path)
        statuses = {int(s) for s in op["responses"]}
        assert set(r.errors) <= statuses, r.path
        if r.public:
            assert op["security"] == [] and (401 in statuses) == (401 in r.errors), r.path
        else:
            assert "security" not in op and 401 in statuses, r.path
        assert (429 in statuses) == (rate_limited(r) or 429 in r.errors), r.path
        # Every route answers 421 to a Host it does not serve.
        assert 421 in statuses, r.path
        names = re.findall(r"\{(\w+)", r.path)
        in_path = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        assert in_path == names, r.path
    assert 429 not in {int(s) for s in operation(doc, "POST", "/halt")["responses"]}
    # The stops are never refused for their body: no 400, no 413; the answer's warnings say
    # what was wrong. They still need the token.
    for path in ("/halt", "/pause"):
        op = operation(doc, "POST", path)
        assert not {"400", "413"} & set(op["responses"]) and "401" in op["responses"], path
        assert "warnings" in op["description"], path
    assert "warnings" in doc["components"]["schemas"]["HaltResult"]["properties"]
    assert "413" in operation(doc, "POST", "/resume")["responses"]
    assert {"400", "404", "409", "429"} <= set(operation(doc, "PATCH", "/slots/{id}")["responses"])
    [count] = operation(doc, "GET", "/audit")["parameters"]
    assert count["in"] == "query" and count["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 50,
    }
    assert operation(doc, "GET", "/health")["security"] == []
    # The sign-in is throttled; /metrics has its own door.
    assert {"401", "403", "429"} <= set(operation(doc, "POST", "/login")["responses"])
    assert {"401", "403"} <= set(operation(doc, "GET", "/metrics")["responses"])


async def test_the_document_needs_the_token(api: Api):
    status, body, _ = await api.call("GET", "/openapi.json", token=None)
    assert status == 401 and body["status"] == 401


# --- real answers fit the document ----------------------------------------------------------------
async def test_real_answers_fit_their_documented_schemas(api: Api, doc: dict[str, Any]):
    by_key = {(r.method, r.path): r for r in served_routes(api.client.app)}
    calls = [
        ("GET", "/health", None, 200),
        ("GET", "/status", None, 200),
        ("GET", "/control", None, 200),
        ("GET", "/slots", None, 200),
        ("GET", "/slots/{id}", None, 200),
        ("POST", "/pause", {"reason": "docs"}, 200),
        ("POST", "/slots/{id}/disable", None, 200),
        ("POST", "/slots/{id}/enable", {}, 200),
        ("PATCH", "/slots/{id}", {"stake_usd": 4, "params": {"edge": 0.04}}, 200),
        ("PATCH", "/slots/{id}", {"params": {"nope": 1}}, 400),
        ("POST", "/halt", {"reason": "docs"}, 200),
        ("POST", "/resume", None, 200),
        ("POST", "/resume", None, 409),
        ("POST", "/start", None, 200),
        ("POST", "/stop", None, 200),
        ("POST", "/reload", None, 409),
        ("GET", "/audit", None, 200),
        ("GET", "/openapi.json", None, 200),
    ]
    for method, path, payload, expected in calls:
        status, body, _ = await api.call(method, example_path(path), payload)
        assert status == expected, (method, path, body)
        answer = operation(doc, method, path)["responses"][str(status)]
        conforms(doc, answer["content"][JSON]["schema"], body)
        declared = by_key[(method, path)].response if status == 200 else None
        if isinstance(declared, type) and issubclass(declared, msgspec.Struct):
            msgspec.convert(body, declared)  # and msgspec agrees
    status, body, _ = await api.call("GET", "/slots/doge-5m")
    conforms(doc, operation(doc, "GET", "/slots/{id}")["responses"]["404"]["content"][JSON]["schema"], body)


def test_the_checker_refuses_what_does_not_fit():
    doc = {
        "components": {
            "schemas": {
                "E": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                    "additionalProperties": False,
                }
            }
        }
    }
    ref = {"$ref": "#/components/schemas/E"}
    conforms(doc, ref, {"error": "x"})
    for bad in ({}, {"error": "x", "extra": 1}, []):
        with pytest.raises(AssertionError):
            conforms(doc, ref, bad)
    with pytest.raises(AssertionError):
        conforms(doc, {"type": "integer"}, True)
