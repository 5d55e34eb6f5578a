"""The Postman collection must keep up with the URL patterns, so it cannot drift."""

import json
import re
from pathlib import Path

from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve

COLLECTION = Path(__file__).resolve().parents[1] / "postman" / "task-runner.postman_collection.json"
# A folder whose requests may name routes that do not exist yet.
PENDING_FOLDER = "Tokens and catalogue"
# Values for the path variables the collection uses.
SAMPLE = {
    "taskId": "1",
    "delayedTaskId": "2",
    "defaultTaskId": "3",
    "scheduleId": "4",
    "apiKeyPrefix": "abcd1234",
    "webhookId": "5",
    "deliveryId": "6",
}


def load() -> dict:
    return json.loads(COLLECTION.read_text())


def requests_in(items, folder=None):
    for item in items:
        if "item" in item:
            yield from requests_in(item["item"], item["name"])
        else:
            yield folder, item


def path_of(item) -> str:
    raw = item["request"]["url"]["raw"]
    assert raw.startswith("{{baseUrl}}/"), raw
    path = raw.removeprefix("{{baseUrl}}").split("?")[0]
    return re.sub(r"\{\{(\w+)\}\}", lambda m: SAMPLE[m.group(1)], path)


def named_patterns(patterns, namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace in ("admin", "web"):
                continue  # the admin and the page at / are for browsers, not API clients
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from named_patterns(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern):
            yield f"{namespace}{pattern.name}" if pattern.name else str(pattern.pattern)


def test_the_collection_is_a_postman_v2_1_collection_with_variables():
    collection = load()

    assert collection["info"]["schema"] == (
        "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    )
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables["baseUrl"] == "http://127.0.0.1:8081"
    assert {"username", "password", "token"} <= set(variables)
    assert collection["auth"]["bearer"][0]["value"] == "{{token}}"


def test_every_request_has_tests_and_every_folder_logs_in_first():
    collection = load()
    for folder in collection["item"]:
        first = folder["item"][0]
        assert first["request"]["url"]["raw"] == "{{baseUrl}}/login", folder["name"]
        assert 'pm.collectionVariables.set("token"' in "\n".join(
            first["event"][0]["script"]["exec"]
        )
        # newman's --folder and setNextRequest find requests by name.
        names = [item["name"] for item in folder["item"]]
        assert len(names) == len(set(names)), folder["name"]
    for _, item in requests_in(collection["item"]):
        tests = [e for e in item["event"] if e["listen"] == "test"]
        assert tests and "pm.test(" in "\n".join(tests[0]["script"]["exec"]), item["name"]


def test_it_names_every_url_pattern():
    covered = set()
    for folder, item in requests_in(load()["item"]):
        try:
            match = resolve(path_of(item))
        except Resolver404:
            assert folder == PENDING_FOLDER, f"{item['name']}: {path_of(item)} does not resolve"
            continue
        covered.add(match.view_name)

    missing = set(named_patterns(get_resolver().url_patterns)) - covered
    assert not missing, f"the Postman collection has no request for {sorted(missing)}"
