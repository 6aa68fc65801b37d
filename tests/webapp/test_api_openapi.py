"""GET /api/v1/openapi.json: a complete OpenAPI 3.1 document whose schemas match real responses."""

import re

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from jobs.registry import all_job_types

DOCUMENT_URI = "urn:lanes:openapi"
EXPECTED = {
    "/tokens": {"post"},
    "/tokens/current": {"delete"},
    "/job-types": {"get"},
    "/requests": {"get", "post"},
    "/requests/{id}": {"get", "delete"},
    "/requests/{id}/rerun": {"post"},
    "/requests/{id}/logs": {"get"},
    "/lane": {"get"},
    "/openapi.json": {"get"},
}


@pytest.fixture
def document(client):
    response = client.get("/api/v1/openapi.json")  # no token needed
    assert response.status_code == 200
    return response.get_json()


def validator_for(document, component: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<component>``, resolving refs inside the document."""
    registry = Registry().with_resource(DOCUMENT_URI, Resource(contents=document, specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{DOCUMENT_URI}#/components/schemas/{component}"}, registry=registry)


def all_refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from all_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_refs(item)


def test_document_lists_every_path_and_method(document):
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["servers"] == [{"url": "/api/v1"}]
    assert {path: set(item) - {"parameters"} for path, item in document["paths"].items()} == EXPECTED
    for item in document["paths"].values():
        for method, operation in item.items():
            if method != "parameters":
                assert operation["operationId"] and operation["responses"]


def test_bearer_security_everywhere_but_token_exchange_and_this_document(document):
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/tokens"]["post"]["security"] == []
    assert document["paths"]["/openapi.json"]["get"]["security"] == []
    assert "401" in document["paths"]["/lane"]["get"]["responses"]


def test_documented_status_codes_match_the_spec(document):
    submit = document["paths"]["/requests"]["post"]["responses"]
    assert set(submit) >= {"200", "202", "400", "401", "409", "413", "415", "422", "429", "503"}
    cancel = document["paths"]["/requests/{id}"]["delete"]["responses"]
    assert set(cancel) >= {"200", "202", "404", "409"}
    assert set(document["paths"]["/tokens"]["post"]["responses"]) >= {"201", "401", "429"}
    assert "204" in document["paths"]["/tokens/current"]["delete"]["responses"]


def test_every_reference_resolves(document):
    for ref in set(all_refs(document)):
        assert ref.startswith("#/"), ref
        node = document
        for part in ref[2:].split("/"):
            assert part in node, ref
            node = node[part]


def test_each_job_type_payload_schema_is_embedded(document):
    schemas = document["components"]["schemas"]
    names = [jt.name for jt in all_job_types()]
    assert names
    for jt in all_job_types():
        assert schemas[f"Payload.{jt.name}"] == jt.schema
    submission = schemas["Submission"]
    assert set(submission["discriminator"]["mapping"]) == set(names)
    assert len(submission["oneOf"]) == len(names)

    validator = validator_for(document, "Submission")
    assert validator.is_valid({"type": "echo", "payload": {"message": "hi"}})
    assert not validator.is_valid({"type": "echo", "payload": {"message": "hi", "colour": "red"}})
    assert not validator.is_valid({"type": "no.such.type", "payload": {}})


def test_real_responses_match_the_documented_schemas(document, api, client):
    submitted = api.post("/api/v1/requests", json={"type": "echo", "payload": {"message": "hi"}}).get_json()
    validator_for(document, "Request").validate(submitted)
    validator_for(document, "Request").validate(api.delete(f"/api/v1/requests/{submitted['id']}").get_json())
    validator_for(document, "RequestPage").validate(api.get("/api/v1/requests").get_json())
    validator_for(document, "Lane").validate(api.get("/api/v1/lane").get_json())
    validator_for(document, "JobTypeList").validate(api.get("/api/v1/job-types").get_json())
    validator_for(document, "Error").validate(api.get("/api/v1/requests/999999").get_json())
    validator_for(document, "Error").validate(client.get("/api/v1/lane").get_json())


def test_error_codes_are_those_of_webapp_errors(document):
    from webapp import errors

    codes = {error_type.code for error_type in errors.client_error_types()}
    # SPEC §5's list, every one of them raised by some error type
    assert codes == {
        "invalid_json", "invalid_request", "unauthorized", "invalid_credentials", "forbidden", "not_found",
        "method_not_allowed", "not_cancelable", "idempotency_conflict", "payload_too_large",
        "unsupported_media_type", "unknown_job_type", "invalid_payload", "lane_full", "rate_limited",
        "service_unavailable",
    }
    documented = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert set(documented) == codes
    failure = document["components"]["schemas"]["Request"]["properties"]["error"]["oneOf"][1]
    assert set(failure["properties"]["code"]["examples"]) == set(errors.JOB_FAILURE_CODES)
    # each error response names exactly the codes of its status
    by_status = {}
    for error_type in errors.client_error_types():
        by_status.setdefault(error_type.status, set()).add(error_type.code)
    submit = document["paths"]["/requests"]["post"]["responses"]
    for status in ("400", "409", "422", "429", "503"):
        name = submit[status]["$ref"].rsplit("/", 1)[1]
        response = document["components"]["responses"][name]
        enum = response["content"]["application/json"]["schema"]["allOf"][1]["properties"]["error"]["properties"]
        assert set(enum["code"]["enum"]) == by_status[int(status)], status


def test_rerun_and_logs_are_documented_and_answer_as_documented(document, api):
    rerun = document["paths"]["/requests/{id}/rerun"]["post"]
    assert {"202", "200", "404", "401"} <= set(rerun["responses"])
    assert rerun["parameters"] == [{"$ref": "#/components/parameters/IdempotencyKey"}]
    logs = document["paths"]["/requests/{id}/logs"]["get"]
    assert {"200", "400", "404"} <= set(logs["responses"])
    limit = document["components"]["parameters"]["LogLimit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 1000)

    first = api.post("/api/v1/requests", json={"type": "echo", "payload": {"message": "again"}}).get_json()
    again = api.post(f"/api/v1/requests/{first['id']}/rerun")
    assert again.status_code == 202
    validator_for(document, "Request").validate(again.get_json())
    validator_for(document, "LogPage").validate(api.get(f"/api/v1/requests/{first['id']}/logs").get_json())


def test_the_document_is_rendered_for_people_at_docs(client):
    page = client.get("/api/v1/docs")  # no token needed
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert 'data-openapi-url="/api/v1/openapi.json"' in html
    assert "<script>" not in html and not re.search(r"\son[a-z]+=", html)  # no inline script or handlers
    for asset in ("vendor/swagger-ui/swagger-ui-bundle.js", "vendor/swagger-ui/swagger-ui.css",
                  "vendor/swagger-ui/LICENSE", "js/api_docs.js"):
        assert client.get(f"/static/{asset}").status_code == 200, asset
