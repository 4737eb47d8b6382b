"""The API as a stranger reads it: /openapi.json says what each route really answers (image media
types, headers, the error schema with every code per status), the errors a client can cause are
the documented ones, and the README's table is the document's. (A client no one here wrote and
a browser without internet: tests/live/test_api_docs.py.)"""

from __future__ import annotations

import pytest
from support.app import (block_worker, encode, make_case, make_settings, png_header_only, repair, serve, service_of,
                         upload, wait_until)
from support.paths import ROOT

from tools import api_table
from webui.openapi import ERRORS

README = ROOT / "README.md"
GOOD_IMAGE, GOOD_MASK = (encode(array) for array in make_case())

IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp"}
ERROR_SCHEMA = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
def client(tiny_dir, tmp_path_factory):
    with serve(make_settings(tiny_dir, tmp_path_factory.mktemp("openapi"), queue_capacity=2)) as client:
        yield client


@pytest.fixture(scope="module")
def document(client):
    return client.get("/openapi.json").json()


def documented_codes(document, path, method, status):
    """The error codes the document lists for one route's status (empty if the status is not documented)."""
    response = document["paths"][path][method]["responses"].get(str(status))
    if response is None:
        return set()
    content = response["content"]["application/json"]
    assert content["schema"] == {"$ref": ERROR_SCHEMA}, (path, status)
    return {example["value"]["error"]["code"] for example in content["examples"].values()}


# ------------------------------------------------------------------ the document


def test_a_repair_is_documented_as_an_image_with_its_headers(document):
    responses = document["paths"]["/api/v1/inpaint"]["post"]["responses"]
    ok = responses["200"]
    assert set(ok["content"]) == IMAGE_TYPES  # not JSON: the body is the image
    assert all(media["schema"] == {"type": "string", "format": "binary"} for media in ok["content"].values())
    assert {"Server-Timing", "X-Strategy", "X-Saved-As"} <= set(ok["headers"])
    assert ok["headers"]["X-Strategy"]["schema"]["enum"] == ["original", "resize", "crop"]
    assert responses["503"]["headers"]["Retry-After"]["required"] is True
    assert {"400", "401", "413", "422", "500", "503"} <= set(responses)
    result = document["paths"]["/api/v1/jobs/{job_id}/result"]["get"]["responses"]["200"]
    assert set(result["content"]) == IMAGE_TYPES


def test_every_error_of_the_api_has_the_error_schema_and_its_codes(document):
    schema = document["components"]["schemas"]
    assert set(schema["ErrorResponse"]["properties"]) == {"error"}
    assert set(schema["Problem"]["properties"]) == {"code", "message"}
    for path, operations in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            errors = {status for status in operation["responses"] if int(status) >= 400}
            assert {"401", "421", "500"} <= errors, (path, method)  # token, edge, the unforeseen
            for status in errors:
                codes = documented_codes(document, path, method, status)
                assert codes and codes <= {code for _, code in ERRORS}, (path, method, status)


def test_with_a_token_the_document_says_how_to_send_it(tiny_dir, tmp_path):
    with serve(make_settings(tiny_dir, tmp_path, "--api-token", "t"), wait_ready=False) as client:
        document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert ("security" in operation) == path.startswith("/api/"), path


def test_the_jobs_routes_are_documented_with_their_shapes(document):
    paths = document["paths"]
    accepted = paths["/api/v1/jobs"]["post"]["responses"]["202"]
    assert accepted["headers"]["Location"]["required"] is True
    assert set(accepted["links"]) == {"status", "result", "delete"}
    assert set(document["components"]["schemas"]["JobStatus"]["properties"]) == {
        "id", "status", "error", "result_url", "timings"}
    assert documented_codes(document, "/api/v1/jobs/{job_id}/result", "get", 409) == {"job_not_done", "job_failed"}
    form = paths["/api/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    inpaint_form = paths["/api/v1/inpaint"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    schemas = document["components"]["schemas"]
    assert schemas[form["$ref"].rsplit("/", 1)[1]]["properties"] == \
        schemas[inpaint_form["$ref"].rsplit("/", 1)[1]]["properties"]  # the same fields


def test_the_errors_the_server_answers_with_are_the_documented_ones(client, document):
    """Provoke each refusal a client can cause and look it up in the document."""
    image, mask = make_case()
    service = service_of(client)
    seen = [
        ("/api/v1/inpaint", "post", repair(client, b"not an image", GOOD_MASK)),
        ("/api/v1/inpaint", "post", repair(client, GOOD_IMAGE, GOOD_MASK, dilate=-1)),
        ("/api/v1/inpaint", "post", repair(client, GOOD_IMAGE, None)),
        ("/api/v1/inpaint", "post", repair(client, png_header_only(100_000, 100_000), GOOD_MASK)),
        ("/api/v1/inpaint", "post", client.post("/api/v1/inpaint", content=b"--x\r\n", headers={
            "content-type": "multipart/form-data; boundary=x"})),
        ("/api/v1/jobs", "post", client.post("/api/v1/jobs", **upload(image, mask[:10]))),
        ("/api/v1/jobs/{job_id}", "get", client.get("/api/v1/jobs/" + "0" * 32)),
        ("/api/v1/monitor", "get", client.get("/api/v1/monitor?since=yesterday")),
    ]
    release = block_worker(service)
    try:
        pending = client.post("/api/v1/jobs", **upload(image, mask)).json()
        seen.append(("/api/v1/jobs/{job_id}/result", "get", client.get(pending["url"] + "/result")))
        seen.append(("/api/v1/jobs", "post", client.post("/api/v1/jobs", **upload(image, mask))))  # queue full
        seen.append(("/api/v1/inpaint", "post", repair(client, image, mask)))
    finally:
        release.set()
    wait_until(lambda: client.get(pending["url"]).json()["status"] == "done", what="the blocked job done")
    answered = set()
    for path, method, response in seen:
        code = response.json()["error"]["code"]
        assert code in documented_codes(document, path, method, response.status_code), (path, response.text)
        answered.add((response.status_code, code))
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
    assert {status for status, _ in answered} == {400, 404, 409, 413, 422, 503}


def test_the_readme_table_is_the_one_the_document_gives(document):
    """The client fixture runs the default settings, as the README's table says."""
    readme = README.read_text()
    assert api_table.replace_between_markers(readme, api_table.render(document)) == readme, \
        "the README's API table is stale: run python tools/api_table.py --write README.md against python app.py"
