"""Benchmark: secret redaction on crafted 2 MiB files against a plain 2 MiB Python file.

    python tests/bench/bench_redaction.py [--mib N] [--rounds N] [--only SUBSTRING]

Redaction runs on every file a prompt quotes from, inside the workspace server, holding the
GIL; a crafted file must not stall it. Each row is one crafted input built to be the worst
case for one rule: back-to-back runs of a detector's token on one 2 MiB line (every match
then sits inside one long token that a naive widening walks again for each match), runs
of near-misses (a token's prefix over and over), the characters a pattern could
backtrack on, millions of short lines, one 2 MiB line, PEM markers without their other
half, and files that are nothing but candidates.

Figures, all from the same run on the same machine:
- `ratio`: time(crafted) / time(plain), each round timing the plain file and the crafted
  one back to back, so a burst of load from other processes hits both; the median over
  the rounds is printed.
- `growth`: time(crafted) / time(the same input built at half the size): about 2 for
  linear time, 4 for quadratic.
- `work x2`: the same growth in `secret_finder.Work` units (bytes searched, matches,
  bytes walked and checked in Python), the largest of the four, which load does not
  disturb (a stretch hidden whole is a fixed size, so small inputs may show a little
  over 2; tests/server_extension/test_redaction.py checks the second doubling).
The load average is printed before and after: the figures are only comparable between
runs with similar load.

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
from codeyard.server_extension.llm.secret_finder import Work, find_secrets
from codeyard.server_extension.llm.tokens import TokenCounter
from codeyard.server_extension.paths import WorkspacePaths

# One token per pattern of every detect-secrets plugin the finder runs, in the plugin's
# pattern order (tests/server_extension/test_redaction.py checks each matches its pattern).
TOKENS: dict[str, list[str]] = {
    "AWSKeyDetector": [
        "AKIAIOSFODNN7EXAMPLE",
        'aws_secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    ],
    "ArtifactoryDetector": [" AKCp5e2gMx8ABCDEFGH ", " APB7yUixQeZwwnBvYy1 "],
    "AzureStorageKeyDetector": ["AccountKey=" + "a1B2c3D4" * 11],
    "BasicAuthDetector": ["https://user:pass@example.com"],
    "CloudantDetector": [
        'cloudant_password = "' + "0123456789abcdef" * 4 + '"',
        'cloudant_password = "abcdefghijklmnopqrstuvwx"',
        "https://user:" + "0123456789abcdef" * 4 + "@acct.cloudant.com",
        "https://user:abcdefghijklmnopqrstuvwx@acct.cloudant.com",
    ],
    "DiscordBotTokenDetector": ["MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"],
    "GitHubTokenDetector": ["ghp_" + "a1B2" * 9],
    "GitLabTokenDetector": [
        "glpat-" + "x1Y2z3" * 4,
        "GR1348941" + "a1B2" * 5,
        "glcbt-" + "a1B2" * 5,
        "glimt-" + "a" * 25,
        "glptt-" + "a" * 40,
        "glagent-" + "a" * 50,
        "gloas-" + "a" * 64,
    ],
    "IbmCloudIamDetector": ['ibm_cloud_iam_api_key = "' + "a1B2" * 11 + '"'],
    "IbmCosHmacDetector": ['secret_access_key = "' + "0a1b2c3d4e5f" * 4 + '"'],
    "JwtTokenDetector": ["eyJhIjoxfQ.eyJhIjoxfQ.c2ln"],
    "MailchimpDetector": ["0123456789abcdef0123456789abcdef-us12"],
    "NpmDetector": ["//registry.npmjs.org/:_authToken=npm_" + "a1B2" * 9],
    "OpenAIDetector": ["sk-" + "a1B2c" * 4 + "T3BlbkFJ" + "a1B2c" * 4],
    "PypiTokenDetector": [
        "pypi-AgEIcHlwaS5vcmc" + "a1B2c" * 14,
        "pypi-AgENdGVzdC5weXBpLm9yZw" + "a1B2c" * 14,
    ],
    "SendGridDetector": ["SG." + "a" * 22 + "." + "b" * 43],
    "SlackDetector": [
        "xoxb-1234567890-1234567890-abcdefghijklmnopqrstuvwx",
        "https://hooks.slack.com/services/T0001/B0001/abcdef",
    ],
    "SoftlayerDetector": [
        'softlayer_api_key = "' + "a1b2" * 16 + '"',
        "https://api.softlayer.com/soap/v3/" + "a1b2" * 16,
    ],
    "SquareOAuthDetector": ["sq0csp-" + "a" * 43],
    "StripeDetector": ["sk_live_" + "a1B2" * 6],
    "TelegramBotTokenDetector": ["123456789:" + "a" * 35],
    "TwilioKeyDetector": ["AC" + "a1b2" * 8, "SK" + "a1b2" * 8],
}


def fill(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def plain_python(size: int) -> str:
    """Ordinary code: functions, classes, string literals, comments, a few settings."""
    parts: list[str] = []
    total = 0
    i = 0
    while total < size:
        part = f'''

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
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)[:size]


def crafted(size: int) -> dict[str, tuple[str, str]]:
    """Inputs built to be the worst case for a rule: name -> (file path, text)."""
    b64 = base64.b64encode(bytes(range(7, 55))).decode()
    body = "\n".join(fill(b64, 64) for _ in range(size // 65 + 1))
    begin = "-----BEGIN RSA PRIVATE KEY-----"
    end = "-----END RSA PRIVATE KEY-----"
    code = plain_python(min(size, 64 * 1024))
    kinds: dict[str, tuple[str, str]] = {
        "a- run (the finding)": ("c.py", fill("a-", size)),
        "password then = chain": ("c.py", "password" + fill("=", size - 8)),
        "k=k=k= chain": ("c.py", fill("k=", size)),
        "passwordpassword...": ("c.py", fill("password", size)),
        "password=x one line": ("c.txt", fill("password=x9 ", size)),
        "netrc words one line": ("c.txt", fill("machine password x ", size)),
        "one secret per line": ("c.py", fill('password = "Xk9vQ2mZ7tLp"\n', size)),
        ".env: 2^19 short lines": ("c.env", fill("A=1\n", size)),
        "2 M empty lines": ("c.py", "\n" * size),
        "code as one 2 MiB line": ("c.py", fill(code.replace("\n", " "), size)),
        "BEGIN lines, no END": ("c.py", fill(begin + "\n", size)),
        "BEGIN markers, one line": ("c.py", fill(begin, size // 2) + "\n" + body[: size // 2]),
        "BEGIN, 2 MiB body, no END": ("c.py", (begin + "\n" + body)[:size]),
        "END, 2 MiB body before it": ("c.py", body[: size - len(end) - 1] + "\n" + end),
        "END markers, one line": ("c.py", body[: size // 2] + "\n" + fill(end, size // 2)),
        "open quote, base64 run": ("c.py", '"' + fill(b64, size - 1)),
        "quoted base64, 2 MiB": ("c.py", '"' + fill(b64, size - 2) + '"'),
        "quoted high-entropy per line": ("c.py", fill(f'k = "{b64}"\n', size)),
        "eyJ. runs (JWT near-miss)": ("c.py", fill("eyJa.", size)),
        ":// runs (URL auth)": ("c.py", fill("://a:", size)),
        "user:pass@ runs": ("c.py", fill("a://u:p@", size)),
        "Bearer runs": ("c.py", fill("Bearer ", size)),
        "Bearer tokens": ("c.py", fill("Bearer a1b2c3d4e5 ", size)),
        "AKC runs (Artifactory)": ("c.py", fill("AKC", size)),
    }
    for plugin, tokens in TOKENS.items():
        for i, token in enumerate(tokens):
            label = f"{plugin.removesuffix('Detector')}{i + 1 if len(tokens) > 1 else ''}"
            kinds[f"{label}: one-line run"] = ("c.py", fill(token, size))
            kinds[f"{label}: near-misses"] = (
                "c.py",
                fill(token[: len(token) * 2 // 3] + " ", size),
            )
    slice_size = size // len(kinds)
    kinds["mixed (all of the above)"] = (
        "c.py",
        "".join(text[:slice_size] for _, text in kinds.values()),
    )
    return kinds


def median_ratio(
    fn: Callable[[], object], base: Callable[[], object], rounds: int
) -> tuple[float, float]:
    """Median seconds of `fn` and median of its time over `base`'s, timed back to back."""
    times, ratios = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        base()
        middle = time.perf_counter()
        fn()
        stop = time.perf_counter()
        times.append(stop - middle)
        ratios.append((stop - middle) / (middle - start))
    return statistics.median(times), statistics.median(ratios)


def median_time(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def work(text: str, path: str) -> Work:
    counted = Work()
    find_secrets(text, path, counted)
    return counted


def work_growth(text: str, path: str, half: str, half_path: str) -> float:
    """The largest growth of any kind of counted work from `half` to `text`."""
    large, small = work(text, path), work(half, half_path)
    kinds = ("searched", "matches", "walked", "checked")
    return max((getattr(large, k) + 1) / (getattr(small, k) + 1) for k in kinds)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    # Imported here, not at the top: tests/server_extension/test_redaction.py imports this
    # module as bench.bench_redaction for its crafted inputs, where `results` is bench.results.
    from results import record

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=float, default=2.0, help="size of each input in MiB")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per input")
    parser.add_argument("--only", default="", help="run only inputs whose name has this")
    args = parser.parse_args()
    size = int(args.mib * 1024 * 1024)

    plain = plain_python(size)
    plain_half = plain_python(size // 2)
    Redactor().redact(plain[:4096], "warmup.py")  # rule compilation and imports

    def redact_plain() -> object:
        return Redactor().redact(plain, "plain.py")

    print(f"load average before: {load()} (2 cores shared; figures vary with it)")
    base = median_time(redact_plain, args.rounds)
    half = median_time(lambda: Redactor().redact(plain_half, "plain.py"), args.rounds)
    print(f"input size: {size} chars, rounds: {args.rounds} (medians)")
    print(f"{'input':40} {'seconds':>8} {'ratio':>7} {'growth':>7} {'work x2':>8} {'load1':>6}")
    plain_growth = work_growth(plain, "plain.py", plain_half, "plain.py")
    print(
        f"{'plain Python (baseline)':40} {base:8.3f} {1.0:7.2f} {base / half:7.2f}"
        f" {plain_growth:8.2f} {os.getloadavg()[0]:6.2f}"
    )
    worst = ("", 0.0, 0.0)
    halves = crafted(size // 2)
    for name, (path, text) in crafted(size).items():
        if args.only not in name:
            continue
        small_path, small = halves[name]
        seconds, ratio = median_ratio(
            lambda t=text, p=path: Redactor().redact(t, p), redact_plain, args.rounds
        )
        first = median_time(lambda t=small, p=small_path: Redactor().redact(t, p), args.rounds)
        grows = work_growth(text, path, small, small_path)
        if ratio > worst[1]:
            worst = (name, ratio, seconds)
        print(
            f"{name:40} {seconds:8.3f} {ratio:7.2f} {seconds / first:7.2f} {grows:8.2f}"
            f" {os.getloadavg()[0]:6.2f}"
        )
    print(f"worst ratio crafted/plain (redaction): {worst[1]:.2f} ({worst[0]})")
    record(
        "bench_redaction",
        "worst crafted input / plain, redaction",
        worst[1],
        "x",
        1.0,
        "plain Python file, same size, same rounds",
        None,
        f"{worst[0]}: {worst[2]:.3f} s, median of per-round ratios",
    )

    if not args.only:
        _, mixed = crafted(size)["mixed (all of the above)"]
        with tempfile.TemporaryDirectory() as root:
            paths = WorkspacePaths(Path(root))
            builder = ContextBuilder(paths, TokenCounter(None), budget=4000)
            results = {}
            for name, text in (("plain", plain), ("mixed", mixed)):
                (Path(root) / f"{name}.py").write_text(text)
                middle = max(1, len(text.splitlines()) // 2)

                def build(text: str = text, name: str = name, middle: int = middle) -> object:
                    return builder.build(f"{name}.py", text, middle, middle)

                results[name] = median_time(build, args.rounds)
        ratio = results["mixed"] / results["plain"]
        print(
            f"context build: plain {results['plain']:.3f} s, mixed crafted "
            f"{results['mixed']:.3f} s, ratio {ratio:.2f}"
        )
        record(
            "bench_redaction",
            "context build, mixed crafted input",
            results["mixed"],
            "s",
            results["plain"],
            "plain Python file, same size",
            None,
        )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
