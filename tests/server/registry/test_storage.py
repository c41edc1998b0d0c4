"""The storage backends' promises, on a directory and on S3 (moto on loopback): conditional writes,
groups that appear whole and are never overwritten, listings that skip what is incomplete."""

from __future__ import annotations

from regserve.server.registry.disk import ModelRegistry
from tests.server.registry.conftest import raw_write


def _storage(location):
    return ModelRegistry(location).storage


def test_create_writes_only_where_nothing_is(location):
    storage = _storage(location)
    assert storage.read("models/m/state.json") is None
    assert storage.create("models/m/state.json", b"first")
    assert not storage.create("models/m/state.json", b"second")
    assert storage.read("models/m/state.json").data == b"first"


def test_replace_writes_only_over_the_bytes_it_was_given_the_tag_of(location):
    storage = _storage(location)
    storage.create("models/m/state.json", b"one")
    one = storage.read("models/m/state.json")
    assert storage.replace("models/m/state.json", b"two", one.etag)
    two = storage.read("models/m/state.json")
    assert two.data == b"two" and two.etag != one.etag
    assert not storage.replace("models/m/state.json", b"three", one.etag)  # a stale tag loses
    assert storage.read("models/m/state.json") == two
    assert not storage.replace("models/m/absent.json", b"x", one.etag)
    assert storage.read("models/m/absent.json") is None


def test_a_published_group_is_listed_whole_and_never_overwritten(location):
    storage = _storage(location)
    assert storage.publish("models/m/versions/v1", {"weights.npz": b"w", "metadata.json": b"{}"})
    assert storage.published("models/m/versions") == {"v1": frozenset({"weights.npz", "metadata.json"})}
    assert not storage.publish("models/m/versions/v1", {"weights.npz": b"other", "metadata.json": b"[]"})
    assert storage.read("models/m/versions/v1/weights.npz").data == b"w"
    assert storage.children("models") == ["m"]
    storage.unpublish("models/m/versions/v1", frozenset({"weights.npz", "metadata.json"}))
    assert storage.published("models/m/versions") == {}
    assert [k for k in storage.tags("models") if "/v1/" in k] == []


def test_objects_without_their_marker_are_no_group(s3_url):
    registry = ModelRegistry(s3_url)
    raw_write(registry, "models/m/versions/v1/weights.npz", b"w")
    raw_write(registry, "models/m/versions/v1/metadata.json", b"{}")
    assert registry.storage.published("models/m/versions") == {}
    assert registry.storage.children("models/m/versions") == ["v1"]  # still counted when numbers are given
