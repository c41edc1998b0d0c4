"""Several replicas sharing one registry: compare-and-swap under real races, versions that appear whole,
replicas that follow each other's changes; on a directory and on S3 (moto's server on loopback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from regserve.server.cli import main
from regserve.server.config import Settings
from regserve.server.errors import AlreadyExists, NotFound, Unavailable, UnknownVersion
from regserve.server.models.estimator import LinearModel
from regserve.server.registry import disk
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.storage import ObjectStorage, check_location
from regserve.server.registry.store import ModelStore
from regserve.v1 import model_service_pb2 as mpb
from regserve.v1 import model_service_pb2_grpc, regression_service_pb2_grpc, types_pb2
from regserve.v1 import regression_service_pb2 as rpb
from tests.conftest import start_server
from tests.server.registry.conftest import raw_delete, raw_keys, raw_write

ROUNDS = 50
WAIT_SECONDS = 60  # generous: waiting ends as soon as the behaviour is seen


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"coef": rng.normal(size=(3,)), "intercept": np.array(rng.normal())}


def _estimator(seed: int) -> LinearModel:
    rng = np.random.default_rng(seed)
    return LinearModel("linear", rng.normal(size=(1, 3)), rng.normal(size=(1,)))


def _wait_for(condition, what: str) -> float:
    """Seconds until ``condition()`` held; fails after WAIT_SECONDS."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < WAIT_SECONDS, f"never saw {what}"
        time.sleep(0.02)
    return time.monotonic() - start


# ------------------------------------------------------------------ compare-and-swap


def test_two_replicas_promoting_at_the_same_instant_lose_no_change(location):
    first, second = ModelRegistry(location), ModelRegistry(location)
    for seed in range(3):
        first.create_version("m", _arrays(seed), {})
    first.promote("m", "v1")
    barrier = threading.Barrier(2)

    def promote(registry: ModelRegistry, version: str) -> None:
        barrier.wait(timeout=WAIT_SECONDS)
        registry.promote("m", version, reason=f"to {version}")

    with ThreadPoolExecutor(2) as pool:
        for _ in range(ROUNDS):
            before = first.read_state("m")
            a, b = [v for v in ("v1", "v2", "v3") if v != before.serving]
            for future in [pool.submit(promote, first, a), pool.submit(promote, second, b)]:
                future.result(timeout=WAIT_SECONDS)
            after = second.read_state("m")
            # Both changes are there, one after the other, and the state is the result of the later one.
            assert after.generation == before.generation + 2
            last_two = after.history[-2:]
            assert {h.to_version for h in last_two} == {a, b}
            assert [h.action for h in last_two] == ["promote", "promote"]
            assert last_two[0].from_version == before.serving
            assert last_two[1].from_version == last_two[0].to_version
            assert after.serving == last_two[1].to_version
            assert after.previous[-1] == last_two[0].to_version
            assert before.serving in after.previous


def test_two_replicas_creating_versions_at_once_get_distinct_numbers(location):
    registries = [ModelRegistry(location), ModelRegistry(location)]
    barrier = threading.Barrier(2)

    def create(k: int) -> list[str]:
        barrier.wait(timeout=WAIT_SECONDS)
        seeds = [100 * k + i for i in range(6)]
        return [registries[k].create_version("shared", _arrays(seed), {"seed": seed}).version for seed in seeds]

    with ThreadPoolExecutor(2) as pool:
        made = [v for future in [pool.submit(create, k) for k in range(2)] for v in future.result(timeout=WAIT_SECONDS)]
    assert sorted(made, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 13)]
    versions = registries[0].list_versions("shared")
    assert [m.version for m in versions] == [f"v{i}" for i in range(1, 13)]
    for metadata in versions:
        arrays, _ = registries[1].load_version("shared", metadata.version)
        np.testing.assert_array_equal(arrays["coef"], _arrays(metadata.raw["seed"])["coef"])
    assert registries[1].read_state("shared").last_version == 12


def test_replicas_creating_one_new_model_at_once_store_exactly_one_version(location):
    registries = [ModelRegistry(location) for _ in range(4)]
    barrier = threading.Barrier(len(registries))

    def create(k: int) -> str:
        barrier.wait(timeout=WAIT_SECONDS)
        try:
            return registries[k].create_version("fresh", _arrays(k), {"seed": k}, only_if_new_model=True).version
        except AlreadyExists as exc:
            assert exc.reason == "MODEL_EXISTS" and exc.metadata == {"model": "fresh"}
            return "refused"

    with ThreadPoolExecutor(len(registries)) as pool:
        outcomes = [f.result(timeout=WAIT_SECONDS) for f in [pool.submit(create, k) for k in range(len(registries))]]
    assert sorted(outcomes) == ["refused"] * (len(registries) - 1) + ["v1"]
    (stored,) = registries[0].list_versions("fresh")
    arrays, _ = registries[0].load_version("fresh", "v1")
    np.testing.assert_array_equal(arrays["coef"], _arrays(stored.raw["seed"])["coef"])
    assert registries[0].read_state("fresh").last_version == 1
    # Once the model exists, the flag refuses even after its only version is gone; plain creation goes on.
    registries[1].delete_version("fresh", "v1")
    with pytest.raises(AlreadyExists):
        registries[2].create_version("fresh", _arrays(9), {}, only_if_new_model=True)
    assert registries[3].create_version("fresh", _arrays(9), {}).version == "v2"


class _Interfering:
    """A backend through which every compare-and-swap loses to a real write made just before it."""

    def __init__(self, storage, rival: ModelRegistry) -> None:
        self._storage, self._rival, self.writes = storage, rival, 0

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def replace(self, key: str, data: bytes, etag: str) -> bool:
        self.writes += 1
        self._rival.freeze("m", "v3" if self.writes % 2 else "v2", reason="rival")
        self._rival.unfreeze("m", "v3" if self.writes % 2 else "v2", reason="rival")
        return self._storage.replace(key, data, etag)


def test_a_change_that_keeps_losing_its_race_is_refused_and_loses_nothing(location, monkeypatch):
    rival = ModelRegistry(location)
    for seed in range(3):
        rival.create_version("m", _arrays(seed), {})
    rival.promote("m", "v1")
    monkeypatch.setattr(disk, "_BACKOFF_SECONDS", 0.0)
    interfering = _Interfering(ModelRegistry(location).storage, rival)
    loser = ModelRegistry(location, storage=interfering)
    before = rival.read_state("m")
    with pytest.raises(Unavailable) as info:
        loser.promote("m", "v2")
    assert info.value.reason == "STATE_CONFLICT" and info.value.metadata == {"model": "m"}
    assert interfering.writes == disk.CAS_ATTEMPTS
    after = rival.read_state("m")
    assert after.serving == "v1"
    assert after.generation == before.generation + 2 * disk.CAS_ATTEMPTS
    assert [h.action for h in after.history[-2:]] == ["freeze", "unfreeze"]


def test_a_version_deleted_by_one_replica_cannot_be_promoted_by_another(location):
    first, second = ModelRegistry(location), ModelRegistry(location)
    for seed in range(2):
        first.create_version("m", _arrays(seed), {})
    first.promote("m", "v1")
    first.delete_version("m", "v2")
    with pytest.raises(UnknownVersion):
        second.promote("m", "v2")
    assert second.create_version("m", _arrays(7), {}).version == "v3"


# ------------------------------------------------------------------ versions on object storage


def test_a_version_without_its_completion_marker_is_not_listed_and_its_number_is_not_reused(s3_url):
    registry = ModelRegistry(s3_url)
    registry.create_version("m", _arrays(0), {})
    # What a writer that died after its files and before its marker leaves behind.
    raw_write(registry, "models/m/versions/v2/weights.npz", b"half")
    raw_write(registry, "models/m/versions/v2/metadata.json", b"{}")
    assert [m.version for m in registry.list_versions("m")] == ["v1"]
    assert registry.scan_versions("m")[1] == {}
    with pytest.raises(UnknownVersion):
        registry.describe("m", "v2")
    with pytest.raises(UnknownVersion):
        registry.promote("m", "v2")
    assert registry.create_version("m", _arrays(3), {}).version == "v3"
    # Taking a marker away takes its version out of every listing.
    raw_delete(registry, "models/m/versions/v1/_complete")
    assert [m.version for m in registry.list_versions("m")] == ["v3"]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda r: raw_delete(r, "models/m/versions/v1/metadata.json"), "INCOMPLETE_VERSION"),
        (lambda r: raw_delete(r, "models/m/versions/v1/weights.npz"), "INCOMPLETE_VERSION"),
        (lambda r: raw_write(r, "models/m/versions/v1/metadata.json", b"{not json"), "CORRUPT_METADATA"),
    ],
    ids=["metadata missing", "weights missing", "metadata not json"],
)
def test_a_complete_version_damaged_since_is_reported_not_dropped(s3_url, damage, reason):
    registry = ModelRegistry(s3_url)
    for seed in range(2):
        registry.create_version("m", _arrays(seed), {})
    damage(registry)
    usable, damaged = registry.scan_versions("m")
    assert [m.version for m in usable] == ["v2"]
    assert damaged["v1"].reason == reason
    with pytest.raises(NotFound) as info:
        registry.promote("m", "v1")
    assert info.value.reason == reason
    registry.delete_version("m", "v1", "damaged")  # how an operator clears it
    assert registry.scan_versions("m")[1] == {}


def test_deleting_a_version_leaves_no_object_of_it(s3_url):
    registry = ModelRegistry(s3_url)
    for seed in range(2):
        registry.create_version("m", _arrays(seed), {})
    registry.promote("m", "v1")
    assert "models/m/versions/v2/_complete" in raw_keys(registry)
    registry.delete_version("m", "v2")
    assert [k for k in raw_keys(registry) if "/v2/" in k] == []
    assert registry.create_version("m", _arrays(5), {}).version == "v3"


def test_a_poll_is_one_listing_and_sees_another_replicas_change(s3_url):
    writer, reader = ModelRegistry(s3_url), ModelRegistry(s3_url)
    writer.create_version("m", _arrays(0), {})
    token = reader.snapshot_token()
    assert reader.snapshot_token() == token
    writer.promote("m", "v1")
    assert reader.snapshot_token() != token
    token = reader.snapshot_token()
    writer.create_version("m", _arrays(1), {})
    assert reader.snapshot_token() != token


@pytest.mark.parametrize(
    "location, message",
    [
        ("gs://bucket/prefix", "supports plain paths, file://, s3:// only"),
        ("memory://x", "supports plain paths, file://, s3:// only"),
        ("s3:///prefix", "names no bucket"),
    ],
)
def test_a_registry_url_that_cannot_be_shared_safely_is_refused_at_start(location, message):
    with pytest.raises(ValueError, match=message):
        check_location(location)
    with pytest.raises(ValueError, match=message):
        Settings(model_dir=location).check()


@pytest.mark.parametrize("location", ["gs://bucket/prefix", "s3://regserve-no-such-bucket/registry"])
def test_serve_on_a_registry_it_cannot_use_stops_at_start_with_status_1(location, s3_endpoint, capsys):
    assert main(["serve", "--port", "0", "--no-demo-models", "--model-dir", location]) == 1
    err = capsys.readouterr().err
    assert ("s3://" in err and "only" in err) if location.startswith("gs") else "does not exist" in err


def test_settings_hold_the_location_as_text(tmp_path):
    assert Settings(model_dir=tmp_path).model_dir == str(tmp_path)
    assert Settings(model_dir="s3://bucket/prefix").model_dir == "s3://bucket/prefix"


def test_a_file_url_is_a_directory(tmp_path):
    registry = ModelRegistry(f"file://{tmp_path}/reg")
    registry.create_version("m", _arrays(0), {})
    assert os.path.isfile(tmp_path / "reg" / "models" / "m" / "versions" / "v1" / "weights.npz")
    assert ModelRegistry(tmp_path / "reg").list_models() == ["m"]


def test_a_missing_bucket_is_unavailable(s3_endpoint):
    with pytest.raises(Unavailable) as info:
        ModelRegistry("s3://regserve-no-such-bucket/registry")
    assert info.value.reason == "REGISTRY_UNAVAILABLE"


# ------------------------------------------------------------------ replicas converge


def test_a_store_follows_a_promotion_made_through_another(s3_url):
    ours, theirs = ModelStore(ModelRegistry(s3_url)), ModelStore(ModelRegistry(s3_url), poll_interval=0.1)
    ours.load_all()
    for seed in range(2):
        ours.add_version("m", _estimator(seed), {}, promote=seed == 0)
    theirs.load_all()
    assert theirs.resolve("m").version == "v1"
    theirs.start()
    try:
        ours.promote("m", "v2", "better")
        _wait_for(lambda: theirs.resolve("m").version == "v2", "the other store route to v2")
        generation = ours.read_state("m").generation
        assert theirs.report("m").served_generation == generation
    finally:
        theirs.stop()


def _predict_version(channel: grpc.Channel) -> str:
    stub = regression_service_pb2_grpc.RegressionServiceStub(channel)
    request = rpb.PredictRequest(model="m", inputs=types_pb2.Matrix(num_columns=3, values=[0.5, -1.0, 2.0]))
    return stub.Predict(request, timeout=30).version


def _served_generation(channel: grpc.Channel) -> tuple[int, int, str]:
    answer = model_service_pb2_grpc.ModelServiceStub(channel).GetStatus(mpb.GetStatusRequest(model="m"), timeout=30)
    status = answer.models[0]
    return status.served_generation, status.state.generation, answer.replica


def test_two_servers_on_one_s3_registry_converge_and_say_which_generation_they_serve(s3_url):
    seeding = ModelStore(ModelRegistry(s3_url))
    seeding.load_all()
    for seed in range(2):
        seeding.add_version("m", _estimator(seed), {}, promote=seed == 0)
    first = start_server(s3_url, poll_interval=0.2)
    second = start_server(s3_url, poll_interval=0.2)
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{first.port}") as one,
            grpc.insecure_channel(f"127.0.0.1:{second.port}") as two,
        ):
            assert _predict_version(one) == _predict_version(two) == "v1"
            served, stored, replica = _served_generation(two)
            assert served == stored > 0 and replica == f"{os.uname().nodename}:{os.getpid()}"
            admin = model_service_pb2_grpc.ModelServiceStub(one)
            request = mpb.PromoteVersionRequest(model="m", version="v2", reason="through one")
            promoted = admin.PromoteVersion(request, timeout=30)
            generation = promoted.state.generation
            assert _served_generation(one)[0] == generation  # the replica that made the change routes by it at once
            seconds = _wait_for(lambda: _served_generation(two)[0] == generation, "the second server take v2")
            assert _predict_version(two) == "v2"
            print(f"promotion reached the second replica in {seconds:.2f} s (poll interval 0.2 s)")
    finally:
        first.stop(0)
        second.stop(0)


@pytest.mark.slow
def test_regserve_serve_runs_on_an_s3_registry_from_the_aws_variables(s3_url):
    """`regserve serve --model-dir s3://...` in a process of its own, as replicas are run."""
    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--model-dir", s3_url, "--no-access-log", "--poll-interval", "0.2"]
    process = subprocess.Popen(command, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        _wait_for(lambda: any("regserve listening on" in line for line in lines) or process.poll() is not None, "start")
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", "".join(lines)).group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            answer = stub.GetStatus(mpb.GetStatusRequest(model="diabetes"), timeout=30)
        status = answer.models[0]
        assert status.state.serving_version == "v1"
        assert status.served_generation == status.state.generation > 0
        assert answer.replica.endswith(f":{process.pid}")
        registry = ModelRegistry(s3_url)
        assert isinstance(registry.storage, ObjectStorage)
        keys = raw_keys(registry, "models/diabetes")
        assert "models/diabetes/versions/v1/_complete" in keys and "models/diabetes/state.json" in keys
    finally:
        process.terminate()
        process.wait(timeout=WAIT_SECONDS)
        reader.join(timeout=WAIT_SECONDS)
    assert process.returncode == 0, "".join(lines)[-2000:]
