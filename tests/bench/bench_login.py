"""Login benchmark: /hub/health latency while many users log in at once, with the stock
NativeAuthenticator (bcrypt inside the event loop) and Codeyard's (bcrypt in a thread pool),
measured in the same run on the same machine.

For each authenticator it starts a minimal Hub (no proxy, no Docker) with open sign-up,
signs up `--users` users, samples /hub/health while idle, then again while all of them log
in at once through the login form. It prints p50/p95/max per phase and the ratio of the
stock p95 to Codeyard's p95 during logins.

Usage: .venv/bin/python tests/bench/bench_login.py [--users 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

# A script's own folder is on sys.path, tests/ is not: add it for `support`, as pytest's
# `pythonpath` does for the suites.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results import record
from support.browser import Browser
from support.hub import HubProcess

PASSWORD = "correct-horse-battery-7"
AUTHENTICATORS = {
    "stock": "nativeauthenticator.NativeAuthenticator",
    "codeyard": "codeyard.hubauth.native.CodeyardNativeAuthenticator",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": 1000 * statistics.median(values),
        "p95_ms": 1000 * percentile(values, 0.95),
        "max_ms": 1000 * max(values),
    }


def health_latency(url: str, until: Any = None, samples: int = 0) -> list[float]:
    """Time GET /hub/health again and again: `samples` times, or until `until()` is true."""
    out: list[float] = []
    session = requests.Session()
    while (until is None and len(out) < samples) or (until is not None and not until()):
        t0 = time.perf_counter()
        session.get(url, timeout=60).raise_for_status()
        out.append(time.perf_counter() - t0)
        time.sleep(0.01)
    return out


def measure(kind: str, users: int) -> dict[str, Any]:
    site = (
        f'c.JupyterHub.authenticator_class = "{AUTHENTICATORS[kind]}"\n'
        "c.Authenticator.allow_all = True\n"
        "c.NativeAuthenticator.open_signup = True\n"
        # land on the home page after login: no single-user server is started
        'c.JupyterHub.default_url = "/hub/home"\n'
    )
    with tempfile.TemporaryDirectory(prefix=f"bench-login-{kind}-") as state:
        hub = HubProcess(state_dir=Path(state), project=False, site_config=site)
        hub.start()
        try:
            base = f"http://{hub.hub_ip}:{hub.hub_port}"
            names = [f"{kind}{i}" for i in range(users)]
            for name in names:
                Browser(base).signup(name, PASSWORD).raise_for_status()
            health = f"{base}/hub/health"
            idle = health_latency(health, samples=50)

            def login(name: str) -> bool:
                return Browser(base).login(name, PASSWORD).url.endswith("/hub/home")

            with ThreadPoolExecutor(users) as pool:
                t0 = time.perf_counter()
                logins = [pool.submit(login, name) for name in names]
                during = health_latency(health, until=lambda: all(f.done() for f in logins))
                ok = sum(f.result() for f in logins)
                wall = time.perf_counter() - t0
        finally:
            hub.stop()
    return {
        "authenticator": AUTHENTICATORS[kind],
        "logins_ok": ok,
        "logins_wall_s": wall,
        "idle": summary(idle),
        "during_logins": summary(during),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--json", help="write the raw numbers here")
    args = parser.parse_args()
    results = {kind: measure(kind, args.users) for kind in AUTHENTICATORS}
    print(f"/hub/health latency, {args.users} concurrent logins")
    print(f"{'authenticator':10} {'phase':14} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for kind, r in results.items():
        for phase in ("idle", "during_logins"):
            s = r[phase]
            print(
                f"{kind:10} {phase:14} {s['n']:>5} {s['p50_ms']:>9.1f} {s['p95_ms']:>9.1f}"
                f" {s['max_ms']:>9.1f}"
            )
        print(f"{kind:10} logins ok {r['logins_ok']}/{args.users} in {r['logins_wall_s']:.1f} s")
    ratio = results["stock"]["during_logins"]["p95_ms"] / max(
        results["codeyard"]["during_logins"]["p95_ms"], 1e-6
    )
    results["p95_ratio_stock_over_codeyard"] = ratio  # type: ignore[assignment]
    print(f"p95 during logins, stock / codeyard: {ratio:.1f}x")
    stock, ours = results["stock"], results["codeyard"]
    all_in = stock["logins_ok"] == ours["logins_ok"] == args.users
    record(
        "bench_login",
        f"/hub/health p95 during {args.users} logins < stock's",
        ours["during_logins"]["p95_ms"],
        "ms",
        stock["during_logins"]["p95_ms"],
        "stock NativeAuthenticator",
        all_in and ours["during_logins"]["p95_ms"] < stock["during_logins"]["p95_ms"],
        f"idle p95 {ours['idle']['p95_ms']:.0f} vs {stock['idle']['p95_ms']:.0f} ms; "
        f"max {ours['during_logins']['max_ms']:.0f} vs {stock['during_logins']['max_ms']:.0f} ms; "
        f"logins ok {ours['logins_ok']}/{stock['logins_ok']} of {args.users}",
    )
    record(
        "bench_login",
        f"{args.users} concurrent logins, wall",
        ours["logins_wall_s"],
        "s",
        stock["logins_wall_s"],
        "stock NativeAuthenticator",
        None,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
