"""GET /api/v1/openapi.json: a complete OpenAPI 3.1 document whose schemas match real responses."""

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
