"""Gateway overhead: time to first token (TTFT) and total time, through the gateway vs direct
to vLLM, in the same run, at 1 and at 16 concurrent streams.

    python tests/bench/bench_gateway.py [--rounds N] [--max-tokens N]

Starts vLLM (hub_config/vllm/serve.sh) and a JupyterHub with the gateway service unless
CODEYARD_TEST_VLLM_URL/CODEYARD_TEST_VLLM_KEY_FILE point at a running vLLM. Direct and
gateway requests alternate round by round, so drift in the model server's speed affects both
alike. Target: p50 TTFT overhead <= 5 ms. Each of the 16 streams belongs to its own user, as
in real use (per-user limits apply).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
import llm_stack

PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]


async def one_stream(
    client: httpx.AsyncClient, url: str, token: str, max_tokens: int
) -> tuple[float, float]:
    body = {
        "model": llm_stack.MODEL,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {token}"}
    start = time.perf_counter()
    ttft = None
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if ttft is None and line.startswith("data:") and '"content"' in line:
                ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    return (ttft if ttft is not None else total), total


async def run(
    vllm: llm_stack.Vllm, gateway: str, tokens: list[str], rounds: int, max_tokens: int
) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        # Warm up both paths (and the gateway's token cache).
        for i, tok in enumerate(tokens):
            await one_stream(client, gateway, tok, 2)
            if i == 0:
                await one_stream(client, vllm.url, vllm.key, 2)
        head = ("streams", "path", "n", "TTFT p50", "TTFT p90", "total p50")
        print("{:>7} {:>8} {:>4} {:>10} {:>10} {:>10}".format(*head))
        for concurrency in (1, 16):
            results: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
            n_rounds = rounds if concurrency == 1 else max(2, rounds // 8)
            for _ in range(n_rounds):
                for path in ("direct", "gateway"):
                    jobs = [
                        one_stream(
                            client,
                            vllm.url if path == "direct" else gateway,
                            vllm.key if path == "direct" else tokens[i],
                            max_tokens,
                        )
                        for i in range(concurrency)
                    ]
                    results[path] += await asyncio.gather(*jobs)
            summary = {}
            for path, rows in results.items():
                ttfts = sorted(r[0] * 1000 for r in rows)
                totals = sorted(r[1] * 1000 for r in rows)
                p50, p90 = statistics.median(ttfts), ttfts[int(0.9 * (len(ttfts) - 1))]
                summary[path] = (p50, statistics.median(totals))
                print(
                    f"{concurrency:>7} {path:>8} {len(rows):>4} {p50:>8.1f}ms {p90:>8.1f}ms "
                    f"{statistics.median(totals):>8.1f}ms"
                )
            d, g = summary["direct"], summary["gateway"]
            print(
                f"{concurrency:>7}  ratio gateway/direct: TTFT {g[0] / d[0]:.3f}, total "
                f"{g[1] / d[1]:.3f}; p50 TTFT overhead {g[0] - d[0]:+.1f} ms "
                f"(target <= 5 ms), p50 total overhead {g[1] - d[1]:+.1f} ms"
            )


async def proxy_overhead(vllm: llm_stack.Vllm, gateway: str, tokens: list[str], n: int) -> None:
    """Round trips of GET /v1/models: no model compute, so the difference is the gateway's own
    cost (token check from cache, upstream connection, relay), free of sampling noise."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def rtt(url: str, token: str) -> float:
            start = time.perf_counter()
            r = await client.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
            return time.perf_counter() - start

        for concurrency in (1, 16):
            times: dict[str, list[float]] = {"direct": [], "gateway": []}
            for _ in range(max(2, n // concurrency)):
                for path in ("direct", "gateway"):
                    url = vllm.url if path == "direct" else gateway
                    jobs = [
                        rtt(url, vllm.key if path == "direct" else tokens[i])
                        for i in range(concurrency)
                    ]
                    times[path] += await asyncio.gather(*jobs)
            d = statistics.median(times["direct"]) * 1000
            g = statistics.median(times["gateway"]) * 1000
            print(
                f"{concurrency:>7} GET /v1/models p50: direct {d:.2f} ms, gateway {g:.2f} ms, "
                f"overhead {g - d:+.2f} ms (ratio {g / d:.2f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds at 1 stream (16: /8)")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "vllm").mkdir()
        (work / "hub").mkdir()
        started = time.monotonic()
        vllm = llm_stack.start_vllm(work / "vllm")
        print(f"vLLM ready in {time.monotonic() - started:.1f} s")
        hub = llm_stack.start_hub(work / "hub", vllm, {"codeyard-llm": []})
        try:
            tokens = [hub.user_token(f"bench{i}", ["custom:codeyard-llm"]) for i in range(16)]
            asyncio.run(proxy_overhead(vllm, hub.gateways["codeyard-llm"].url, tokens, 200))
            asyncio.run(
                run(vllm, hub.gateways["codeyard-llm"].url, tokens, args.rounds, args.max_tokens)
            )
            rows = [
                json.loads(line)
                for line in (work / "hub" / "codeyard-llm-audit.jsonl").read_text().splitlines()
            ]
            forward = [r["forward_ms"] for r in rows if r.get("forward_ms") is not None]
            print(
                f"gateway's own time before forwarding (audit, {len(forward)} calls): "
                f"p50 {statistics.median(forward):.2f} ms, max {max(forward):.2f} ms"
            )
        finally:
            hub.stop()
            vllm.stop()


if __name__ == "__main__":
    main()
