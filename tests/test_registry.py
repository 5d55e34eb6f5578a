import pytest
from rest_framework import serializers

from tasks import registry


class Args(serializers.Serializer):
    n = serializers.IntegerField(min_value=0)


@pytest.fixture
def demo_type():
    @registry.task_type("test.registry", args=Args, timeout=7, max_retries=2)
    def func(ctx, n):
        """Doubles n."""
        return n * 2

    yield registry.get_type("test.registry")
    registry.unregister("test.registry")


def test_a_registered_type_keeps_its_defaults_and_docstring(demo_type):
    assert demo_type.timeout == 7
    assert demo_type.max_retries == 2
    assert demo_type.description == "Doubles n."
    assert demo_type in registry.all_types()


def test_arguments_are_validated_by_the_types_serializer(demo_type):
    assert demo_type.validate_args({"n": "3"}) == {"n": 3}
    with pytest.raises(serializers.ValidationError) as error:
        demo_type.validate_args({"n": -1})
    assert "n" in error.value.detail["args"]


def test_unknown_arguments_are_refused(demo_type):
    with pytest.raises(serializers.ValidationError) as error:
        demo_type.validate_args({"n": 1, "cmd": "ls"})
    assert error.value.detail["args"] == {"cmd": ["Unknown argument."]}


def test_a_name_cannot_be_taken_twice(demo_type):
    with pytest.raises(ValueError):
        registry.task_type("test.registry")(lambda ctx: None)


@pytest.mark.parametrize("name", ["os.system", "tasks.worker.run_task", None, 3, ["demo"]])
def test_lookup_never_imports_anything(name):
    assert registry.get_type(name) is None


def test_types_of_other_apps_are_discovered():
    assert registry.get_type("test.flaky") is not None
    assert {"demo", "primes", "wordcount"} <= {t.name for t in registry.all_types()}


def test_a_type_waits_in_the_default_queue_without_limits_unless_it_says(demo_type):
    assert (demo_type.queue, demo_type.concurrency, demo_type.key_concurrency) == (
        "default",
        None,
        None,
    )
    assert demo_type.is_limited is False
    limited = registry.get_type("test.limited")
    assert (limited.concurrency, limited.is_limited) == (1, True)
    assert registry.get_type("test.keyed").is_limited is True
    assert registry.get_type("test.reports").queue == "reports"


def test_the_queues_in_use_are_those_of_the_registered_types():
    assert registry.queue_names() == sorted({t.queue for t in registry.all_types()})
    assert {"default", "reports"} <= set(registry.queue_names())


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"concurrency": -1},
        {"concurrency": 1.5},
        {"key_concurrency": 0},
        {"queue": ""},
        {"queue": "has space"},
        {"queue": "x" * 101},
        {"queue": None},
    ],
)
def test_bad_queue_or_limit_options_are_refused_when_registering(options):
    with pytest.raises(ValueError):
        registry.task_type("test.bad_options", **options)(lambda ctx: None)

    assert registry.get_type("test.bad_options") is None
