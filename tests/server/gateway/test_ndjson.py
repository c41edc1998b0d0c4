"""NDJSON bodies are split line by line in linear time; a line over the limit is refused at once."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from regserve.server.config import MIB
from regserve.server.gateway.app import GatewayLimits
from regserve.server.gateway.errors import GatewayError
from regserve.server.gateway.ndjson import ndjson_lines
from tests.conftest import start_server
from tests.server.gateway.helpers import MODES, running_gateway


def _lines(chunks: list[bytes], limit: int) -> list[bytes]:
    async def arrive():
        for piece in chunks:
            yield piece

    async def collect():
        return [line async for line in ndjson_lines(arrive(), limit)]

    return asyncio.run(collect())


def test_lines_cut_anywhere_across_chunks_come_out_whole():
    body = b'{"a": 1}\n\n{"b": [1, 2, 3]}\n{"c": "x"}'
    for size in (1, 2, 3, 7, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert _lines(chunks, 100) == [b'{"a": 1}', b"", b'{"b": [1, 2, 3]}', b'{"c": "x"}']
    assert _lines([b"x\n", b"", b"y\n"], 100) == [b"x", b"y"]


def test_a_line_over_the_limit_is_refused_as_soon_as_it_passes_it():
    seen = []

    async def arrive():
        yield b"short\n"
        for _ in range(100):
            seen.append(1)
            yield b"x" * 10

    async def collect():
        return [line async for line in ndjson_lines(arrive(), 35)]

    with pytest.raises(GatewayError) as refused:
        asyncio.run(collect())
    assert refused.value.http_status == 413 and len(seen) == 4  # refused at 40 bytes, not at the end
    assert _lines([b"x" * 35 + b"\n"], 35) == [b"x" * 35]


def test_a_20_mb_line_in_small_chunks_is_split_in_linear_time():
    """Joining the line's pieces once, not re-scanning a growing buffer per chunk."""
    piece = b"7" * 4096
    chunks = [piece] * (20 * MIB // len(piece)) + [b"\n", b"{}\n"]
    started = time.perf_counter()
    lines = _lines(chunks, 64 * MIB)
    assert time.perf_counter() - started < 5  # re-scanning would copy about 50 GB here
    assert [len(line) for line in lines] == [20 * MIB, 2]


@pytest.mark.parametrize("mode", MODES)
def test_a_20_mb_ndjson_line_is_refused_quickly_over_http(tmp_path, mode):
    small = start_server(tmp_path / "models", max_message_mb=4)
    try:
        local = small.local if mode == "in_process" else None
        limits = GatewayLimits(max_body_bytes=4 * MIB)
        with running_gateway(f"127.0.0.1:{small.port}", local, limits=limits) as http:

            def body():
                yield json.dumps({"spec": {"model": "big", "kind": "MODEL_KIND_LINEAR"}}).encode() + b"\n"
                yield b'{"chunk": {"features": {"values": ['
                for _ in range(20 * MIB // 65536):
                    yield b"1," * 32768

            started = time.monotonic()
            answer = http.post("/v1/models:train", content=body(), headers={"content-type": "application/x-ndjson"})
            assert time.monotonic() - started < 10
            assert answer.status_code == 413, answer.text
            assert answer.json()["details"][0]["reason"] == "BODY_TOO_LARGE"
            assert answer.json()["message"].startswith("line 2: an NDJSON line is larger than")
            assert http.get("/v1/models").json().get("models", []) == []
    finally:
        small.stop(0)
