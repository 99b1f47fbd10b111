"""A real Kubernetes API server for the tests: kube-apiserver backed by etcd, both on loopback.

The session fixture ``kube_api`` (exposed through tests/conftest.py) starts, in a private
temporary directory that is removed at the end of the session:

- etcd (``etcd``, pinned by scripts/install-tools) on two free loopback ports, without fsync;
- kube-apiserver (``kube-apiserver``) on ``https://127.0.0.1:<port>`` with a self-signed serving
  certificate made here (``ca_file``), static tokens (``--token-auth-file``), RBAC
  authorization, a service-account signing key pair, and no admission plugin that needs a
  controller manager (ServiceAccount admission off);

then waits for ``/readyz``, applies Argo CD's Application CRD (tests/fixtures/kube), waits until
it is Established and served, and creates the namespace ``argocd``.

Tokens (static, from the token file):

- ``admin_token``: user ``kube-test-admin`` in ``system:masters`` (every permission);
- ``repo_server``: user ``system:serviceaccount:argocd:argocd-repo-server`` with the groups a
  service account has, and no permission until a Role is bound to it (``bind``).

``user_with_role(role)`` makes more users: it applies the Role (or ClusterRole), creates a
ServiceAccount bound to it and returns a real service-account token from the TokenRequest API,
once RBAC allows the Role's first rule for that user.

HTTP helpers use ``requests`` with the CA file and ``Authorization: Bearer``: ``get``, ``patch``
(merge, strategic, JSON patch or apply), ``apply`` (server-side apply of one object),
``create``, ``put``, ``delete``, and ``request`` (any method, the raw ``requests.Response``).
They raise ``KubeError`` (with ``.status``) for an HTTP error, except ``request``.

Tools: ``KUBE_APISERVER_BIN`` / ``ETCD_BIN``, else ``.tools/bin/`` (``make tools``); a missing
one skips the tests that use the fixture, or fails them when CI=true.

This module imports nothing from the ``plugin`` package and nothing from tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kube"
APPLICATION_CRD = FIXTURES / "application-crd.yaml"  # Argo CD v3.6.2, see its README.md

KUBE_TOOL_ENV_VARS = {"kube-apiserver": "KUBE_APISERVER_BIN", "etcd": "ETCD_BIN"}

ADMIN_USER = "kube-test-admin"
REPO_SERVER_USER = "system:serviceaccount:argocd:argocd-repo-server"
ARGOCD_NAMESPACE = "argocd"
FIELD_MANAGER = "kube-test-fixture"

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}

START_TIMEOUT = 90.0  # each of: etcd healthy, kube-apiserver ready, CRD served
REQUEST_TIMEOUT = 30.0


# --- tools ----------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def find_kube_tool(name: str) -> str | None:
    """Absolute path of ``kube-apiserver`` or ``etcd``: $KUBE_APISERVER_BIN / $ETCD_BIN (the
    only candidate when set) or .tools/bin; None when missing."""
    var = KUBE_TOOL_ENV_VARS[name]
    found = shutil.which(os.environ.get(var) or str(TOOLS_BIN / name))
    return os.path.abspath(found) if found else None  # the servers run in a temp directory


def require_kube_tool(name: str) -> str:
    path = find_kube_tool(name)
    if path is None:
        reason = (
            f"{name} not found (set {KUBE_TOOL_ENV_VARS[name]} or run `make tools` to install "
            f"it into {TOOLS_BIN})"
        )
        if in_ci():
            pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
        pytest.skip(reason)
    return path


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # looked up here, not in the forked child
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the test process dies without stopping it."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def log_tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def wait_for(
    check: Callable[[], bool],
    what: str,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = START_TIMEOUT,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` or when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}")
        try:
            if check():
                return
        except requests.RequestException as err:
            last = f" (last error: {err})"
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f}s{last}")
        time.sleep(interval)


# --- errors and users -----------------------------------------------------------------------


class KubeError(Exception):
    """An HTTP error from the API server: ``status`` (e.g. 403), ``reason``, ``body``."""

    def __init__(self, method: str, path: str, resp: requests.Response) -> None:
        self.status = resp.status_code
        self.body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            parsed = resp.json()
            if isinstance(parsed, dict):
                self.body = parsed
        self.reason = str(self.body.get("reason", ""))
        message = str(self.body.get("message", resp.text[:500]))
        super().__init__(f"{method} {path}: HTTP {self.status} {self.reason}: {message}")


@dataclass(frozen=True)
class KubeUser:
    """A user of the test API server and its bearer token."""

    name: str
    token: str


# --- TLS material ---------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_tls_material(pki: Path) -> None:
    """serving.crt/.key (self-signed, CA:TRUE, for 127.0.0.1 and localhost), sa.key/sa.pub.

    Made with the openssl command (Debian's openssl package; .venv has no ``cryptography``).
    """
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make the test API server's keys")
    _tls_with_openssl(pki)


def _tls_with_openssl(pki: Path) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "serving.key",
        "-out",
        "serving.crt",
        "-days",
        "7",
        "-subj",
        "/CN=kube-apiserver-test",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext",
        "extendedKeyUsage=serverAuth",
        cwd=pki,
    )
    ec_key = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    _openssl("genpkey", *ec_key, "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


# --- the server -----------------------------------------------------------------------------


class KubeAPI:
    """kube-apiserver + etcd on loopback; see the module docstring.

    ``url`` (``https://127.0.0.1:<port>``), ``ca_file`` (PEM to verify it), ``admin_token``,
    ``repo_server`` (a :class:`KubeUser`), ``etcd_url``, ``workdir``, ``version`` (the
    server's ``/version``), and ``timings`` (seconds for each start step and ``total``).
    """

    def __init__(self, apiserver_bin: str, etcd_bin: str, workdir: Path) -> None:
        self.apiserver_bin = apiserver_bin
        self.etcd_bin = etcd_bin
        self.workdir = workdir
        self.pki = workdir / "pki"
        self.ca_file = str(self.pki / "serving.crt")
        self.admin_token = secrets.token_hex(24)
        self.repo_server = KubeUser(REPO_SERVER_USER, secrets.token_hex(24))
        self.url = ""
        self.etcd_url = ""
        self.version: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._sessions: dict[str, requests.Session] = {}
        self._sessions_lock = threading.Lock()
        self._resources: dict[str, list[dict[str, Any]]] = {}

    # --- lifecycle ---

    def start(self) -> None:
        t0 = time.monotonic()
        make_tls_material(self.pki)
        self._write_token_file()
        self.timings["pki"] = time.monotonic() - t0
        t = time.monotonic()
        self._start_etcd()
        self.timings["etcd"] = time.monotonic() - t
        t = time.monotonic()
        self._start_apiserver()
        self.timings["kube-apiserver"] = time.monotonic() - t
        t = time.monotonic()
        self._bootstrap()
        self.timings["crd+namespace"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - t0

    def stop(self) -> None:
        with self._sessions_lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()
        for attr in ("_apiserver", "_etcd"):  # the API server first: it is etcd's client
            proc = getattr(self, attr)
            if proc is not None:
                stop_process(proc)
                setattr(self, attr, None)

    @property
    def running(self) -> bool:
        procs = (self._etcd, self._apiserver)
        return all(p is not None and p.poll() is None for p in procs)

    def _env(self) -> dict[str, str]:
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        keep = ("PATH", "LANG", "LC_ALL")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(HOME=str(self.workdir), TMPDIR=str(tmp))
        return env

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                argv,
                env=self._env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if _PRCTL is not None else None,  # noqa: PLW1509
            )

    def _start_with_retries(
        self, name: str, launch: Callable[[], tuple[subprocess.Popen[bytes], Callable[[], bool]]]
    ) -> subprocess.Popen[bytes]:
        """Start a server on free ports; retry (new ports) when one was taken meanwhile."""
        log_path = self.workdir / f"{name}.log"
        for attempt in range(1, 4):
            proc, ready = launch()
            try:
                wait_for(ready, name, proc=proc)
                return proc
            except RuntimeError as err:
                stop_process(proc)
                if attempt == 3:
                    raise RuntimeError(
                        f"{err}; end of {name}'s log:\n{log_tail(log_path)}"
                    ) from None
        raise AssertionError("unreachable")

    def _start_etcd(self) -> None:
        def launch() -> tuple[subprocess.Popen[bytes], Callable[[], bool]]:
            client, peer = free_port(), free_port()
            self.etcd_url = f"http://127.0.0.1:{client}"
            data = self.workdir / "etcd-data"
            shutil.rmtree(data, ignore_errors=True)
            argv = [
                self.etcd_bin,
                "--name=kube-test",
                f"--data-dir={data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=kube-test=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]
            proc = self._spawn(argv, self.workdir / "etcd.log")

            def ready() -> bool:
                with requests.Session() as plain:
                    plain.trust_env = False  # no proxy for loopback
                    resp = plain.get(f"{self.etcd_url}/health", timeout=2)
                return resp.status_code == 200 and resp.json().get("health") == "true"

            return proc, ready

        self._etcd = self._start_with_retries("etcd", launch)

    def _write_token_file(self) -> None:
        sa_groups = "system:serviceaccounts,system:serviceaccounts:argocd"
        lines = [
            f'{self.admin_token},{ADMIN_USER},{uuid.uuid4()},"system:masters"',
            f'{self.repo_server.token},{self.repo_server.name},{uuid.uuid4()},"{sa_groups}"',
        ]
        path = self.pki / "tokens.csv"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    def _start_apiserver(self) -> None:
        def launch() -> tuple[subprocess.Popen[bytes], Callable[[], bool]]:
            port = free_port()
            self.url = f"https://127.0.0.1:{port}"
            argv = [
                self.apiserver_bin,
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.pki}",
                f"--tls-cert-file={self.pki / 'serving.crt'}",
                f"--tls-private-key-file={self.pki / 'serving.key'}",
                f"--token-auth-file={self.pki / 'tokens.csv'}",
                "--anonymous-auth=false",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.pki / 'sa.pub'}",
                f"--service-account-signing-key-file={self.pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=0",
            ]
            proc = self._spawn(argv, self.workdir / "kube-apiserver.log")

            def ready() -> bool:
                resp = self.request("GET", "/readyz", timeout=5)
                return resp.status_code == 200

            return proc, ready

        self._apiserver = self._start_with_retries("kube-apiserver", launch)
        self.version = self.get("/version")

    def _bootstrap(self) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 0.5 s, not 7 s
        crd = yaml.load(APPLICATION_CRD.read_text(), Loader=loader)
        self.apply(crd)
        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        crd_path = f"{crds}/{crd['metadata']['name']}"

        def established() -> bool:
            conditions = self.get(crd_path).get("status", {}).get("conditions") or []
            return any(
                c.get("type") == "Established" and c.get("status") == "True" for c in conditions
            )

        wait_for(established, "Application CRD Established", proc=self._apiserver)
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}})

        def served() -> bool:
            path = f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NAMESPACE}/applications"
            return self.request("GET", path).status_code == 200

        wait_for(served, "Application resource served", proc=self._apiserver)

    # --- HTTP ---

    def session(self, token: str | None = None) -> requests.Session:
        """A ``requests`` session that trusts ``ca_file`` and sends ``token`` (admin default)."""
        token = token or self.admin_token
        with self._sessions_lock:
            session = self._sessions.get(token)
            if session is None:
                session = requests.Session()
                session.verify = self.ca_file
                session.headers["Authorization"] = f"Bearer {token}"
                session.trust_env = False  # no proxy for loopback
                self._sessions[token] = session
            return session

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        data: str | bytes | None = None,
        content_type: str | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> requests.Response:
        """Send one request (``path`` starts with ``/``); returns the response, never raises
        for an HTTP status."""
        headers = {"Accept": "application/json"}
        if json_body is not None:
            data = json.dumps(json_body)
            content_type = content_type or "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        return self.session(token).request(
            method,
            self.url + path,
            data=data,
            headers=headers,
            params=dict(params or {}),
            timeout=timeout,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise KubeError(method, path, resp)
        result = resp.json() if resp.content else {}
        return result if isinstance(result, dict) else {"value": result}

    def get(self, path: str, *, token: str | None = None) -> dict[str, Any]:
        """GET ``path`` as JSON; KubeError on an HTTP error."""
        return self._call("GET", path, token=token)

    def create(
        self, path: str, obj: Mapping[str, Any], *, token: str | None = None
    ) -> dict[str, Any]:
        """POST ``obj`` to the collection ``path``."""
        return self._call("POST", path, token=token, json_body=obj)

    def put(self, path: str, obj: Mapping[str, Any], *, token: str | None = None) -> dict[str, Any]:
        """PUT (replace) ``obj`` at ``path``; ``metadata.resourceVersion`` makes it conditional."""
        return self._call("PUT", path, token=token, json_body=obj)

    def delete(self, path: str, *, token: str | None = None) -> dict[str, Any]:
        return self._call("DELETE", path, token=token)

    def patch(
        self,
        path: str,
        body: Any,
        *,
        token: str | None = None,
        patch_type: str = "merge",
        field_manager: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """PATCH ``path``. ``patch_type``: merge (default), strategic, json or apply."""
        params: dict[str, str] = {}
        if field_manager or patch_type == "apply":
            params["fieldManager"] = field_manager or FIELD_MANAGER
        if force:
            params["force"] = "true"
        return self._call(
            "PATCH",
            path,
            token=token,
            data=json.dumps(body),
            content_type=PATCH_TYPES[patch_type],
            params=params,
        )

    # --- objects ---

    def resource_for(self, api_version: str, kind: str) -> dict[str, Any]:
        """The discovery entry (``name``, ``namespaced``, ...) of ``kind`` in ``api_version``."""
        for refresh in (False, True):
            if refresh or api_version not in self._resources:
                base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
                found = self.get(base).get("resources") or []
                self._resources[api_version] = [r for r in found if "/" not in r["name"]]
            for res in self._resources[api_version]:
                if res.get("kind") == kind:
                    return res
        raise KeyError(f"{kind} is not served in {api_version}")

    def path_for(
        self, api_version: str, kind: str, name: str | None = None, namespace: str | None = None
    ) -> str:
        """The URL path of an object (or, without ``name``, of its collection)."""
        res = self.resource_for(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if res.get("namespaced"):
            base += f"/namespaces/{namespace or 'default'}"
        path = f"{base}/{res['name']}"
        return f"{path}/{name}" if name else path

    def object_path(self, obj: Mapping[str, Any]) -> str:
        meta = obj.get("metadata") or {}
        return self.path_for(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))

    def apply(self, obj: Mapping[str, Any], *, token: str | None = None) -> dict[str, Any]:
        """Server-side apply of one object (created if missing); returns the stored object."""
        return self.patch(
            self.object_path(obj), dict(obj), token=token, patch_type="apply", force=True
        )

    def apply_yaml(self, text: str, *, token: str | None = None) -> list[dict[str, Any]]:
        """Server-side apply of every document in ``text``, in order."""
        return [self.apply(doc, token=token) for doc in yaml.safe_load_all(text) if doc]

    # --- RBAC ---

    def can(self, user: KubeUser | str, verb: str, resource: str, **attrs: str) -> bool:
        """SubjectAccessReview: may ``user`` do ``verb`` on ``resource`` (e.g.
        ``applications.argoproj.io``; attrs: namespace, name, subresource)?"""
        name = user.name if isinstance(user, KubeUser) else user
        plural, _, group = resource.partition(".")
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": name,
                "groups": _groups_of(name),
                "resourceAttributes": {"verb": verb, "resource": plural, "group": group, **attrs},
            },
        }
        result = self.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(result.get("status", {}).get("allowed"))

    def bind(
        self,
        role: Mapping[str, Any] | str,
        user: KubeUser | str,
        *,
        binding_name: str | None = None,
    ) -> None:
        """Apply ``role`` (a Role or ClusterRole, mapping or YAML) and bind it to ``user``
        (a RoleBinding in the Role's namespace, else a ClusterRoleBinding); returns once RBAC
        allows the role's first rule to the user."""
        role_obj = dict(yaml.safe_load(role) if isinstance(role, str) else role)
        name = user.name if isinstance(user, KubeUser) else user
        self.apply(role_obj)
        meta = role_obj["metadata"]
        kind = role_obj["kind"]
        binding: dict[str, Any] = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding" if kind == "Role" else "ClusterRoleBinding",
            "metadata": {"name": binding_name or f"{meta['name']}-{uuid.uuid4().hex[:8]}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": kind,
                "name": meta["name"],
            },
            "subjects": [_subject(name)],
        }
        if kind == "Role":
            binding["metadata"]["namespace"] = meta.get("namespace", "default")
        self.apply(binding)
        self._wait_rbac(role_obj, name)

    def _wait_rbac(self, role: Mapping[str, Any], user: str) -> None:
        rules = role.get("rules") or []
        if not rules:
            return
        rule = rules[0]
        verbs, resources = rule.get("verbs") or [], rule.get("resources") or []
        if not verbs or not resources:
            return
        group = (rule.get("apiGroups") or [""])[0]
        resource = resources[0].split("/")[0] + (f".{group}" if group and group != "*" else "")
        attrs = {}
        if role["kind"] == "Role":
            attrs["namespace"] = role["metadata"].get("namespace", "default")
        verb = "get" if verbs[0] == "*" else verbs[0]
        wait_for(
            lambda: self.can(user, verb, resource, **attrs),
            f"RBAC for {user}",
            timeout=30,
            interval=0.05,
        )

    def user_with_role(
        self,
        role: Mapping[str, Any] | str,
        *,
        name: str | None = None,
        namespace: str | None = None,
        expiration_seconds: int = 3600,
    ) -> KubeUser:
        """A new ServiceAccount (``name``, default a unique one) bound to ``role``, and a token
        for it from the TokenRequest API. The account lives in ``namespace`` (default: the
        Role's namespace, else ``argocd``)."""
        role_obj = dict(yaml.safe_load(role) if isinstance(role, str) else role)
        ns = namespace or role_obj["metadata"].get("namespace") or ARGOCD_NAMESPACE
        sa_name = name or f"test-user-{uuid.uuid4().hex[:8]}"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": sa_name, "namespace": ns},
            }
        )
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        issued = self.create(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa_name}/token", request)
        user = KubeUser(f"system:serviceaccount:{ns}:{sa_name}", str(issued["status"]["token"]))
        self.bind(role_obj, user, binding_name=f"{sa_name}-binding")
        return user


def _groups_of(user: str) -> list[str]:
    groups = ["system:authenticated"]
    if user.startswith("system:serviceaccount:"):
        ns = user.split(":")[2]
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
    return groups


def _subject(user: str) -> dict[str, str]:
    if user.startswith("system:serviceaccount:"):
        _, _, ns, name = user.split(":", 3)
        return {"kind": "ServiceAccount", "name": name, "namespace": ns}
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}


@contextlib.contextmanager
def running_kube_api(apiserver_bin: str, etcd_bin: str) -> Iterator[KubeAPI]:
    """Start a :class:`KubeAPI` in a fresh temporary directory; stop it and remove the
    directory (etcd data, keys, logs) on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="kube-api-"))
    api = KubeAPI(apiserver_bin, etcd_bin, workdir)
    try:
        api.start()
        yield api
    finally:
        api.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_api() -> Iterator[KubeAPI]:
    """A real kube-apiserver + etcd on loopback, shared by the session (see :class:`KubeAPI`).

    Do not delete the namespace ``argocd`` (no controller manager finishes a deletion); make
    names unique (uuid) since every test of the session shares the server.
    """
    apiserver_bin = require_kube_tool("kube-apiserver")
    etcd_bin = require_kube_tool("etcd")
    with running_kube_api(apiserver_bin, etcd_bin) as api:
        yield api
