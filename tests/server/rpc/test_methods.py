"""The method table: one entry per RPC of the contract, and policies that hold together."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from regserve.server.edge import auth
from regserve.server.rpc.methods import METHODS, OPEN_METHODS, OPEN_SERVICES, SERVICES, Pool, Role, check_methods


def _descriptors():
    return {f"/{service.full_name}/{method.name}": method for service in SERVICES for method in service.methods}


def test_every_method_of_the_contract_has_exactly_one_entry():
    assert set(METHODS) == set(_descriptors())
    check_methods()


def test_a_method_without_an_entry_stops_the_start_up_check():
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    with pytest.raises(RuntimeError, match=r"no entry for \['/grpc.health.v1.Health/Check'"):
        check_methods((*SERVICES, health))


def test_an_entry_for_no_method_stops_the_start_up_check():
    with pytest.raises(RuntimeError, match="entries for no method.*ModelService/GetStatus"):
        check_methods(SERVICES[:1])


def test_methods_that_change_the_registry_need_the_admin_role():
    for name, method in METHODS.items():
        if method.changes_registry or method.trains:
            assert method.role is Role.ADMIN, name
            assert not auth.role_allows(auth.PREDICT, name), name
        assert auth.role_allows(auth.ADMIN, name), name
    assert auth.role_allows(auth.PREDICT, "/regserve.v1.RegressionService/Predict")
    assert not auth.role_allows(auth.PREDICT, "/regserve.v1.RegressionService/Unknown")


def test_methods_answered_inline_or_on_the_predict_threads_are_unary_reads():
    descriptors = _descriptors()
    for name, method in METHODS.items():
        if method.inline or method.pool is Pool.PREDICT:
            descriptor = descriptors[name]
            assert not descriptor.client_streaming and not descriptor.server_streaming, name
            assert not method.changes_registry, name


def test_the_open_methods_table_matches_health_and_reflection():
    declared = {f"/{service.full_name}/{method.name}" for service in OPEN_SERVICES for method in service.methods}
    assert set(OPEN_METHODS) == declared
    assert not set(OPEN_METHODS) & set(METHODS)
    with pytest.raises(RuntimeError, match=r"entries for no method \['/grpc.reflection"):
        check_methods(SERVICES, OPEN_SERVICES[:1])


def test_no_stream_shares_threads_with_health_the_registry_or_predict():
    """A stream holds its thread while open: streams run only on pools no probe or registry call needs."""
    descriptors = {
        f"/{service.full_name}/{method.name}": method
        for service in (*SERVICES, *OPEN_SERVICES)
        for method in service.methods
    }
    pools = {name: method.pool for name, method in METHODS.items()} | dict(OPEN_METHODS)
    for name, pool in pools.items():
        if descriptors[name].client_streaming:
            assert pool in (Pool.SERVER, Pool.TRAIN, Pool.REFLECTION), name
    assert {pools[name] for name in pools if name.startswith("/regserve.v1.ModelService/")} == {Pool.ADMIN}
    assert {pools[name] for name in pools if name.startswith("/grpc.health.v1.Health/")} == {Pool.HEALTH}
    assert pools["/regserve.v1.RegressionService/Train"] is Pool.TRAIN
    # Each pool has a purpose: no member of Pool is left without a method.
    assert set(pools.values()) == set(Pool)
