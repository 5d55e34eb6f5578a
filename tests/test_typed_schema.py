"""The OpenAPI create body is typed per task type, from the registry: each
type's variant validates its example, refuses bad args as the API does, and
the API accepts every example it shows."""

import jsonschema
import pytest
from rest_framework import serializers
from rest_framework.test import APIClient

from tasks import registry
from tasks.api.schema import example_args, made_up_value, openapi_schema
from tasks.models import Task

pytestmark = pytest.mark.django_db


def fetch_schema():
    response = APIClient().get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        return fetch_schema()


def resolved(schema, node):
    """`node` with every local $ref replaced by its component."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            return resolved(schema, schema["components"]["schemas"][name])
        return {key: resolved(schema, value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(schema, item) for item in node]
    return node


def create_body(schema):
    return schema["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]


def variant_of(schema, type_name):
    ref = create_body(schema)["schema"]["discriminator"]["mapping"][type_name]
    return resolved(schema, {"$ref": ref})


def validator(schema_node):
    return jsonschema.Draft7Validator(schema_node)


TYPE_NAMES = [t.name for t in registry.all_types()]


def test_every_registered_type_has_a_variant_discriminated_by_type():
    # Fetched now: other tests may have registered types since the module's.
    schema = fetch_schema()
    body = create_body(schema)["schema"]

    assert body["discriminator"]["propertyName"] == "type"
    assert set(body["discriminator"]["mapping"]) == {t.name for t in registry.all_types()}
    assert [v["$ref"] for v in body["oneOf"]] == list(body["discriminator"]["mapping"].values())
    assert "TaskCreateRequest" not in schema["components"]["schemas"]


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_each_types_args_schema_validates_its_example(schema, type_name):
    task_type = registry.get_type(type_name)
    example = create_body(schema)["examples"][type_name]["value"]
    variant = variant_of(schema, type_name)

    assert example == {"type": type_name, "args": example_args(task_type)}
    validator(variant).validate(example)
    validator(variant["properties"]["args"]).validate(example["args"])
    # The schema and the API's own validation agree on the example.
    task_type.validate_args(example["args"])
    assert variant["properties"]["type"]["enum"] == [type_name]


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_each_types_schema_refuses_what_the_api_refuses(schema, type_name):
    task_type = registry.get_type(type_name)
    variant = variant_of(schema, type_name)
    bad = {**example_args(task_type), "no_such_argument": 1}

    assert not validator(variant["properties"]["args"]).is_valid(bad)
    with pytest.raises(serializers.ValidationError):
        task_type.validate_args(bad)
    assert not validator(variant).is_valid({"type": "another", "args": example_args(task_type)})


def test_typed_args_carry_types_and_bounds(schema):
    primes = variant_of(schema, "primes")

    limit = primes["properties"]["args"]["properties"]["limit"]
    assert limit["type"] == "integer"
    assert limit["minimum"] == 2
    assert primes["required"] == ["type", "args"]
    assert not validator(primes).is_valid({"type": "primes", "args": {"limit": "many"}})
    assert not validator(primes).is_valid({"type": "primes", "args": {"limit": 1}})
    assert not validator(primes).is_valid({"type": "primes"})
    # Common fields stay in each variant.
    assert {"priority", "timeout", "delay", "run_at"} <= set(primes["properties"])
    assert not validator(primes).is_valid(
        {"type": "primes", "args": {"limit": 10}, "priority": 1000}
    )


def test_the_api_accepts_every_example_it_shows(schema, api, queue_only):
    for type_name, example in create_body(schema)["examples"].items():
        # Delayed: the examples are accepted, none of them runs here.
        response = api.post("/tasks", {**example["value"], "delay": 3600}, format="json")

        assert response.status_code == 202, (type_name, response.content)
    assert Task.objects.count() == len(create_body(schema)["examples"]) >= len(TYPE_NAMES)


class GadgetArgs(serializers.Serializer):
    """A type without an example, with many kinds of fields."""

    class Inner(serializers.Serializer):
        size = serializers.IntegerField(min_value=5, max_value=9)

    email = serializers.EmailField()
    site = serializers.URLField()
    color = serializers.ChoiceField(choices=["red", "green"])
    tags = serializers.ListField(child=serializers.CharField(min_length=3), min_length=2)
    inner = Inner()
    note = serializers.CharField(allow_null=True, required=False)
    when = serializers.DateTimeField()
    ratio = serializers.FloatField(min_value=0.5)
    flag = serializers.BooleanField()


@pytest.fixture
def gadget():
    registry.task_type("test.gadget", args=GadgetArgs)(lambda ctx, **kwargs: kwargs)
    yield registry.get_type("test.gadget")
    registry.unregister("test.gadget")


def test_a_new_type_appears_in_the_schema_with_a_made_up_example_that_validates(gadget):
    schema = fetch_schema()
    variant = variant_of(schema, "test.gadget")
    example = create_body(schema)["examples"]["test.gadget"]["value"]

    validator(variant).validate(example)
    gadget.validate_args(example["args"])
    args = variant["properties"]["args"]["properties"]
    assert args["color"]["enum"] == ["red", "green"]
    assert args["note"]["nullable"] is True and args["note"]["type"] == "string"
    assert args["inner"]["properties"]["size"]["minimum"] == 5
    assert variant["required"] == ["type", "args"]


def test_nullable_fields_are_said_the_openapi_3_0_way():
    converted = openapi_schema(
        {
            "type": "object",
            "properties": {
                "a": {
                    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                    "description": "d",
                },
                "b": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            },
        }
    )

    assert converted["properties"]["a"] == {
        "type": "integer",
        "minimum": 1,
        "description": "d",
        "nullable": True,
    }
    assert converted["properties"]["b"]["items"] == {"type": "string", "nullable": True}


def test_made_up_values_fit_bounds_and_formats():
    assert made_up_value({"type": "integer", "minimum": 7}) == 7
    assert made_up_value({"type": "string", "minLength": 4}) == "xxxx"
    assert made_up_value({"type": "string", "format": "email"}) == "user@example.com"
    assert made_up_value({"type": "array", "items": {"type": "boolean"}, "minItems": 2}) == [
        True,
        True,
    ]
    assert made_up_value({"type": "integer", "default": 3, "minimum": 1}) == 3


def test_the_catalogue_shows_each_types_example(api):
    types = {t["name"]: t for t in api.get("/tasks/types").json()["types"]}

    assert types["primes"]["args_example"] == {"limit": 1_000_000}
    for entry in types.values():
        jsonschema.Draft7Validator(entry["args_schema"]).validate(entry["args_example"])


def test_task_endpoints_come_first(schema):
    paths = list(schema["paths"])
    tasks = [p for p in paths if p == "/tasks" or p.startswith("/tasks/")]

    assert paths[: len(tasks)] == tasks
    assert schema["tags"][0]["name"] == "tasks"
