"""Benchmark: secret redaction on crafted 2 MiB files against a plain 2 MiB Python file.

    python tests/bench/bench_redaction.py [--mib N] [--rounds N]

Redaction runs on every file a prompt quotes from, inside the workspace server, holding the
GIL; a crafted file must not stall it. Every pattern runs on RE2, so time should grow
linearly with size whatever the content: the figure printed for each crafted input is
time(crafted) / time(plain), both measured in this run on the same machine (median of the
rounds), and the growth from the same input built at half the size. A backtracking
pattern shows up as a growth near 4 (or a run that does not end); the hand-written
assignment pattern this replaced took 14.7 s on 16 KB of `a-`. Inputs packed with
candidate matches (every few bytes a JWT-shaped or `Bearer` token) cost more per byte than
code, since each candidate is checked in Python, but they still grow linearly.

The last rows time the whole context build (`ContextBuilder.build`: whole-file redaction,
then the cut into selection, surrounding lines, header and definitions) on the plain file
and on the mixed crafted one, for the same ratio through the real prompt path.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from codeyard.server_extension.llm.context import ContextBuilder
from codeyard.server_extension.llm.redaction import Redactor
from codeyard.server_extension.llm.tokens import TokenCounter
from codeyard.server_extension.paths import WorkspacePaths


def fill(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def plain_python(size: int) -> str:
    """Ordinary code: functions, classes, string literals, comments, a few settings."""
    parts: list[str] = []
    i = 0
    while sum(map(len, parts)) < size:
        parts.append(
            f'''

class Handler{i}(Base):
    """Serve items of kind {i} from the cache, falling back to the database."""

    timeout = {i % 60 + 1}
    url = "https://api.example.com/v1/items/{i}"

    def get(self, key: str, default: object = None) -> object:
        # The cache is warm after the first call; misses go to the database.
        value = self.cache.get(f"item:{{key}}:{i}")
        if value is None:
            value = self.db.query("SELECT * FROM items WHERE id = %s", (key,))
        return value or default


def helper_{i}(xs: list[int]) -> int:
    return sum(x * {i} for x in xs if x % 3 != 0)
'''
        )
        i += 1
    return "".join(parts)[:size]


def crafted(size: int) -> dict[str, str]:
    """Inputs built to make a backtracking pattern take quadratic (or worse) time."""
    b64 = base64.b64encode(os.urandom(48)).decode()
    body = "\n".join(fill(b64, 64) for _ in range(size // 65 + 1))
    kinds = {
        "a- run (the finding)": fill("a-", size),
        "password then = chain": "password" + fill("=", size - 8),
        "k=k=k= chain": fill("k=", size),
        "BEGIN lines, no END": fill("-----BEGIN RSA PRIVATE KEY-----\n", size),
        "BEGIN, 2 MiB body, no END": ("-----BEGIN RSA PRIVATE KEY-----\n" + body)[:size],
        "END, 2 MiB body before it": (body[: size - 40] + "\n-----END RSA PRIVATE KEY-----")[:size],
        "open quote, base64 run": '"' + fill(b64, size - 1),
        "eyJ. runs (JWT)": fill("eyJa.", size),
        ":// runs (URL auth)": fill("://a:", size),
        "passwordpassword...": fill("password", size),
        "AKC runs (Artifactory)": fill("AKC", size),
        "Bearer runs": fill("Bearer ", size),
        "one secret per line": fill('password = "Xk9vQ2mZ7tLp"\n', size),
        "quoted high-entropy per line": fill(f'k = "{b64}"\n', size),
    }
    slice_size = size // len(kinds)
    kinds["mixed (all of the above)"] = "".join(v[:slice_size] for v in kinds.values())
    return kinds


def median_time(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=2.0, help="size of each input in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per input")
    args = parser.parse_args()
    size = int(args.mib * 1024 * 1024)

    plain = plain_python(size)
    Redactor().redact(plain[:4096], "warmup.py")  # rule compilation and imports
    base = median_time(lambda: Redactor().redact(plain, "plain.py"), args.rounds)
    half = median_time(lambda: Redactor().redact(plain_python(size // 2), "plain.py"), args.rounds)
    print(f"input size: {size} chars, rounds: {args.rounds} (median)")
    print("ratio = t(input) / t(plain); growth = t(input) / t(same input built at half size),")
    print("about 2 for linear time, 4 for quadratic")
    print(f"{'input':32} {'seconds':>8} {'ratio':>7} {'growth':>7}")
    print(f"{'plain Python (baseline)':32} {base:8.3f} {1.0:7.2f} {base / half:7.2f}")
    worst = 0.0
    halves = crafted(size // 2)
    for name, text in crafted(size).items():
        seconds = median_time(lambda t=text: Redactor().redact(t, "crafted.py"), args.rounds)
        first = median_time(lambda t=halves[name]: Redactor().redact(t, "crafted.py"), args.rounds)
        worst = max(worst, seconds / base)
        print(f"{name:32} {seconds:8.3f} {seconds / base:7.2f} {seconds / first:7.2f}")
    print(f"worst ratio crafted/plain (redaction): {worst:.2f}")

    mixed = crafted(size)["mixed (all of the above)"]
    with tempfile.TemporaryDirectory() as root:
        paths = WorkspacePaths(Path(root))
        builder = ContextBuilder(paths, TokenCounter(None), budget=4000)
        results = {}
        for name, text in (("plain", plain), ("mixed", mixed)):
            (Path(root) / f"{name}.py").write_text(text)
            total = len(text.splitlines())
            middle = max(1, total // 2)

            def build(text: str = text, name: str = name, middle: int = middle) -> object:
                return builder.build(f"{name}.py", text, middle, middle)

            results[name] = median_time(build, args.rounds)
    ratio = results["mixed"] / results["plain"]
    print(
        f"context build: plain {results['plain']:.3f} s, mixed crafted "
        f"{results['mixed']:.3f} s, ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
