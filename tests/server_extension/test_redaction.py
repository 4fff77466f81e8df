"""Secrets never leave the workspace: what the model would be sent, checked for each one.

Most tests work at the prompt-building boundary: `Explainer.prepare` (and
`Rewriter.prepare`, `CodeyardCompleter.prompt`) called on a real file in a real workspace
folder, which returns the exact messages that go to the gateway. One test goes end to end
through the real extension in a real jupyter-server: its gateway is a tiny recording HTTP
server on 127.0.0.1 standing in for the LLM gateway. The stand-in is deliberate: the real
gateway keeps only hashes of what it receives, and what is under test here is what leaves
the workspace, which the stand-in captures byte for byte.

No model is needed; token counts are estimated (`TokenCounter(None)`).
"""

from __future__ import annotations

import base64
import json
import string
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jpconfig import server_config

from codeyard.server_extension.files import FileReader
from codeyard.server_extension.llm import secret_finder
from codeyard.server_extension.llm.client import CodeyardLLM
from codeyard.server_extension.llm.completion import CodeyardCompleter
from codeyard.server_extension.llm.context import ContextBuilder
from codeyard.server_extension.llm.explain import DEFAULT_QUESTION, SYSTEM_PROMPT, Explainer
from codeyard.server_extension.llm.redaction import Redactor
from codeyard.server_extension.llm.rewrite import Rewriter
from codeyard.server_extension.llm.tokens import TokenCounter
from codeyard.server_extension.paths import WorkspacePaths

# ---- helpers ----------------------------------------------------------------------------


def _pem_keys() -> list[str]:
    """Real private keys in the formats people paste: PKCS#1 RSA, PKCS#8 EC, OpenSSH."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    none = serialization.NoEncryption()
    enc = serialization.Encoding.PEM
    fmt = serialization.PrivateFormat
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return [
        rsa_key.private_bytes(enc, fmt.TraditionalOpenSSL, none).decode(),
        ec.generate_private_key(ec.SECP256R1()).private_bytes(enc, fmt.PKCS8, none).decode(),
        ed25519.Ed25519PrivateKey.generate().private_bytes(enc, fmt.OpenSSH, none).decode(),
    ]


PEMS = _pem_keys()
RSA_PEM = PEMS[0]


def key_body(pem: str) -> list[str]:
    """The secret lines of a PEM block (everything but its BEGIN/END markers)."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(payload: dict[str, Any], signature: bytes) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(payload).encode())}.{b64url(signature)}"


JWT = make_jwt({"sub": "4711", "name": "ci-bot", "iat": 1716239022}, bytes(range(7, 39)))


def explain_prompt(
    root: Path,
    rel: str,
    start: int | None = None,
    end: int | None = None,
    **builder: Any,
) -> str:
    """The messages `explain` would send for `rel`, as the JSON text that goes on the wire."""
    paths = WorkspacePaths(root)
    explainer = Explainer(
        FileReader(paths, max_size=4 * 1024 * 1024),
        ContextBuilder(paths, TokenCounter(None), **builder),
        CodeyardLLM(url="", token=""),
    )
    request: dict[str, Any] = {"path": rel}
    if start is not None:
        request["start_line"] = start
    if end is not None:
        request["end_line"] = end
    messages, _ = explainer.prepare(request)  # type: ignore[arg-type]
    return json.dumps(messages)


def leaked(secret: str, sent: str, background: str = "", window: int = 12) -> list[str]:
    """Pieces of `secret` (every `window`-long run of it) that appear in `sent` and are not
    also in `background` (the rest of the file and the fixed prompt text, which random
    code may share a run with by chance)."""
    if len(secret) <= window:
        return [secret] if secret in sent and secret not in background else []
    runs = {secret[i : i + window] for i in range(len(secret) - window + 1)}
    return sorted(run for run in runs if run in sent and run not in background)


def assert_not_sent(secret: str, sent: str, background: str = "") -> None:
    # Compare with the JSON-escaped form too: newlines and quotes are escaped on the wire.
    for form in (secret, json.dumps(secret)[1:-1]):
        found = leaked(form, sent, background)
        assert not found, f"part of a secret reached the prompt: {form!r} ({found})"


# ---- the findings, one test each -------------------------------------------------------

DEPLOY = '''"""Deploy helpers."""

import paramiko

SIGNING_KEY = """{pem}"""


def connect(host):
    key = paramiko.RSAKey.from_private_key(io.StringIO(SIGNING_KEY))
    return paramiko.SSHClient().connect(host, pkey=key)
'''


def test_a_pem_key_split_at_any_chunk_boundary_never_reaches_the_prompt(tmp_path: Path) -> None:
    """The selection, the lines around it and the header are cut from the file; every cut
    through the key (selection starting or ending inside it, no surrounding lines, a
    budget that drops parts) must still hide each of its lines."""
    text = DEPLOY.format(pem=RSA_PEM)
    (tmp_path / "deploy.py").write_text(text)
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines, 1) if "BEGIN" in line)
    last = next(i for i, line in enumerate(lines, 1) if "END RSA" in line)
    body = key_body(RSA_PEM)
    cuts = [(s, e) for s in range(first - 1, last + 2) for e in range(s, last + 2)][::7]
    cuts += [(first + 3, first + 3), (first - 1, first + 1), (last - 1, last + 1)]
    for start, end in cuts:
        for around in (0, 2, 40):
            sent = explain_prompt(tmp_path, "deploy.py", start, end, surrounding_lines=around)
            for line in body:
                assert_not_sent(line, sent)


def test_a_pem_key_in_a_definition_cut_short_never_reaches_the_prompt(tmp_path: Path) -> None:
    """Definitions from other workspace files are cut at `max_definition_lines`: the cut
    falls inside the key, and neither half may be quoted."""
    (tmp_path / "keys.py").write_text(f'def signing_key():\n    return """{RSA_PEM}"""\n')
    (tmp_path / "main.py").write_text("from keys import signing_key\n\nk = signing_key()\n")
    sent = explain_prompt(tmp_path, "main.py", 3, 3, max_definition_lines=6)
    assert "Definition of `signing_key`" in sent
    for line in key_body(RSA_PEM):
        assert_not_sent(line, sent)


def test_a_bearer_jwt_never_reaches_the_prompt(tmp_path: Path) -> None:
    (tmp_path / "client.py").write_text(
        "import requests\n\n\ndef me():\n"
        f'    headers = {{"Authorization": "Bearer {JWT}"}}\n'
        '    return requests.get("https://api.example.com/me", headers=headers)\n'
    )
    (tmp_path / "call.sh").write_text(
        f"curl -H 'Authorization: Bearer {JWT}' https://api.example.com/me\n"
    )
    for rel in ("client.py", "call.sh"):
        sent = explain_prompt(tmp_path, rel)
        for part in JWT.split("."):
            assert_not_sent(part, sent)


def test_postgres_url_credentials_never_reach_the_prompt(tmp_path: Path) -> None:
    (tmp_path / "db.py").write_text(
        "import sqlalchemy\n\n"
        'ENGINE = sqlalchemy.create_engine("postgres://app_user:Pa55w0rd!x9@db.internal:5432/app")\n'
        "# or: postgresql://reporting:Qz7-tt_secretpass@10.0.0.7/metrics\n"
    )
    sent = explain_prompt(tmp_path, "db.py")
    for secret in ("Pa55w0rd!x9", "app_user:Pa55w0rd", "Qz7-tt_secretpass"):
        assert_not_sent(secret, sent)
    assert "db.internal:5432/app" in sent, "only the user:password part needs hiding"


def test_a_stripe_live_key_never_reaches_the_prompt(tmp_path: Path) -> None:
    key = "sk_live_51HqLyjWDarjtT1zdp7dc4eC39HqLyjW"
    (tmp_path / "billing.py").write_text(
        "import stripe\n\n"
        f'stripe.api_key = "{key}"\n'
        f"charge = stripe.Charge.create(amount=100, api_key={key})\n"
        f"# rotated key: {key}\n"
    )
    assert_not_sent(key, explain_prompt(tmp_path, "billing.py"))


@pytest.mark.parametrize(
    ("rel", "text", "secret"),
    [
        ("deploy.sh", "#!/bin/sh\nexport DB_PASS=Xk9vQ2mZ7tLp\npsql -h db\n", "Xk9vQ2mZ7tLp"),
        ("deploy.sh", "DB_USER=app\nDB_PASS=letmein\n", "letmein"),
        ("settings.py", 'DB_HOST = "db"\nDB_PASS = "hunter2hunter2"\n', "hunter2hunter2"),
        ("app.cfg", "[db]\nDB_PASS = correct-horse-battery\n", "correct-horse-battery"),
    ],
)
def test_a_db_pass_assignment_never_reaches_the_prompt(
    tmp_path: Path, rel: str, text: str, secret: str
) -> None:
    (tmp_path / rel).write_text(text)
    assert_not_sent(secret, explain_prompt(tmp_path, rel))


@pytest.mark.parametrize("rel", [".netrc", "netrc.txt"])
def test_netrc_passwords_never_reach_the_prompt(tmp_path: Path, rel: str) -> None:
    (tmp_path / rel).write_text(
        "machine x login y password z9Kq7wPd\n"
        "machine api.example.com\n  login bob\n  password Hunter22Pass\n"
    )
    sent = explain_prompt(tmp_path, rel)
    assert_not_sent("z9Kq7wPd", sent)
    if rel == ".netrc":  # a multi-line entry is only recognisable in a netrc file
        assert_not_sent("Hunter22Pass", sent)


def test_netrc_single_letter_password_is_hidden(tmp_path: Path) -> None:
    """The finding's own example, `machine x login y password z`: even a one-letter
    password is not sent."""
    (tmp_path / ".netrc").write_text("machine x login y password z\n")
    sent = explain_prompt(tmp_path, ".netrc")
    assert "password z" not in sent and "password <redacted-1>" in sent


def test_a_key_being_typed_above_the_completion_cut_never_reaches_the_prompt(
    tmp_path: Path,
) -> None:
    """Completion keeps only the prefix's last lines: a key whose BEGIN line lies above the
    cut must still be recognised, and the cursor may be inside it (no END yet)."""
    completer = CodeyardCompleter(CodeyardLLM(url="", token=""), WorkspacePaths(tmp_path))
    completer.max_prefix_chars = 300
    body = key_body(RSA_PEM)
    prefix = 'KEY = """' + "\n".join(RSA_PEM.splitlines()[:-5]) + "\n"
    request = completer.parse_request({"path": "k.py", "prefix": prefix})
    prompt = completer.prompt(request, Redactor())
    assert prompt, "the prompt keeps the tail"
    for line in body:
        assert_not_sent(line, prompt)


# ---- moved from test_explain_rewrite.py: the redactor's own contract --------------------

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAuniquepemmaterial\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("path", "text", "secret"),
    [
        ("k.py", f'KEY = """{PEM}"""\n', "uniquepemmaterial"),
        ("aws.py", "key_id = 'AKIAIOSFODNN7EXAMPLE'\n", "AKIAIOSFODNN7EXAMPLE"),
        ("aws.cfg", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", "wJalr"),
        ("db.py", 'connect(password="hunter2-very-secret")\n', "hunter2"),
        ("settings.yaml", "api_key: 9f8e7d6c5b4a39281706\n", "9f8e7d6c5b4a"),
        ("gh.sh", "export T=ghp_" + "a1B2" * 9 + "\n", "ghp_a1B2"),
        (".env", "DATABASE_URL=postgres://u:p@db/x\nDEBUG=1\n", "postgres://"),
    ],
)
def test_obvious_secrets_are_redacted(path: str, text: str, secret: str) -> None:
    redactor = Redactor()
    out = redactor.redact(text, path)
    assert secret not in out
    assert "<redacted-1>" in out
    assert redactor.restore(out) == text


def test_code_that_only_names_a_password_is_kept() -> None:
    text = "password = get_password()\nif token:\n    login(password=password)\n"
    assert Redactor().redact(text, "a.py") == text


def test_secrets_are_redacted_from_the_prompt_and_restored_in_the_rewrite(
    tmp_path: Path,
) -> None:
    text = 'def connect():\n    return db(password="s3cr3t-value-123")\n'
    (tmp_path / "db.py").write_text(text)
    paths = WorkspacePaths(tmp_path)
    rewriter = Rewriter(
        FileReader(paths, max_size=10_000),
        ContextBuilder(paths, TokenCounter(None)),
        CodeyardLLM(url="", token=""),
    )
    messages, ctx, current = rewriter.prepare(
        {"path": "db.py", "start_line": 1, "end_line": 2, "instruction": "add a docstring"}
    )
    assert "s3cr3t" not in json.dumps(messages)
    answer = (
        "```python\ndef connect():\n"
        '    """Open the database."""\n'
        '    return db(password="<redacted-1>")\n```'
    )
    result = rewriter.build_result(ctx, current, answer)
    assert '+    """Open the database."""' in result["diff"]
    changed = [line for line in result["diff"].splitlines() if line.startswith(("+", "-"))]
    assert not any("s3cr3t" in line for line in changed), "the secret line must stay as it was"
    assert ' return db(password="s3cr3t-value-123")' in result["diff"]
    assert "<redacted" not in result["diff"]


# ---- the rule set ------------------------------------------------------------------------


def test_every_detect_secrets_rule_runs_on_re2() -> None:
    """A detect-secrets upgrade whose pattern RE2 cannot compile must fail here, not drop
    the rule silently (or run it on a backtracking engine)."""
    assert secret_finder.UNTRANSLATED == []
    names = {rule.name for rule in secret_finder.PLUGIN_RULES}
    for plugin in ("AWSKeyDetector", "StripeDetector", "JwtTokenDetector", "SlackDetector"):
        assert plugin in names
    assert len(names) >= 20


def test_a_multi_line_secret_keeps_every_line_in_place() -> None:
    """The context builder cuts the redacted file at the original line numbers."""
    text = f"a = 1\nKEY = '''{RSA_PEM}'''\nb = 2\n"
    redactor = Redactor()
    out = redactor.redact(text, "k.py")
    assert len(out.splitlines()) == len(text.splitlines())
    assert out.splitlines()[0] == "a = 1" and out.splitlines()[-1] == "b = 2"
    assert redactor.restore(out) == text


# ---- property: provider formats at random places in code-like text ---------------------

_ALNUM = string.ascii_letters + string.digits
_B32 = string.ascii_uppercase + "234567"
_URLSAFE = _ALNUM + "-_"


def _token(prefix: str, alphabet: str, size: int, most: int | None = None) -> Any:
    return st.text(alphabet, min_size=size, max_size=most or size).map(lambda s: prefix + s)


_jwts = st.builds(
    make_jwt,
    st.dictionaries(
        st.text(string.ascii_lowercase, min_size=1, max_size=8),
        st.one_of(st.integers(), st.text(_ALNUM, max_size=12)),
        min_size=1,
        max_size=4,
    ),
    st.binary(min_size=32, max_size=32),
)
_slack = st.tuples(
    st.text(string.digits, min_size=10, max_size=13),
    st.text(string.digits, min_size=10, max_size=13),
    st.text(_ALNUM, min_size=24, max_size=24),
).map(lambda p: f"xoxb-{p[0]}-{p[1]}-{p[2]}")

SECRETS = st.one_of(
    _token("AKIA", _B32, 16),
    _token("ghp_", _ALNUM, 36),
    _token("sk_live_", _ALNUM, 24, 40),
    _slack,
    _token("sk-proj-", _URLSAFE, 40, 100),
    _jwts,
    st.sampled_from(PEMS),
)

_CODE = st.one_of(
    st.sampled_from(
        [
            "import os",
            "def handler(event, context):",
            "    return {'status': 200}",
            "class Config:",
            "    timeout = 30",
            "for item in items:",
            "    total += item.price * qty",
            "x = [1, 2, 3]",
            "# TODO: tidy this up",
            "",
            '    url = f"https://{host}/v1/items"',
            "    headers = {'Content-Type': 'application/json'}",
        ]
    ),
    st.text(_ALNUM + "_", min_size=1, max_size=12).map(lambda s: f"{s} = compute({s!r})"),
    st.text(string.printable.strip("\r\n\x0b\x0c"), max_size=60).map(lambda s: "# " + s),
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(_CODE, min_size=1, max_size=30),
    secret=SECRETS,
    data=st.data(),
)
def test_provider_secrets_at_random_places_never_reach_the_prompt(
    lines: list[str], secret: str, data: st.DataObject
) -> None:
    row = data.draw(st.integers(0, len(lines) - 1), label="row")
    col = data.draw(st.integers(0, len(lines[row])), label="col")
    background = json.dumps("\n".join(lines) + SYSTEM_PROMPT + DEFAULT_QUESTION)
    lines[row] = lines[row][:col] + secret + lines[row][col:]
    text = "\n".join(lines) + "\n"
    total = len(text.splitlines())
    start = data.draw(st.integers(1, total), label="start")
    end = data.draw(st.integers(start, total), label="end")
    around = data.draw(st.sampled_from([0, 1, 3, 20]), label="surrounding")
    suffix = data.draw(st.sampled_from([".py", ".js", ".sh", ".txt", ".yaml"]), label="suffix")
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / f"code{suffix}").write_text(text)
        sent = explain_prompt(
            Path(root), f"code{suffix}", start, end, surrounding_lines=around, budget=100_000
        )
    pieces = key_body(secret) if "PRIVATE KEY" in secret else [secret]
    for piece in pieces:
        assert_not_sent(piece, sent, background)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="<"), max_size=400))
def test_redaction_keeps_lines_and_restores_any_text(text: str) -> None:
    redactor = Redactor()
    out = redactor.redact(text, "x.env")
    assert len(out.splitlines()) == len(text.splitlines())
    assert redactor.restore(out) == text


# ---- end to end: what the real extension sends, captured by a stand-in gateway ----------


class _Recorder(BaseHTTPRequestHandler):
    """Answers like the gateway's `/v1/chat/completions` and keeps each request body."""

    server: _RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.bodies.append(body)
        answer = {
            "id": "stand-in",
            "model": "stand-in",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "It reads settings."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _RecordingServer(ThreadingHTTPServer):
    bodies: list[bytes]


@pytest.fixture
def recording_gateway() -> Iterator[_RecordingServer]:
    server = _RecordingServer(("127.0.0.1", 0), _Recorder)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def jp_server_config(recording_gateway: _RecordingServer) -> dict[str, Any]:
    port = recording_gateway.server_address[1]
    return server_config(
        CodeyardLLM={
            "url": f"http://127.0.0.1:{port}",
            "token": "stand-in-token",
            "tokenizer_file": "",
        }
    )


SETTINGS = f'''"""Service settings."""

import os

DATABASE_URL = "postgres://svc:Vq8-zzPostgresPw@db.internal:5432/app"
STRIPE_KEY = "sk_live_51HqLyjWDarjtT1zdp7dc4eC39HqLyjW"
DB_PASS = "Xk9vQ2mZ7tLpWq"
HEADERS = {{"Authorization": "Bearer {JWT}"}}
NETRC = "machine x login y password zN3trcPw"
TLS_KEY = """{RSA_PEM}"""


def settings():
    return {{"db": DATABASE_URL, "stripe": STRIPE_KEY, "key": TLS_KEY}}
'''
E2E_SECRETS = [
    "Vq8-zzPostgresPw",
    "sk_live_51HqLyjWDarjtT1zdp7dc4eC39HqLyjW",
    "Xk9vQ2mZ7tLpWq",
    *JWT.split("."),
    "zN3trcPw",
    *key_body(RSA_PEM),
]


async def test_explain_end_to_end_sends_no_secret_to_the_gateway(
    api: Any, workspace: Path, recording_gateway: _RecordingServer
) -> None:
    (workspace / "settings.py").write_text(SETTINGS)
    lines = SETTINGS.splitlines()
    inside_key = next(i for i, line in enumerate(lines, 1) if "BEGIN RSA" in line) + 5
    requests = [
        {"path": "settings.py"},
        {"path": "settings.py", "start_line": 5, "end_line": 9, "context_lines": 3},
        {"path": "settings.py", "start_line": inside_key, "end_line": inside_key + 2},
        {"path": "settings.py", "start_line": 16, "end_line": 17, "question": "What is this?"},
    ]
    for body in requests:
        status, answer = await api("explain", body=body)
        assert status == 200, answer
        assert answer["text"] == "It reads settings."
    assert len(recording_gateway.bodies) == len(requests)
    for raw in recording_gateway.bodies:
        sent = raw.decode()
        assert "<redacted-" in sent
        for secret in E2E_SECRETS:
            assert_not_sent(secret, sent)


# ---- linear time, shown without a clock ------------------------------------------------


def test_every_pattern_is_an_re2_pattern() -> None:
    """Linear matching rests on RE2: no pattern the finder or the redactor runs on a text
    is a Python `re` pattern, and every one the finder builds (detect-secrets' rules, its
    UUID filter, ours) is an RE2 one."""
    import re

    import re2

    from codeyard.server_extension.llm import redaction

    re2_type = type(re2.compile("a"))
    assert len(secret_finder.COMPILED) > len(secret_finder.PLUGIN_RULES)
    for regex in secret_finder.COMPILED:
        assert isinstance(regex, re2_type), regex
    for rule in secret_finder.PLUGIN_RULES:
        assert any(rule.regex is regex for regex in secret_finder.COMPILED), rule.name
    for module in (secret_finder, redaction):
        python_patterns = [name for name, v in vars(module).items() if isinstance(v, re.Pattern)]
        assert python_patterns == [], module.__name__


def test_the_benchmark_has_a_crafted_token_for_every_detect_secrets_pattern() -> None:
    """tests/bench/bench_redaction.py builds one-line runs and near-misses from one token
    per detect-secrets pattern; each token must match its own pattern, so every rule has
    its worst case in the benchmark and in the linearity test below."""
    from bench.bench_redaction import TOKENS

    by_plugin: dict[str, list[Any]] = {}
    for rule in secret_finder.PLUGIN_RULES:
        by_plugin.setdefault(rule.name, []).append(rule)
    assert set(TOKENS) == set(by_plugin)
    for name, rules in by_plugin.items():
        assert len(TOKENS[name]) == len(rules), name
        for rule, token in zip(rules, TOKENS[name], strict=True):
            assert rule.regex.search(token), (name, token)


def test_doubling_a_crafted_input_at_most_doubles_the_counted_work() -> None:
    """Every crafted input of the benchmark (a detector's token run on one line, its
    near-misses, `a-` runs, PEM markers without their other half, millions of short
    lines, one long line, ...) at 32, 64 and 128 KiB: for each kind of counted work (bytes
    searched by RE2, matches handled, bytes walked and checked in Python), the second
    doubling adds at most twice what the first added, and the total stays within a fixed
    number of units per byte. Work of the form a*n + b passes whatever b is (a stretch
    hidden whole is a fixed `SKIP` bytes, so on one long line the walk to its end is
    n - SKIP); a*n**2 adds four times as much each doubling and fails, as a widening that
    walks the same token again for each match in it would. The mixed input (a slice of
    every other one) is held to the bound per byte only: its slices grow with it and
    cross the per-line and per-window limits at different sizes."""
    from bench.bench_redaction import crafted

    sizes = [crafted(kib * 1024) for kib in (32, 64, 128)]
    per_byte = 3 * len(secret_finder.COMPILED) + 16
    for name in sizes[0]:
        works = []
        for inputs in sizes:
            path, text = inputs[name]
            work = secret_finder.Work()
            secret_finder.find_secrets(text, path, work)
            assert work.total <= per_byte * len(text.encode()), (name, work)
            works.append(work)
        if name.startswith("mixed"):
            continue
        for kind in ("searched", "matches", "walked", "checked"):
            counts = [getattr(work, kind) for work in works]
            first, second = counts[1] - counts[0], counts[2] - counts[1]
            assert second <= 2.1 * first + 256, (name, kind, counts)


def test_a_long_token_run_is_widened_once() -> None:
    """100,000 bytes of back-to-back AWS key ids on one line: each byte is walked over a
    bounded number of times, and the line is hidden."""
    text = "AKIAIOSFODNN7EXAMPLE" * 5000
    work = secret_finder.Work()
    assert secret_finder.find_secrets(text, "k.py", work) == [(0, len(text))]
    assert work.walked <= 3 * len(text)


def test_a_line_packed_with_candidates_is_hidden_whole() -> None:
    """Past `MAX_MATCHES_PER_LINE` matches of one pattern, a line is hidden whole without
    checking the rest, including candidates that would have passed as harmless (here
    JWT-shaped near-misses spread along one long line); the lines around it stay."""
    limit = secret_finder.MAX_MATCHES_PER_LINE
    spread = ("eyJa.eyJa " + "x" * 200 + " ") * (limit + 5)
    text = f"x = 1\n{spread}\ny = 2\n"
    redactor = Redactor()
    out = redactor.redact(text, "a.txt")
    assert out.splitlines() == ["x = 1", "<redacted-1>", "y = 2"]
    assert redactor.restore(out) == text
    few = "eyJa.eyJa " * 3
    assert Redactor().redact(few, "a.txt") == few, "below the limits, near-misses stay"


def test_a_stretch_packed_with_candidates_is_hidden_whole() -> None:
    """Past `MAX_MATCHES_PER_WINDOW` matches of one pattern within `WINDOW` bytes, the
    next `SKIP` bytes (to a line's end) are hidden whole without checking, one placeholder
    per line; the search resumes after them, the lines keep their places and `restore`
    gives the text back."""
    limit = secret_finder.MAX_MATCHES_PER_WINDOW
    packed = "".join(f"Bearer a1b2c3d4e5{i:04d}\n" for i in range(limit + 5))
    filler = "y = 2\n" * (2 * secret_finder.SKIP // 6)
    text = f"x = 1\n{packed}{filler}z = 3\n"
    redactor = Redactor()
    out = redactor.redact(text, "a.txt")
    lines = out.splitlines()
    assert len(lines) == len(text.splitlines())
    assert lines[0] == "x = 1" and lines[-2:] == ["y = 2", "z = 3"]
    assert all(line.startswith("Bearer <redacted-") for line in lines[1 : limit + 1])
    assert all(line.startswith("<redacted-") for line in lines[limit + 1 : limit + 6])
    assert not any("a1b2c3d4e5" in line for line in lines)
    shown = sum(1 for line in lines if line == "y = 2")
    assert 0 < shown < filler.count("\n"), "some of the filler is hidden, not all"
    assert redactor.restore(out) == text


_BODY_ALPHABET = "AZaz09+/=\\n \t\"'(),;:-.#Proc-TypeDEK-InfoCommentArgon2-idé"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_BODY_ALPHABET, max_size=40))
def test_key_body_lines_read_the_same_backwards(line: str) -> None:
    """The run of key-body lines before an END marker is found on the reversed text with
    the body-line pattern written backwards: it must accept exactly the lines the forward
    pattern accepts, which are the non-blank lines of the body-line grammar."""
    import re2

    forward = re2.compile(secret_finder.KEY_BODY_LINE)
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    backward = re2.compile(secret_finder.KEY_BODY_LINE_BACKWARDS.encode("latin-1"), options)
    grammar = re2.compile(
        r"[ \t\"'+,(]*(?:[A-Za-z0-9+/=]+(?:\\n)?|"
        r"(?:Proc-Type|DEK-Info|Comment|Encryption|Private-Lines|Public-Lines|Private-MAC|"
        r"Key-Derivation|Argon2-[A-Za-z]+):[^\n]*)?[ \t\"'+,;)\\]*"
    )
    expected = bool(grammar.fullmatch(line)) and bool(line.strip(" \t"))
    assert bool(forward.fullmatch(line)) == expected
    assert bool(backward.fullmatch(line.encode("utf-8")[::-1])) == expected
