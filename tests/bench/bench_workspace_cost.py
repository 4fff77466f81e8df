"""What one workspace costs, baseline image vs candidate image, measured in the same run.

Both images are built inside the benchmark with the project's own build script, each from its
own source tree: the baseline from `git archive <baseline rev>` (default d62e2b4, the commit
the on-demand jupyter-ai loading started from), the candidate from the working tree, or from
a revision plus `--overlay` paths copied from the working tree (to measure one change while
other uncommitted work is in progress). Each tree is a throw-away folder with its own
`git init` (the build script hashes `git ls-files` output), its own state folder (so the
shared `singleuser-image` file is not touched), and `codeyard/singleuser:latest` is put back
where it was afterwards.

Measured per image, interleaved (baseline, candidate, baseline, ...) so load from other jobs
on the machine hits both alike:

- start: `docker run` of `jupyter server` (the image's own config and server extensions,
  as `jupyterhub-singleuser` loads them) -> `GET /lab` 200 with JupyterLab's page config
  and `GET /codeyard/api/tree` 200, with a token, through configurable-http-proxy (the
  proxy JupyterHub runs), the container's server under its own base URL and route as a
  Hub would place it. No Hub: its spawn bookkeeping is the same for both images and would
  only add noise; bench_warm_pool and bench_spawn time spawns through a whole Hub. Also the
  container's CPU-seconds (cgroup cpuacct) at that moment.
- idle memory: the container's cgroup `memory.usage_in_bytes` minus `total_inactive_file`,
  after JupyterLab has loaded once through the proxy in Chromium (`/usr/bin/chromium`,
  Playwright) and the server then sat idle for 60 s.
- 10 concurrent starts: all started at once; seconds until every one answers as above.

Issue 12's targets go to tests/bench/results.py (the table `make bench` ends with): idle
memory <= 150 MiB, single start <= 0.5x the baseline's, 10 concurrent starts all ready in
<= 30 s, each beside the baseline image's figure from this run.

Usage: python tests/bench/bench_workspace_cost.py [--baseline REV] [--candidate worktree|REV]
           [--overlay PATH ...] [--starts 3] [--concurrency 10] [--idle 60] [--json out.json]
       python tests/bench/bench_workspace_cost.py --imports IMAGE
           (per-extension import time and memory inside IMAGE, for docs/performance.md)
Prints a table and the ratios and records the targets; no assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from results import record

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.hub import ensure_proxy

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"
LABEL = "org.codeyard.bench=workspace-cost"
READY_TIMEOUT = 600
# The build inputs of the single-user image (build-images.sh reads these folders).
TREE_PATHS = [
    ".gitignore",
    "images",
    "hub_config/jupyter_ai",
    "server_extension",
    "spawner",
    "placement",
    "labextension",
    "pyproject.toml",
    "README.md",
]
# Built by jlpm, ignored by git: copied from the working tree so a tree needs no node build.
LAB_BUNDLE = "server_extension/codeyard/server_extension/labextension"
DEFAULT_BASELINE = "d62e2b4"
CGROUP = Path("/sys/fs/cgroup")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]

# jupyter-ai's server extensions and the rest of the image's, for --imports.
EXTENSIONS = [
    "codeyard.server_extension",
    "jupyter_lsp",
    "notebook_shim",
    "jupyter_server_terminals",
    "jupyterlab_chat",
    "jupyterlab_commands_toolkit",
    "jupyter_live_content",
    "jupyter_ai_tools",
    "jupyter_ai_router",
    "jupyter_ai_persona_manager",
    "jupyter_ai_chat_commands",
    "jupyter_ai_acp_client",
    "jupyter_server_mcp",
    "jupyter_ai_litellm",
    "jupyter_ai_jupyternaut",
]
IMPORT_PROBE = """
import importlib, sys, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) / 1024
import jupyter_server.serverapp, jupyterlab
r0, t0 = rss(), time.perf_counter()
importlib.import_module(sys.argv[1])
print(f"{1000 * (time.perf_counter() - t0):.0f} {rss() - r0:.1f} {r0:.1f}")
"""


def docker(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


# --- building the two images -----------------------------------------------------------


def export_tree(rev: str, dest: Path, overlay: list[str]) -> None:
    """The image inputs of `rev` (or the working tree) in `dest`, as a git checkout of its own."""
    dest.mkdir(parents=True)
    if rev == "worktree":
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", *TREE_PATHS],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        for name in files:
            if (REPO / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, dest / name)
    else:
        archive = subprocess.run(
            ["git", "archive", rev, "--", *TREE_PATHS], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for name in overlay:
        src, dst = REPO / name, dest / name
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        else:
            dst.unlink(missing_ok=True)
    bundle = REPO / LAB_BUNDLE
    if bundle.is_dir() and not (dest / LAB_BUNDLE / "static").exists():
        shutil.copytree(bundle, dest / LAB_BUNDLE, dirs_exist_ok=True)
    subprocess.run(["git", "init", "-q", str(dest)], check=True)


def build_image(tree: Path, state: Path) -> str:
    """Run `tree`'s own build script; its last stdout line is the tag."""
    env = {**os.environ, "CODEYARD_STATE": str(state)}
    out = subprocess.run(
        [str(tree / "images" / "bin" / "build-images.sh")],
        stdout=subprocess.PIPE, text=True, env=env, check=True, timeout=3600,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1]


@contextmanager
def latest_kept() -> Any:
    """Put `codeyard/singleuser:latest` back where it was after our builds moved it."""
    try:
        before = docker("image", "inspect", "-f", "{{.Id}}", "codeyard/singleuser:latest").strip()
    except RuntimeError:
        before = ""
    try:
        yield
    finally:
        if before:
            docker("tag", before, "codeyard/singleuser:latest")


# --- measuring one workspace -----------------------------------------------------------


def cgroup_file(cid: str, controller: str, name: str) -> Path:
    return CGROUP / controller / "docker" / cid / name


def idle_memory_mib(cid: str) -> float:
    """cgroup memory usage minus inactive file cache (what the kernel cannot just drop)."""
    usage = int(cgroup_file(cid, "memory", "memory.usage_in_bytes").read_text())
    stat = dict(
        line.split() for line in cgroup_file(cid, "memory", "memory.stat").read_text().splitlines()
    )
    return (usage - int(stat["total_inactive_file"])) / 2**20


def cpu_seconds(cid: str) -> float:
    return int(cgroup_file(cid, "cpuacct", "cpuacct.usage").read_text()) / 1e9


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proxy:
    """configurable-http-proxy on loopback, as JupyterHub runs it: one route per workspace."""

    def __init__(self) -> None:
        self.port, self.api_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._auth = {"Authorization": f"token {secrets.token_hex(16)}"}
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = ""

    def __enter__(self) -> Proxy:
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": self._auth["Authorization"][6:]}
        # Its log goes to a file: it logs a 503 for every poll of a server not yet up.
        fd, self.log = tempfile.mkstemp(prefix="codeyard-bench-proxy-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                [ensure_proxy(), "--ip", "127.0.0.1", "--port", str(self.port),
                 "--api-ip", "127.0.0.1", "--api-port", str(self.api_port)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self._api("GET", "")
                return self
            except (requests.RequestException, RuntimeError):
                time.sleep(0.1)
        raise RuntimeError("configurable-http-proxy did not answer in 60 s")

    def __exit__(self, *exc: object) -> None:
        if self._proc:
            self._proc.terminate()
            self._proc.wait(timeout=30)
        Path(self.log).unlink(missing_ok=True)

    def _api(self, method: str, path: str, **kw: Any) -> None:
        url = f"http://127.0.0.1:{self.api_port}/api/routes{path}"
        r = requests.request(method, url, headers=self._auth, timeout=10, **kw)
        if r.status_code >= 300:
            raise RuntimeError(f"proxy {method} {path}: {r.status_code} {r.text}")

    def add(self, prefix: str, target: str) -> None:
        self._api("POST", prefix.rstrip("/"), json={"target": target})

    def remove(self, prefix: str) -> None:
        self._api("DELETE", prefix.rstrip("/"))


class Workspace:
    """One container of `image` running `jupyter server`, reached through `proxy`."""

    def __init__(self, image: str, proxy: Proxy) -> None:
        self.image = image
        self.proxy = proxy
        self.token = secrets.token_hex(16)
        self.prefix = f"/user/bench-{secrets.token_hex(4)}/"
        self.cid = ""
        self.url = ""

    def start(self) -> dict[str, Any]:
        """Start it and wait until /lab and the Codeyard tree answer through the proxy;
        timings from `docker run`."""
        t0 = time.monotonic()
        self.cid = docker(
            "run", "-d", "--label", LABEL, "-p", "127.0.0.1::8888", self.image,
            "jupyter", "server", "--ip=0.0.0.0", "--port=8888", "--no-browser",
            f"--ServerApp.base_url={self.prefix}", f"--IdentityProvider.token={self.token}",
        ).strip()  # fmt: skip
        port = docker("port", self.cid, "8888/tcp").split()[0].rsplit(":", 1)[1]
        self.proxy.add(self.prefix, f"http://127.0.0.1:{port}")
        self.url = self.proxy.url + self.prefix.rstrip("/")
        auth = {"Authorization": f"token {self.token}"}
        pending = ["/lab", "/codeyard/api/tree"]
        while pending and time.monotonic() - t0 < READY_TIMEOUT:
            try:
                r = requests.get(self.url + pending[0], headers=auth, timeout=5,
                                 allow_redirects=False)  # fmt: skip
                # /lab counts once it is JupyterLab's page, not a proxy error page
                if r.status_code == 200 and (
                    pending[0] != "/lab" or "jupyter-config-data" in r.text
                ):
                    pending.pop(0)
                    continue
            except requests.RequestException:
                pass
            time.sleep(0.1)
        seconds = time.monotonic() - t0
        if pending:
            return {"ok": False, "error": f"{pending[0]} not ready in {READY_TIMEOUT} s"}
        return {"ok": True, "seconds": seconds, "cpu_s": cpu_seconds(self.cid)}

    def load_lab_in_browser(self) -> None:
        """JupyterLab once in Chromium, until its network is quiet, as a user opening it."""
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(f"{self.url}/lab?token={self.token}", wait_until="networkidle",
                          timeout=180_000)  # fmt: skip
                page.wait_for_selector("#jp-main-dock-panel", timeout=180_000)
                page.wait_for_timeout(5_000)
            finally:
                browser.close()

    def remove(self) -> None:
        if self.cid:
            subprocess.run([DOCKER, "rm", "-f", self.cid], capture_output=True, check=False)
            # the proxy goes away with the run anyway: a failed removal changes nothing
            with contextlib.suppress(requests.RequestException, RuntimeError):
                self.proxy.remove(self.prefix)


def single_start(image: str, proxy: Proxy) -> dict[str, Any]:
    ws = Workspace(image, proxy)
    try:
        return ws.start()
    finally:
        ws.remove()


def idle_memory(images: dict[str, str], idle_s: float, proxy: Proxy) -> dict[str, dict[str, Any]]:
    """Start one workspace per image, load the lab in each, let all sit idle together, read."""
    spaces = {name: Workspace(image, proxy) for name, image in images.items()}
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, ws in spaces.items():
            start = ws.start()
            if not start["ok"]:
                out[name] = start
                continue
            ws.load_lab_in_browser()
            out[name] = {"ok": True, "after_lab_mib": idle_memory_mib(ws.cid)}
        time.sleep(idle_s)
        for name, ws in spaces.items():
            if out[name]["ok"]:
                out[name]["idle_mib"] = idle_memory_mib(ws.cid)
                out[name]["cpu_s"] = cpu_seconds(ws.cid)
    finally:
        for ws in spaces.values():
            ws.remove()
    return out


def concurrent_starts(image: str, n: int, proxy: Proxy) -> dict[str, Any]:
    spaces = [Workspace(image, proxy) for _ in range(n)]
    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(Workspace.start, spaces))
        all_ready = time.monotonic() - t0
    finally:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(Workspace.remove, spaces))
    ok = [r for r in results if r["ok"]]
    return {
        "n": n,
        "failed": n - len(ok),
        "all_ready_s": all_ready if len(ok) == n else None,
        "max_s": max(r["seconds"] for r in ok) if ok else None,
        "cpu_s_mean": statistics.mean(r["cpu_s"] for r in ok) if ok else None,
    }


def import_profile(image: str) -> list[tuple[str, float, float]]:
    """Per extension: import ms and RSS MiB on top of jupyter_server + jupyterlab, in `image`."""
    rows = []
    for name in EXTENSIONS:
        proc = subprocess.run(
            [DOCKER, "run", "--rm", image, "python", "-c", IMPORT_PROBE, name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            rows.append((name, float("nan"), float("nan")))
            continue
        ms, mib, _base = proc.stdout.split()
        rows.append((name, float(ms), float(mib)))
    return rows


# --- the run -----------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision of the baseline")
    ap.add_argument("--candidate", default="worktree", help="'worktree' or a git revision")
    ap.add_argument("--overlay", nargs="*", default=[], help="working-tree paths over --candidate")
    ap.add_argument("--baseline-image", help="use this tag instead of building the baseline")
    ap.add_argument("--candidate-image", help="use this tag instead of building the candidate")
    ap.add_argument("--starts", type=int, default=3, help="single starts per image")
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--idle", type=float, default=60.0, help="idle seconds before reading memory")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--imports", metavar="IMAGE", help="only print the per-extension imports")
    args = ap.parse_args()

    if args.imports:
        print(f"{'extension':32} {'import ms':>9} {'RSS MiB':>8}")
        for name, ms, mib in import_profile(args.imports):
            print(f"{name:32} {ms:>9.0f} {mib:>8.1f}")
        return 0

    images: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="codeyard-bench-cost-") as tmp, latest_kept():
        for name, rev, given, overlay in (
            ("baseline", args.baseline, args.baseline_image, []),
            ("candidate", args.candidate, args.candidate_image, args.overlay),
        ):
            if given:
                images[name] = given
                continue
            tree = Path(tmp) / name
            export_tree(rev, tree, overlay)
            t0 = time.monotonic()
            images[name] = build_image(tree, Path(tmp) / f"state-{name}")
            print(f"{name}: {images[name]} ({rev}, built in {time.monotonic() - t0:.0f} s)",
                  file=sys.stderr)  # fmt: skip

    report: dict[str, Any] = {"images": images, "single": {n: [] for n in images}}
    loads: dict[str, float] = {}
    try:
        with Proxy() as proxy:
            for i in range(args.starts):
                order = list(images) if i % 2 == 0 else list(reversed(images))
                for name in order:
                    report["single"][name].append(single_start(images[name], proxy))
            loads["single"] = os.getloadavg()[0]
            report["idle"] = idle_memory(images, args.idle, proxy)
            loads["idle"] = os.getloadavg()[0]
            report["concurrent"] = {}
            for name, image in images.items():
                report["concurrent"][name] = concurrent_starts(image, args.concurrency, proxy)
                loads[f"concurrent {name}"] = os.getloadavg()[0]
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}").split()
        if ids:
            subprocess.run([DOCKER, "rm", "-f", *ids], capture_output=True, check=False)

    rows: dict[str, dict[str, float | None]] = {}
    for name in images:
        ok = [r for r in report["single"][name] if r["ok"]]
        idle = report["idle"].get(name, {})
        conc = report["concurrent"][name]
        rows[name] = {
            "start_s": median([r["seconds"] for r in ok]),
            "start_cpu_s": median([r["cpu_s"] for r in ok]),
            "after_lab_mib": idle.get("after_lab_mib"),
            "idle_mib": idle.get("idle_mib"),
            "concurrent_all_ready_s": conc["all_ready_s"],
            "failed": float(len(report["single"][name]) - len(ok) + conc["failed"]),
        }
    report["summary"] = rows
    print(f"{'':28} {'baseline':>10} {'candidate':>10} {'ratio':>7}")
    labels = {
        "start_s": "single start, s (median)",
        "start_cpu_s": "CPU-s at ready (median)",
        "after_lab_mib": "MiB after /lab in browser",
        "idle_mib": f"MiB after {args.idle:.0f} s idle",
        "concurrent_all_ready_s": f"{args.concurrency} concurrent, all ready s",
        "failed": "failed starts",
    }
    for key, label in labels.items():
        b, c = rows["baseline"][key], rows["candidate"][key]
        ratio = f"{c / b:.2f}" if b and c is not None else "-"
        print(f"{label:28} {fmt(b):>10} {fmt(c):>10} {ratio:>7}")
    print("load average (1 min) after each phase: "
          + ", ".join(f"{k} {v:.1f}" for k, v in loads.items()))  # fmt: skip
    base, cand = rows["baseline"], rows["candidate"]
    label = f"image of {args.baseline}" if not args.baseline_image else args.baseline_image
    record("bench_workspace_cost", "idle memory per workspace <= 150 MiB", cand["idle_mib"],
           "MiB", base["idle_mib"], label,
           cand["idle_mib"] is not None and cand["idle_mib"] <= 150,
           f"after /lab in Chromium + {args.idle:.0f} s idle", load=loads.get("idle"))  # fmt: skip
    record("bench_workspace_cost", "single start <= 0.5x baseline", cand["start_s"], "s",
           base["start_s"], label,
           cand["start_s"] is not None and base["start_s"] is not None
           and cand["start_s"] <= 0.5 * base["start_s"],
           f"median of {args.starts}, /lab + codeyard/api/tree via proxy",
           load=loads.get("single"))  # fmt: skip
    record("bench_workspace_cost", f"{args.concurrency} concurrent starts all ready <= 30 s",
           cand["concurrent_all_ready_s"], "s", base["concurrent_all_ready_s"], label,
           cand["concurrent_all_ready_s"] is not None and cand["concurrent_all_ready_s"] <= 30,
           f"failed starts {cand['failed']:.0f}, baseline {base['failed']:.0f}"
           f" (a start not ready in {READY_TIMEOUT} s fails)",
           load=loads.get("concurrent candidate"))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
