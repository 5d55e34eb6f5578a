"""The submit body's serializer shares its declared fields' parts between
instances (shallow copies, see StrictSerializer.get_fields): instances must
still validate independently, also when alive at the same time or in
several threads, and the class's own fields must never be bound."""

from concurrent.futures import ThreadPoolExecutor

from rest_framework import serializers

from tasks.api.serializers import StrictSerializer, TaskCreateSerializer


def test_two_live_instances_keep_their_own_values_and_errors():
    bad = TaskCreateSerializer(data={"timeout": 0, "args": []})
    good = TaskCreateSerializer(data={"type": "wordcount", "timeout": 5, "args": {"text": "a"}})
    assert good.is_valid(), good.errors
    assert not bad.is_valid()
    assert set(bad.errors) == {"timeout", "args"}
    assert "greater than or equal to 1" in str(bad.errors["timeout"][0])
    assert good.validated_data["timeout"] == 5
    assert good.validated_data["args"] == {"text": "a"}
    # Each instance's fields are bound to that instance, not to the other.
    assert bad.fields["timeout"].parent is bad
    assert good.fields["timeout"].parent is good
    assert bad.fields["timeout"] is not good.fields["timeout"]


def test_the_declared_fields_stay_unbound():
    TaskCreateSerializer(data={"type": "wordcount"}).is_valid()
    for name, field in TaskCreateSerializer._declared_fields.items():
        assert field.parent is None, name
        assert field.field_name is None, name


def test_threads_validating_at_once_do_not_see_each_others_data():
    def validate(i: int):
        serializer = TaskCreateSerializer(data={"priority": i % 201 - 100, "timeout": i % 50 + 1})
        assert serializer.is_valid(), serializer.errors
        return i, serializer.validated_data["priority"], serializer.validated_data["timeout"]

    with ThreadPoolExecutor(8) as pool:
        for i, priority, timeout in pool.map(validate, range(2000)):
            assert (priority, timeout) == (i % 201 - 100, i % 50 + 1)


def test_a_nested_serializer_is_still_copied_deeply():
    class Inner(serializers.Serializer):
        n = serializers.IntegerField(min_value=0)

    class Outer(StrictSerializer):
        inner = Inner()
        tags = serializers.ListField(child=serializers.CharField(max_length=3))

    first = Outer(data={"inner": {"n": -1}, "tags": []})
    second = Outer(data={"inner": {"n": 2}, "tags": []})
    assert first.fields["inner"] is not second.fields["inner"]
    assert first.fields["inner"].fields["n"] is not second.fields["inner"].fields["n"]
    assert not first.is_valid() and "inner" in first.errors
    assert second.is_valid(), second.errors
    assert not Outer(data={"inner": {"n": 1}, "tags": ["long"]}).is_valid()
    assert Outer(data={"inner": {"n": 1}, "tags": ["ok"]}).is_valid()
