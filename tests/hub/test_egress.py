"""Workspaces reach the Hub API, the gateway and the admin's allowed hosts, and nothing else.

A real Hub (the project config) with the egress proxy on (`CodeyardHub.egress_image`, the
image `images/bin/build-egress-image.sh` builds) and an allow-list
(`CodeyardHub.egress_allow`), on a workspace network of its own. Two users start real
workspaces; every check runs from inside alice's container.

The outside world is a network namespace this test creates ("the site"), joined to this box
by a veth pair on 10.97.N.0/24. In it listen stand-ins: an "allowed" and a "forbidden" web
server (names known only to the proxy, through `EgressProxy.extra_hosts`), a metadata
server at 169.254.169.254 (this box routes that address into the namespace, as a cloud
host routes it to its metadata service) and a Docker engine port of a "registered host".
This box's own engine port is stood in for by a listener on the docker bridge address. A
control container on the same workspace network, without the workspace's rules, reaches
every one of them directly, so each refusal below is the egress design's doing.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from conftest import HubLauncher, Users
from support.browser import Browser, signed_in, start_workspace
from support.container_exec import fetch, run_in
from support.contents_api import write_text
from support.hub import DOCKER_BRIDGE_IP, REPO, HubProcess
from support.machines import Machine
from support.pki import CA
from support.processes import run_last_line

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "egress"
METADATA_IP = "169.254.169.254"
ALLOWED = "allowed.codeyard.test"
FORBIDDEN = "forbidden.codeyard.test"
# Allowed by name, but it resolves to the metadata address: still refused.
METADATA_NAME = "metadata.codeyard.test"
SITE_PORT = 8080
BOB_PORT = 9000
GIT_HTTP_PORT = 8081  # a git repository over dumb HTTP, on every address of the site
SLOW_PORT = 8082  # answers only after SLOW_SECONDS: a clone that stays running a while
SLOW_SECONDS = 90  # long enough to read the helper back under load

STAND_IN = r"""
import http.server, ssl, sys
addr, port, body = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
cert = sys.argv[4] if len(sys.argv) > 4 else ""
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer((addr, port), H)
if cert:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class Site:
    """The test's outside world: a namespace with stand-in listeners."""

    name: str
    subnet: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def host_side(self) -> str:
        return f"10.97.{self.subnet}.1"

    @property
    def allowed_ip(self) -> str:
        return f"10.97.{self.subnet}.2"

    @property
    def forbidden_ip(self) -> str:
        return f"10.97.{self.subnet}.3"

    def serve(
        self, addr: str, port: int, body: str, in_namespace: bool = True, tls: str = ""
    ) -> None:
        """A stand-in answering `body`; over TLS with the PEM (cert and key) file `tls`."""
        cmd = [sys.executable, "-c", STAND_IN, addr, str(port), body, tls]
        if in_namespace:
            cmd = ["nsenter", f"--net=/var/run/netns/{self.name}", *cmd]
        self.procs.append(subprocess.Popen(cmd))
        url = f"{'https' if tls else 'http'}://{addr}:{port}/"
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(url, timeout=2, verify=False).text == body:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"stand-in {url} did not start"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tag = secrets.token_hex(2)
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    subnet = next(n for n in range(11, 250) if f"10.97.{n}." not in used)
    s = Site(name=f"cyeg{tag}", subnet=subnet)
    host_if, ns_if = f"cyeg{tag}h", f"cyeg{tag}n"
    routed = False
    try:
        _ip("netns", "add", s.name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", s.name)
        _ip("addr", "add", f"{s.host_side}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        ns = ["-n", s.name]
        _ip(*ns, "addr", "add", f"{s.allowed_ip}/24", "dev", ns_if)
        _ip(*ns, "addr", "add", f"{s.forbidden_ip}/24", "dev", ns_if)
        _ip(*ns, "addr", "add", f"{METADATA_IP}/32", "dev", ns_if)
        _ip(*ns, "link", "set", ns_if, "up")
        _ip(*ns, "link", "set", "lo", "up")
        _ip(*ns, "route", "add", "default", "via", s.host_side)
        # This box sends the metadata address into the namespace, as a cloud host does.
        _ip("route", "add", f"{METADATA_IP}/32", "via", s.allowed_ip)
        routed = True
        s.serve(s.allowed_ip, SITE_PORT, "codeyard-allowed-site")
        s.serve(s.forbidden_ip, SITE_PORT, "codeyard-forbidden-site")
        s.serve(METADATA_IP, 80, "codeyard-metadata")
        s.serve(s.allowed_ip, 2376, "codeyard-remote-engine")
        pem = tmp_path_factory.mktemp("site-tls") / "stand-in.pem"
        pair = CA().server(s.allowed_ip)
        pem.write_text(pair.cert + pair.key)
        s.serve(s.allowed_ip, 443, "codeyard-allowed-tls", tls=str(pem))
        s.serve(s.forbidden_ip, 443, "codeyard-forbidden-tls", tls=str(pem))
        yield s
    finally:
        for proc in s.procs:
            proc.terminate()
            proc.wait(10)
        if routed:
            _ip("route", "del", f"{METADATA_IP}/32", check=False)
        _ip("link", "del", host_if, check=False)
        _ip("netns", "del", s.name, check=False)


SLOW_SERVER = r"""
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(float(sys.argv[3]))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


def _sshd() -> tuple[str, dict[str, str]]:
    """OpenSSH's server: Debian's, or the copy `tests/placement/placement_sshd.py` unpacks."""
    if os.path.exists("/usr/sbin/sshd"):
        return "/usr/sbin/sshd", {}
    cache = Path(os.environ.get("CODEYARD_CACHE", Path.home() / ".cache" / "codeyard"))
    sshd = cache / "sshd-bookworm" / "usr" / "sbin" / "sshd"
    assert sshd.exists(), "no sshd: install openssh-server or run tests/placement/test_ssh.py"
    libs = str(cache / "sshd-bookworm" / "usr" / "lib" / "x86_64-linux-gnu")
    return str(sshd), {"LD_LIBRARY_PATH": libs}


@dataclass
class GitSite:
    """git hosts in the site namespace: one bare repository served over dumb HTTP
    (GIT_HTTP_PORT), SSH (22) and the git protocol (9418) on every address of the site."""

    root: Path
    head: str  # the commit the repository's main branch points at
    client_key: str  # private key the sshd accepts (for root)
    known_hosts: str  # the sshd's host key, pinned for both site names

    @property
    def repo(self) -> str:
        return str(self.root / "repo.git")


@pytest.fixture(scope="module")
def git_site(site: Site, tmp_path_factory: pytest.TempPathFactory) -> GitSite:
    root = tmp_path_factory.mktemp("git-site")
    root.chmod(0o755)
    work = root / "src"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README.md").write_text("codeyard-cloned-through-the-proxy\n")
    subprocess.run([*git, "-C", str(work), "add", "README.md"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True)
    head = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    host_public = (root / "host_key.pub").read_text().strip()
    (root / "sshd_config").write_text(
        f"""ListenAddress 0.0.0.0:22
HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/client_key.pub
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding no
X11Forwarding no
"""
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    in_ns = ["nsenter", f"--net=/var/run/netns/{site.name}"]
    sshd, sshd_env = _sshd()
    for cmd, env in (
        ([sshd, "-D", "-e", "-f", str(root / "sshd_config")], sshd_env),
        (
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={root}",
             "--listen=0.0.0.0", "--port=9418", str(root)],
            {},
        ),
        (
            [sys.executable, "-m", "http.server", str(GIT_HTTP_PORT), "--bind", "0.0.0.0",
             "--directory", str(root)],
            {},
        ),
        (
            [sys.executable, "-c", SLOW_SERVER, site.allowed_ip, str(SLOW_PORT),
             str(SLOW_SECONDS)],
            {},
        ),
    ):  # fmt: skip
        site.procs.append(
            subprocess.Popen(
                [*in_ns, *cmd],
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    deadline = time.monotonic() + 20
    for port in (22, 9418, GIT_HTTP_PORT, SLOW_PORT):
        while True:
            try:
                with socket.create_connection((site.allowed_ip, port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"git site port {port} did not open"
                time.sleep(0.2)
    return GitSite(
        root=root,
        head=head,
        client_key=(root / "client_key").read_text(),
        known_hosts=f"{ALLOWED} {host_public}\n{FORBIDDEN} {host_public}\n",
    )


@pytest.fixture(scope="module")
def egress_image(image: str) -> str:
    # `image` first: it starts dockerd and builds the offline base the proxy image uses.
    return run_last_line([str(REPO / "images" / "bin" / "build-egress-image.sh")])


@pytest.fixture(scope="module")
def network_name() -> str:
    return f"cyeg-{secrets.token_hex(3)}"


def egress_config(site: Site, *more: str) -> str:
    """The site config both Hubs here run: the allow-list, and the test names resolved to
    the stand-in sites (the metadata name allowed, so only its address can refuse it);
    `more` lines after them."""
    hosts = {ALLOWED: site.allowed_ip, FORBIDDEN: site.forbidden_ip, METADATA_NAME: METADATA_IP}
    return "\n".join(
        [
            f"c.CodeyardHub.egress_allow = {[ALLOWED, METADATA_NAME]!r}",
            f"c.EgressProxy.extra_hosts = {hosts!r}",
            *more,
        ]
    )


@pytest.fixture(scope="module")
def hub(
    test_vllm: str,
    hubs: HubLauncher,
    egress_image: str,
    docker_client: docker.APIClient,
    site: Site,
    network_name: str,
    git_site: GitSite,
) -> Iterator[HubProcess]:
    config = egress_config(
        site,
        f"c.PlacementSpawner.workspace_network = {network_name!r}",
        'c.Spawner.args = ["--CodeyardLLM.explain_max_tokens=60"]',
        f"c.EgressProxy.ssh_known_hosts = {git_site.known_hosts!r}",
    )
    env = {"CODEYARD_EGRESS_IMAGE": egress_image}
    try:
        with hubs.running("hubstate-egress", site_config=config, extra_env=env) as proc:
            yield proc
    finally:
        for c in docker_client.containers(
            all=True, filters={"name": f"codeyard-egress-{network_name}"}
        ):
            docker_client.remove_container(c["Id"], force=True)
        for n in docker_client.networks(names=[network_name]):
            docker_client.remove_network(n["Id"])


def refused_directly(result: dict[str, Any]) -> bool:
    return "status" not in result and bool(result.get("error"))


def refused_by_proxy(result: dict[str, Any], marker: str = "codeyard-") -> bool:
    return result.get("status") == 403 and marker not in result.get("body", "")


@dataclass
class Workspaces:
    alice: dict[str, Any]
    bob: dict[str, Any]
    alice_auth: dict[str, str]
    network: dict[str, Any]

    @property
    def gateway(self) -> str:
        [cfg] = [c for c in self.network["IPAM"]["Config"] if ":" not in c["Subnet"]]
        return str(cfg["Gateway"])

    def env(self, info: dict[str, Any]) -> dict[str, str]:
        return dict(e.split("=", 1) for e in info["Config"]["Env"])


@pytest.fixture(scope="module")
def workspaces(
    hub: HubProcess, users: Users, docker_client: docker.APIClient, network_name: str
) -> Workspaces:
    found: dict[str, Any] = {}
    auth: dict[str, dict[str, str]] = {}
    for name in users.all():
        browser = signed_in(hub.url, name, PASSWORD)
        auth[name] = start_workspace(hub, browser, name, WS)
        [c] = docker_client.containers(
            filters={"label": [f"codeyard.user={name}", f"codeyard.workspace={WS}"]}
        )
        found[name] = docker_client.inspect_container(c["Id"])
    [net] = [n for n in docker_client.networks(names=[network_name]) if n["Name"] == network_name]
    return Workspaces(
        alice=found[users.alice],
        bob=found[users.bob],
        alice_auth=auth[users.alice],
        network=docker_client.inspect_network(net["Id"]),
    )


@pytest.fixture(scope="module")
def engine_stand_in(site: Site, image: str) -> str:
    """This box's engine port as containers would reach it (the docker bridge address)."""
    site.serve(DOCKER_BRIDGE_IP, 2375, "codeyard-local-engine", in_namespace=False)
    return f"http://{DOCKER_BRIDGE_IP}:2375/version"


@pytest.fixture(scope="module")
def control(
    docker_client: docker.APIClient, image: str, workspaces: Workspaces, network_name: str
) -> Iterator[str]:
    """A container on the same workspace network without the workspace's rules."""
    created = docker_client.create_container(
        image,
        command=["sleep", "600"],
        entrypoint=[],
        labels={"codeyard.test": "egress-control"},
        host_config=docker_client.create_host_config(network_mode=network_name),
    )
    docker_client.start(created["Id"])
    try:
        yield created["Id"]
    finally:
        docker_client.remove_container(created["Id"], force=True)


def test_workspace_is_told_the_proxy_and_the_hub_behind_it(
    workspaces: Workspaces, hub: HubProcess
) -> None:
    env = workspaces.env(workspaces.alice)
    gw = workspaces.gateway
    assert env["HTTP_PROXY"] == env["HTTPS_PROXY"] == f"http://{gw}:3128", env
    assert gw in env["NO_PROXY"].split(","), env
    assert env["JUPYTERHUB_API_URL"] == f"http://{gw}:3129/hub/api", env
    assert env["CODEYARD_LLM_URL"].startswith(f"http://{gw}:31"), env
    assert env["CODEYARD_AUDIT_URL"].startswith(f"http://{gw}:31"), env
    assert set(workspaces.alice["NetworkSettings"]["Networks"]) == {workspaces.network["Name"]}


def test_the_hosts_proxy_runs_hardened_on_the_hosts_network(
    workspaces: Workspaces, docker_client: docker.APIClient, network_name: str
) -> None:
    proxy = docker_client.inspect_container(f"codeyard-egress-{network_name}")
    assert proxy["State"]["Running"], proxy["State"]
    host_config = proxy["HostConfig"]
    assert host_config["NetworkMode"] == "host"
    assert host_config["CapDrop"] == ["ALL"] and not host_config["CapAdd"]
    assert host_config["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert proxy["Config"]["User"] == "proxy"
    # No rule helper is left behind, and the workspace has no capability to undo its rules.
    assert not docker_client.containers(all=True, filters={"label": "codeyard.helper=egress-rules"})
    assert workspaces.alice["HostConfig"]["CapDrop"] == ["ALL"]
    assert not workspaces.alice["HostConfig"]["CapAdd"]


def test_allowed_host_works_and_forbidden_one_is_refused(
    workspaces: Workspaces, docker_client: docker.APIClient, control: str, site: Site
) -> None:
    cid = workspaces.alice["Id"]
    allowed = fetch(docker_client, cid, f"http://{ALLOWED}:{SITE_PORT}/")
    assert allowed == {"status": 200, "body": "codeyard-allowed-site"}, allowed
    forbidden = fetch(docker_client, cid, f"http://{FORBIDDEN}:{SITE_PORT}/")
    assert refused_by_proxy(forbidden), forbidden
    # Around the proxy: no route, neither to the forbidden server nor to the allowed one.
    for ip in (site.forbidden_ip, site.allowed_ip):
        direct = fetch(docker_client, cid, f"http://{ip}:{SITE_PORT}/", proxy="none")
        assert refused_directly(direct), (ip, direct)
        # ... which the same network gives a container without the workspace's rules.
        assert (
            fetch(docker_client, control, f"http://{ip}:{SITE_PORT}/", proxy="none")["status"]
            == 200
        ), ip


def test_https_tunnels_only_to_allowed_hosts_on_443(
    workspaces: Workspaces, docker_client: docker.APIClient, site: Site
) -> None:
    """pip and git over HTTPS: a CONNECT tunnel through the proxy, for allowed names only."""
    cid = workspaces.alice["Id"]
    tls = fetch(docker_client, cid, f"https://{ALLOWED}/")
    assert tls == {"status": 200, "body": "codeyard-allowed-tls"}, tls
    forbidden = fetch(docker_client, cid, f"https://{FORBIDDEN}/")
    assert "status" not in forbidden and "403" in forbidden.get("detail", ""), forbidden
    # A tunnel to another port of an allowed host is refused (plain HTTP there still works).
    other_port = fetch(docker_client, cid, f"https://{ALLOWED}:{SITE_PORT}/")
    assert "status" not in other_port and "403" in other_port.get("detail", ""), other_port
    direct = fetch(docker_client, cid, f"https://{site.allowed_ip}/", proxy="none")
    assert refused_directly(direct), direct


def test_metadata_address_is_unreachable(
    workspaces: Workspaces, docker_client: docker.APIClient, control: str
) -> None:
    cid = workspaces.alice["Id"]
    url = f"http://{METADATA_IP}/latest/meta-data/"
    assert requests.get(url, timeout=5).text == "codeyard-metadata"
    assert fetch(docker_client, control, url, proxy="none")["status"] == 200
    assert refused_directly(fetch(docker_client, cid, url, proxy="none"))
    assert refused_by_proxy(fetch(docker_client, cid, url))
    # An allowed name that resolves to it is refused too.
    by_name = fetch(docker_client, cid, f"http://{METADATA_NAME}/latest/meta-data/")
    assert refused_by_proxy(by_name), by_name


def test_engine_ports_are_unreachable(
    workspaces: Workspaces,
    docker_client: docker.APIClient,
    control: str,
    engine_stand_in: str,
    site: Site,
) -> None:
    cid = workspaces.alice["Id"]
    remote = f"http://{site.allowed_ip}:2376/version"
    for url in (engine_stand_in, remote):
        assert fetch(docker_client, control, url, proxy="none")["status"] == 200, url
        assert refused_directly(fetch(docker_client, cid, url, proxy="none")), url
        assert refused_by_proxy(fetch(docker_client, cid, url)), url
    # Even on an allowed host name.
    by_name = fetch(docker_client, cid, f"http://{ALLOWED}:2376/version")
    assert refused_by_proxy(by_name), by_name


def test_another_workspace_is_unreachable(
    workspaces: Workspaces, docker_client: docker.APIClient, network_name: str
) -> None:
    alice, bob = workspaces.alice, workspaces.bob
    ex = docker_client.exec_create(
        bob["Id"], ["python3", "-m", "http.server", str(BOB_PORT)], workdir="/tmp"
    )
    docker_client.exec_start(ex, detach=True)
    deadline = time.monotonic() + 30
    while fetch(docker_client, bob["Id"], f"http://127.0.0.1:{BOB_PORT}/").get("status") != 200:
        assert time.monotonic() < deadline, "bob's server did not start"
        time.sleep(0.5)
    bob_ip = bob["NetworkSettings"]["Networks"][network_name]["IPAddress"]
    for port in (BOB_PORT, 8888):
        url = f"http://{bob_ip}:{port}/"
        assert refused_directly(fetch(docker_client, alice["Id"], url, proxy="none")), url
        assert fetch(docker_client, alice["Id"], url).get("status") == 403, url


def test_hub_api_works_but_login_and_signup_are_refused(
    workspaces: Workspaces, docker_client: docker.APIClient, hub: HubProcess, users: Users
) -> None:
    cid = workspaces.alice["Id"]
    env = workspaces.env(workspaces.alice)
    api = env["JUPYTERHUB_API_URL"]
    answer = fetch(docker_client, cid, api)
    assert answer.get("status") == 200, answer
    assert "version" in json.loads(answer["body"]), answer
    base = api[: -len("/hub/api")]
    for path in ("/hub/login", "/hub/signup", "/hub/admin", "/hub/home"):
        result = fetch(docker_client, cid, base + path)
        assert result.get("status") == 403, (path, result)
    signup = fetch(
        docker_client,
        cid,
        base + "/hub/signup",
        method="POST",
        data="username=admin&signup_password=x12345678&signup_password_confirmation=x12345678",
    )
    assert signup.get("status") == 403, signup
    # The Hub's own address: no route, and the forward proxy does not know it either.
    direct = f"http://{DOCKER_BRIDGE_IP}:{hub.hub_port}/hub/signup"
    assert refused_directly(fetch(docker_client, cid, direct, proxy="none"))
    assert fetch(docker_client, cid, direct).get("status") == 403

    # The server's own token still reports activity through the same route.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    body = json.dumps({"servers": {WS: {"last_activity": stamp}}, "last_activity": stamp})
    posted = fetch(
        docker_client,
        cid,
        env["JUPYTERHUB_ACTIVITY_URL"],
        method="POST",
        data=body,
        headers=(
            f"Authorization: token {env['JUPYTERHUB_API_TOKEN']}",
            "Content-Type: application/json",
        ),
    )
    assert posted.get("status") in (200, 204), posted
    server = hub.api("GET", f"/users/{users.alice}").json()["servers"][WS]
    assert server["last_activity"].startswith(stamp[:19]), server


def test_explain_goes_through_the_gateway(
    workspaces: Workspaces, hub: HubProcess, users: Users
) -> None:
    base = f"{hub.url}/user/{users.alice}/{WS}"
    auth = workspaces.alice_auth
    write_text(base, "calc.py", "def add(a, b):\n    return a + b\n", auth)
    r = requests.post(
        f"{base}/codeyard/api/explain",
        json={"path": "calc.py", "start_line": 1, "end_line": 2},
        headers=auth,
        timeout=300,
    )
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{hub.log_tail()}"
    body = r.json()
    assert body["text"].strip() and body["usage"]["completion_tokens"] > 0, body


# ---- git over SSH and git://, and the first-start clone helper, behind the same rules ----

# Connects to host:port directly (no proxy): "open", or the error.
DIAL = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4) as s:
        s.settimeout(2)
        try:
            print("open", s.recv(8).decode("latin-1"))
        except OSError:
            print("open")
except OSError as e:
    print("refused", type(e).__name__)
"""


def exec_in(
    docker_client: docker.APIClient, cid: str, cmd: list[str], env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `cmd` in the container as its own user, with its environment plus `env`."""
    ex = docker_client.exec_create(cid, cmd, environment=env or {})
    out = docker_client.exec_start(ex).decode("utf-8", "replace")
    return docker_client.exec_inspect(ex["Id"])["ExitCode"], out


def test_git_over_ssh_and_git_protocol_reach_allowed_hosts_only(
    workspaces: Workspaces,
    docker_client: docker.APIClient,
    control: str,
    site: Site,
    git_site: GitSite,
) -> None:
    cid = workspaces.alice["Id"]
    env = workspaces.env(workspaces.alice)
    assert env["GIT_SSH_COMMAND"] == "codeyard-connect --ssh", env
    assert env["GIT_PROXY_COMMAND"] == "codeyard-connect", env
    assert env["CODEYARD_SSH_KNOWN_HOSTS"] == git_site.known_hosts, env
    # Both hosts' ssh and git ports answer a container without the workspace's rules ...
    for ip in (site.allowed_ip, site.forbidden_ip):
        code, out = run_in(docker_client, control, ["python3", "-c", DIAL, ip, "22"])
        assert out.startswith("open SSH-"), (ip, out)
        code, out = run_in(docker_client, control, ["python3", "-c", DIAL, ip, "9418"])
        assert out.startswith("open"), (ip, out)
        # ... and not the workspace, around the proxy.
        for port in ("22", "9418"):
            code, out = run_in(docker_client, cid, ["python3", "-c", DIAL, ip, port])
            assert out.startswith("refused"), (ip, port, out)

    # The user's own key, in their home, as a user would keep it.
    code, out = exec_in(
        docker_client,
        cid,
        ["sh", "-c", 'mkdir -p -m 700 "$HOME/.ssh" && printf "%s" "$KEY" >"$HOME/.ssh/id_ed25519"'
         ' && chmod 600 "$HOME/.ssh/id_ed25519"'],
        env={"KEY": git_site.client_key},
    )  # fmt: skip
    assert code == 0, out

    ssh_url = f"ssh://root@{ALLOWED}{git_site.repo}"
    code, out = exec_in(docker_client, cid, ["git", "ls-remote", ssh_url])
    assert code == 0 and f"{git_site.head}\trefs/heads/main" in out, out
    code, out = exec_in(docker_client, cid, ["git", "ls-remote", f"root@{ALLOWED}:{git_site.repo}"])
    assert code == 0 and git_site.head in out, out  # scp-like address
    code, out = exec_in(docker_client, cid, ["git", "ls-remote", f"git://{ALLOWED}/repo.git"])
    assert code == 0 and f"{git_site.head}\trefs/heads/main" in out, out

    forbidden_ssh = f"ssh://root@{FORBIDDEN}{git_site.repo}"
    code, out = exec_in(docker_client, cid, ["git", "ls-remote", forbidden_ssh])
    assert code != 0 and f"refused {FORBIDDEN}:22 (403" in out and "allow-list" in out, out
    code, out = exec_in(docker_client, cid, ["git", "ls-remote", f"git://{FORBIDDEN}/repo.git"])
    assert code != 0 and f"refused {FORBIDDEN}:9418 (403" in out, out
    # Another port of an allowed host is not a git port: refused too.
    code, out = exec_in(docker_client, cid, ["codeyard-connect", ALLOWED, str(SITE_PORT)])
    assert code != 0 and "(403" in out, out

    # A host key that is not pinned is refused, never accepted on first use.
    code, out = exec_in(
        docker_client,
        cid,
        ["codeyard-connect", "--ssh", "-o", "HostKeyAlias=unpinned.codeyard.test",
         f"root@{ALLOWED}", "git-upload-pack", git_site.repo],
    )  # fmt: skip
    assert code != 0 and "Host key verification failed" in out, out
    code, out = exec_in(docker_client, cid, ["sh", "-c", 'cat "$HOME/.ssh/known_hosts" || true'])
    assert "unpinned" not in out, out


def spawn_outcome(
    hub: HubProcess, b: Browser, user: str, ws: str, options: dict[str, str]
) -> tuple[bool, str]:
    """Start `ws` with `options`; (True, "") once ready, or (False, why it failed)."""
    from support.hub_workspaces import server_model

    r = b.api("POST", f"/users/{user}/servers/{ws}", json={"profile": "small", **options})
    deadline = time.monotonic() + 300
    while r.status_code in (201, 202):
        model = server_model(hub, user, ws)
        if model and model.get("ready"):
            return True, ""
        if not model or not model.get("pending"):
            break
        assert time.monotonic() < deadline, f"{user}/{ws} still pending\n{hub.log_tail()}"
        time.sleep(0.5)
    status = b.api("GET", f"/codeyard/workspaces/{user}/{ws}/status").json()
    return False, f"{r.text} {status.get('reason')}"


def test_clone_helper_is_behind_the_egress_rules(
    hub: HubProcess,
    users: Users,
    workspaces: Workspaces,
    docker_client: docker.APIClient,
    network_name: str,
    site: Site,
    git_site: GitSite,
    engine_stand_in: str,
) -> None:
    b = Browser(hub.url)
    assert b.login(users.alice, PASSWORD).url.endswith("/hub/home")
    gateway = workspaces.gateway

    # A clone from an allowed host works.
    ok, why = spawn_outcome(
        hub, b, users.alice, "cloned", {"repo_url": f"http://{ALLOWED}:{GIT_HTTP_PORT}/repo.git"}
    )
    assert ok, why
    readme = list((hub.state_dir / "homes" / users.alice / "cloned").rglob("README.md"))
    assert [p.read_text() for p in readme] == ["codeyard-cloned-through-the-proxy\n"], readme
    r = b.api("DELETE", f"/users/{users.alice}/servers/cloned")
    assert r.status_code in (202, 204), r.text

    # A host not on the allow-list is refused before any container runs, with the reason.
    for url in (
        f"http://{FORBIDDEN}:{GIT_HTTP_PORT}/repo.git",
        f"root@{FORBIDDEN}:{git_site.repo}",
        f"http://{site.allowed_ip}:{GIT_HTTP_PORT}/repo.git",  # an address is no name
    ):
        ok, why = spawn_outcome(hub, b, users.alice, "refused", {"repo_url": url})
        assert not ok and "git clone failed" in why, (url, why)
        assert "not on this site's egress allow-list" in why, (url, why)

    # Behind the proxy: an allowed name that resolves to the metadata address, and an
    # engine port of an allowed host, get the proxy's 403 (directly they would answer).
    for url in (f"http://{METADATA_NAME}/repo.git", f"http://{ALLOWED}:2376/repo.git"):
        ok, why = spawn_outcome(hub, b, users.alice, "refused", {"repo_url": url})
        assert not ok and "git clone failed" in why and "403" in why, (url, why)

    # While a clone runs (a server that answers late), the helper is read back: the
    # workspace user, no capabilities, no new privileges, the workspace network, the
    # proxy, and no route around it to the metadata address or an engine port.
    r = b.api(
        "POST",
        f"/users/{users.alice}/servers/slow",
        json={"profile": "small", "repo_url": f"http://{ALLOWED}:{SLOW_PORT}/repo.git"},
    )
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + SLOW_SECONDS - 30
    helper = None
    while helper is None:
        found = docker_client.containers(
            filters={"label": [f"codeyard.user={users.alice}", "codeyard.helper=home"]}
        )
        if found:
            helper = docker_client.inspect_container(found[0]["Id"])
        else:
            assert time.monotonic() < deadline, "no running clone helper seen"
            time.sleep(0.2)
    assert helper["Config"]["User"] == "1000:1000", helper["Config"]["User"]
    assert helper["HostConfig"]["CapDrop"] == ["ALL"] and not helper["HostConfig"]["CapAdd"]
    assert "no-new-privileges:true" in helper["HostConfig"]["SecurityOpt"]
    assert helper["HostConfig"]["NetworkMode"] == network_name
    helper_env = dict(e.split("=", 1) for e in helper["Config"]["Env"])
    assert helper_env["HTTP_PROXY"] == f"http://{gateway}:3128", helper_env
    assert helper_env["GIT_SSH_COMMAND"] == "codeyard-connect --ssh", helper_env
    hid = helper["Id"]
    code, out = run_in(docker_client, hid, ["sh", "-c", "id -u; grep CapEff /proc/self/status"])
    assert code == 0 and out.split()[0] == "1000" and out.split()[-1] == "0" * 16, out
    for url in (
        f"http://{METADATA_IP}/latest/meta-data/",
        engine_stand_in,
        f"http://{site.allowed_ip}:2376/version",
        f"http://{site.allowed_ip}:{SITE_PORT}/",
    ):
        assert refused_directly(fetch(docker_client, hid, url, proxy="none")), url
        assert refused_by_proxy(fetch(docker_client, hid, url)), url
    allowed = fetch(docker_client, hid, f"http://{ALLOWED}:{SITE_PORT}/")
    assert allowed == {"status": 200, "body": "codeyard-allowed-site"}, allowed
    deadline = time.monotonic() + SLOW_SECONDS + 60
    while (model := server_model_of(hub, users.alice, "slow")) and model.get("pending"):
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.5)


def server_model_of(hub: HubProcess, user: str, ws: str) -> dict[str, Any] | None:
    from support.hub_workspaces import server_model

    return server_model(hub, user, ws)


# ---- the same core checks on another machine (a namespace machine, ENVIRONMENT.md §10) ----
#
# The Hub listens on every interface and the machine is registered over TLS with the
# Hub's own engine drained, so the workspace lands there. The machine gets the workspace
# image beforehand (`Machine.load_image`); the egress image reaches it through the product's
# own path (streamed over the engine API), and the proxy and the rules are made through that
# API alone. The machine reaches the test's site through this box, like any outside host.

REMOTE_WS = "far"


@pytest.fixture(scope="module")
def remote_hub(
    hubs: HubLauncher,
    egress_image: str,
    users: Users,
    site: Site,
    machine: Machine,
) -> Iterator[HubProcess]:
    from support.hub_workspaces import registry_of

    from codeyard.placement.models import ServerState

    config = egress_config(site)
    env = {"CODEYARD_EGRESS_IMAGE": egress_image, "CODEYARD_HUB_IP": "0.0.0.0"}
    try:
        with hubs.running("hubstate-egress-remote", extra_env=env, site_config=config) as hub:
            registry = registry_of(hub)
            registry.add_server(machine.registration(region="far", storage_shared=False))
            registry.set_state("local", ServerState.draining)
            yield hub
    finally:
        with machine.client() as c:
            for name in users.all():
                for found in c.api.containers(all=True, filters={"label": f"codeyard.user={name}"}):
                    c.api.remove_container(found["Id"], force=True)


@dataclass
class RemoteWorkspace:
    info: dict[str, Any]
    client: docker.APIClient
    gateway: str


@pytest.fixture(scope="module")
def remote_workspace(
    remote_hub: HubProcess, users: Users, machine: Machine
) -> Iterator[RemoteWorkspace]:
    user = users.alice
    browser = signed_in(remote_hub.url, user, PASSWORD)
    start_workspace(remote_hub, browser, user, REMOTE_WS)
    status = browser.api("GET", f"/codeyard/workspaces/{user}/{REMOTE_WS}/status").json()
    assert status["host"] == machine.name, status
    with machine.client() as c:
        [found] = c.api.containers(
            filters={"label": [f"codeyard.user={user}", f"codeyard.workspace={REMOTE_WS}"]}
        )
        info = c.api.inspect_container(found["Id"])
        [net] = [n for n in c.api.networks(names=["codeyard-workspaces"])]
        ipam = c.api.inspect_network(net["Id"])["IPAM"]["Config"]
        gateway = next(cfg["Gateway"] for cfg in ipam if ":" not in cfg["Subnet"])
        yield RemoteWorkspace(info, c.api, gateway)


def test_on_a_machine_allowed_forbidden_metadata_engine_and_hub(
    remote_workspace: RemoteWorkspace, remote_hub: HubProcess, machine: Machine, site: Site
) -> None:
    client, cid = remote_workspace.client, remote_workspace.info["Id"]
    env = dict(e.split("=", 1) for e in remote_workspace.info["Config"]["Env"])
    gw = remote_workspace.gateway
    assert env["HTTP_PROXY"] == f"http://{gw}:3128", env
    assert env["JUPYTERHUB_API_URL"] == f"http://{gw}:3129/hub/api", env
    # The machine's own proxy, made there through its engine API.
    proxy = client.inspect_container("codeyard-egress-codeyard-workspaces")
    assert proxy["State"]["Running"] and proxy["HostConfig"]["NetworkMode"] == "host"

    # A container on the machine's workspace network without the rules reaches all of it.
    control = client.create_container(
        remote_workspace.info["Config"]["Image"],
        command=["sleep", "300"],
        entrypoint=[],
        host_config=client.create_host_config(network_mode="codeyard-workspaces"),
    )
    try:
        client.start(control["Id"])
        for url in (
            f"http://{site.allowed_ip}:{SITE_PORT}/",
            f"http://{METADATA_IP}/latest/meta-data/",
            f"http://{machine.ip}:2376/version",  # TLS: an HTTP error, but it answers
        ):
            assert "status" in fetch(client, control["Id"], url, proxy="none"), url
    finally:
        client.remove_container(control["Id"], force=True)

    allowed = fetch(client, cid, f"http://{ALLOWED}:{SITE_PORT}/")
    assert allowed == {"status": 200, "body": "codeyard-allowed-site"}, allowed
    assert refused_by_proxy(fetch(client, cid, f"http://{FORBIDDEN}:{SITE_PORT}/"))
    direct = fetch(client, cid, f"http://{site.allowed_ip}:{SITE_PORT}/", proxy="none")
    assert refused_directly(direct), direct

    metadata = f"http://{METADATA_IP}/latest/meta-data/"
    assert refused_directly(fetch(client, cid, metadata, proxy="none"))
    assert refused_by_proxy(fetch(client, cid, metadata))
    assert refused_by_proxy(fetch(client, cid, f"http://{METADATA_NAME}/"))

    # The machine's own, real engine port (TLS; the proxy refuses before any handshake).
    engine = f"http://{machine.ip}:2376/version"
    assert refused_directly(fetch(client, cid, engine, proxy="none"))
    assert refused_by_proxy(fetch(client, cid, engine))

    answer = fetch(client, cid, env["JUPYTERHUB_API_URL"])
    assert answer.get("status") == 200 and "version" in json.loads(answer["body"]), answer
    base = env["JUPYTERHUB_API_URL"][: -len("/hub/api")]
    for path in ("/hub/login", "/hub/signup"):
        assert fetch(client, cid, base + path).get("status") == 403, path


# ---- the proxy's configuration, without containers --------------------------------------


def test_allow_list_entries_and_wildcards() -> None:
    from codeyard.spawner.egress import EgressProxy, allow_list_entries

    entries = allow_list_entries(["*.Example.com", "a.example.com", "example.com", "pypi.org"])
    assert entries == [".example.com", "pypi.org"]
    for bad in ("http://pypi.org", "pypi.org/simple", "a b", "*", "-x.org"):
        with pytest.raises(Exception, match="Not a host name"):
            EgressProxy(allowed_hosts=[bad])


def test_hub_paths_follow_the_base_url_and_cover_the_bare_api_path() -> None:
    from codeyard.spawner.egress import EgressProxy

    proxy = EgressProxy(allowed_hosts=["pypi.org"])
    plan = proxy.plan("10.0.0.1", "10.0.0.0/24", "10.1.0.1", 8081, {}, "/jh/")
    conf = proxy.squid_config(plan)
    assert r"acl hub_paths urlpath_regex ^/jh/hub/api(/|\?|$)" in conf, conf
    assert "http_access deny port_hub !hub_paths" in conf
    # Only the gateway address listens; the rules open only its ports.
    assert {line.split()[1] for line in conf.splitlines() if line.startswith("http_port")} == {
        "10.0.0.1:3128",
        "10.0.0.1:3129",
    }
    rules = proxy.rules_script(plan)
    assert "-d 10.0.0.1 -p tcp -m multiport --dports 3128,3129 -j ACCEPT" in rules
    assert "iptables -w -P OUTPUT DROP" in rules


def test_git_ports_tunnel_only_for_allowed_hosts_and_the_clone_check_matches_squid() -> None:
    from codeyard.spawner.clone import clone_host
    from codeyard.spawner.egress import EgressProxy

    proxy = EgressProxy(allowed_hosts=["*.example.com", "pypi.org"], ssh_known_hosts="h k\n")
    plan = proxy.plan("10.0.0.1", "10.0.0.0/24", "10.1.0.1", 8081, {})
    conf = proxy.squid_config(plan).splitlines()
    assert "acl connect_ports port 22 443 9418" in conf
    # CONNECT to a git port is refused before the allow-list could allow it elsewhere.
    order = [line for line in conf if line.startswith("http_access")]
    assert order.index("http_access deny CONNECT !connect_ports") < order.index(
        "http_access allow allowed_hosts"
    )
    assert order.index("http_access deny !allowed_hosts") < order.index(
        "http_access allow allowed_hosts"
    )
    env = plan.environment()
    assert env["GIT_SSH_COMMAND"] == "codeyard-connect --ssh"
    assert env["GIT_PROXY_COMMAND"] == "codeyard-connect"
    assert env["CODEYARD_EGRESS_PROXY"] == "http://10.0.0.1:3128"
    assert env["CODEYARD_SSH_KNOWN_HOSTS"] == "h k\n"
    for url, host, allowed in [
        ("https://git.example.com/a.git", "git.example.com", True),
        ("ssh://git@Example.com:2222/a.git", "example.com", True),
        ("git@git.example.com:team/a.git", "git.example.com", True),
        ("git://pypi.org/x", "pypi.org", True),
        ("https://notexample.com/a.git", "notexample.com", False),
        ("https://files.pythonhosted.org/x", "files.pythonhosted.org", False),
        ("http://169.254.169.254/latest", "169.254.169.254", False),
        ("git@[fe80::1]:a.git", "fe80::1", False),
    ]:
        assert clone_host(url) == host, url
        assert proxy.allows(host) is allowed, url
    assert not EgressProxy(allowed_hosts=[]).allows("example.com")
