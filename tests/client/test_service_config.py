"""The default service config and the channel options built around it."""

from __future__ import annotations

import json

import pytest

from regserve.client import default_service_config
from regserve.client._channel import channel_options
from regserve.client._service_config import service_config_json
from regserve.server.rpc.methods import METHODS


def retried_names(config) -> set[str]:
    return {f"/{name['service']}/{name['method']}" for entry in config["methodConfig"] for name in entry["name"]}


def test_the_default_balances_round_robin_and_retries_only_on_unavailable():
    config = default_service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (entry,) = config["methodConfig"]
    policy = entry["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
    # gRPC caps maxAttempts at 5; a larger value would be silently lowered.
    assert 2 <= policy["maxAttempts"] <= 5
    assert policy["backoffMultiplier"] > 1


def test_exactly_the_calls_that_change_nothing_are_retried():
    # The clients call regserve.v1 only; the server's table also holds the services other clients call.
    reads = {
        name
        for name, method in METHODS.items()
        if name.startswith("/regserve.v1.") and not (method.changes_registry or method.trains)
    }
    assert retried_names(default_service_config()) == reads | {"/grpc.health.v1.Health/Check"}


def test_each_call_gets_a_copy_of_the_default():
    config = default_service_config()
    config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"].append("INTERNAL")
    config["loadBalancingConfig"].clear()
    fresh = default_service_config()["methodConfig"][0]["retryPolicy"]
    assert fresh["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
    assert default_service_config()["loadBalancingConfig"] == [{"round_robin": {}}]


def test_a_service_config_is_a_mapping_or_json_text():
    assert json.loads(service_config_json(None)) == default_service_config()
    own = {"loadBalancingConfig": [{"pick_first": {}}]}
    assert json.loads(service_config_json(own)) == own
    assert json.loads(service_config_json(json.dumps(own))) == own
    assert json.loads(service_config_json("{}")) == {}
    with pytest.raises(ValueError, match="not JSON"):
        service_config_json("{round_robin}")
    with pytest.raises(ValueError, match="JSON object"):
        service_config_json("[]")


def test_channel_options_enable_retries_and_let_the_caller_override():
    defaults = dict(channel_options())
    assert defaults["grpc.enable_retries"] == 1
    assert defaults["grpc.service_config_disable_resolution"] == 1
    assert defaults["grpc.max_send_message_length"] == 64 * 1024 * 1024
    assert json.loads(defaults["grpc.service_config"]) == default_service_config()
    given = dict(channel_options([("grpc.enable_retries", 0), ("grpc.max_send_message_length", 10)], {}, 8))
    assert given["grpc.enable_retries"] == 0 and given["grpc.max_send_message_length"] == 10
    assert given["grpc.max_receive_message_length"] == 8 * 1024 * 1024
    assert json.loads(given["grpc.service_config"]) == {}
    assert [key for key, _ in channel_options()].count("grpc.service_config") == 1


def test_the_service_config_is_never_a_channel_option():
    with pytest.raises(ValueError, match="service_config"):
        channel_options([("grpc.service_config", "{}")])
