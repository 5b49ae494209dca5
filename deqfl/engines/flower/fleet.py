"""Stand a Flower fleet up on one machine: a SuperLink and N SuperNodes, plain or TLS.

Its command line is `deqfl.cli.fleet` (`python -m deqfl.cli.fleet up ...`, called by
`scripts/fleet.py` and `scripts/make_certs.py`). Every process runs in this
Python environment with runtime dependency installation disabled; the SuperLink and the
SuperNodes get `FLWR_HOME=<workdir>/flwr-home` (where FABs are unpacked) and their logs
go to `<workdir>/*.log`. SuperNode k gets node config
`partition-id=k num-partitions=N [tier=NAME]` and its own local runtime port.
`Fleet` stops every process it started (by PID, and the subprocesses those started);
it is also a context manager (used by the tests and `deqfl bench flower`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------------------
# certificates and SuperNode keys


@dataclass(frozen=True)
class Certs:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_certs(folder: Path, hosts: list[str] | None = None, nodes: int = 0, days: int = 365) -> Certs:
    """A self-signed CA, a server certificate it signs (SANs: localhost, 127.0.0.1, ::1 and
    `hosts`), and `nodes` SuperNode authentication key pairs (EC P-384, OpenSSH format:
    `node-K` private, `node-K.pub` public)."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deqfl fleet CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    for host in hosts or []:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hosts or ["localhost"])[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    certs = Certs(folder / "ca.crt", folder / "server.pem", folder / "server.key")
    _write(certs.ca_cert, ca.public_bytes(pem))
    _write(folder / "ca.key", ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), private=True)
    _write(certs.server_cert, cert.public_bytes(pem))
    _write(certs.server_key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), private=True)
    for k in range(nodes):
        node_key = ec.generate_private_key(ec.SECP384R1())
        _write(folder / f"node-{k}", node_key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()), private=True)
        _write(folder / f"node-{k}.pub", node_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return certs


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def register_supernode(address: str, ca_cert: Path, public_key: Path) -> int:
    """Register a SuperNode's public key with a SuperLink started with
    `--enable-supernode-auth` (what `flwr supernode register` does); returns its node id."""
    from flwr.cli.supernode.register import try_load_public_key  # noqa: PLC0415
    from flwr.proto.control_pb2 import RegisterNodeRequest  # noqa: PLC0415

    from deqfl.engines.flower.deployment import control_client  # noqa: PLC0415

    client = control_client(address, str(ca_cert))
    try:
        res = client.RegisterNode(request=RegisterNodeRequest(public_key=try_load_public_key(public_key)))
    finally:
        client.close()
    return int(res.node_id)


# --------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def process_tree_memory_mb(pids: list[int]) -> dict[str, float]:
    """Summed resident (`rss`) and proportional (`pss`: shared pages split between the
    processes sharing them, so a memory-mapped data set counts once) memory in MB of the
    processes `pids` and all their descendants."""
    seen = set()
    for pid in pids:
        seen.add(pid)
        seen.update(_children(pid))
    totals = {"rss": 0, "pss": 0}
    for pid in seen:
        for path, key, prefix in ((f"/proc/{pid}/status", "rss", "VmRSS:"), (f"/proc/{pid}/smaps_rollup", "pss", "Pss:")):
            try:
                with open(path) as f:
                    totals[key] += next((int(line.split()[1]) for line in f if line.startswith(prefix)), 0)
            except OSError:
                continue
    return {key: kib / 1024 for key, kib in totals.items()}


@dataclass
class Fleet:
    """A SuperLink and `nodes` SuperNodes on 127.0.0.1 (or `host`)."""

    nodes: int
    workdir: Path
    num_partitions: int | None = None
    tls: Certs | None = None
    auth_keys: list[Path] | None = None  # private keys (public beside them, `.pub`)
    tiers: list[str] | None = None
    port: int = 0
    host: str = "127.0.0.1"
    max_seconds: float = 3600.0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _timer: threading.Timer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_DATASETS_OFFLINE", "1")
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        exe = str(Path(sys.executable).parent / args[0])
        proc = subprocess.Popen([exe, *args[1:]], stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                cwd=self.workdir, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start(self) -> "Fleet":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._timer = threading.Timer(self.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        link = ["flower-superlink", "--host", self.host, "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        if self.tls:
            link += ["--ssl-ca-certfile", str(self.tls.ca_cert), "--ssl-certfile", str(self.tls.server_cert),
                     "--ssl-keyfile", str(self.tls.server_key)]
        else:
            link += ["--insecure"]
        if self.auth_keys:
            link += ["--enable-supernode-auth"]
        self._spawn("superlink", link)
        self._wait_port(self.port, 60)
        if self.auth_keys:
            for key in self.auth_keys:
                register_supernode(self.address, self.tls.ca_cert, Path(str(key) + ".pub"))  # type: ignore[union-attr]
        total = self.num_partitions or self.nodes
        for k in range(self.nodes):
            self.start_node(k, total)
        self.wait_nodes(self.nodes, 120)

    def start_node(self, k: int, total: int | None = None) -> subprocess.Popen:
        total = total or self.num_partitions or self.nodes
        node_config = f"partition-id={k} num-partitions={total}"
        if self.tiers:
            node_config += f' tier="{self.tiers[k]}"'
        args = ["flower-supernode", "--superlink", self.address, "--host", "127.0.0.1",
                "--port", str(free_port()), "--node-config", node_config]
        if self.tls:
            args += ["--root-certificates", str(self.tls.ca_cert)]
        else:
            args += ["--insecure"]
        if self.auth_keys:
            args += ["--auth-supernode-private-key", str(self.auth_keys[k])]
        return self._spawn(f"supernode-{k}", args)

    def _wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["superlink"].poll() is not None:
                raise RuntimeError(f"flower-superlink exited; see {self.workdir / 'superlink.log'}")
            with socket.socket() as s:
                if s.connect_ex((self.host, port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"flower-superlink did not open port {port} within {timeout:g} s")

    def wait_nodes(self, count: int, timeout: float) -> None:
        """Until `count` SuperNodes have activated (per the SuperLink's log)."""
        deadline = time.monotonic() + timeout
        log = self.workdir / "superlink.log"
        while time.monotonic() < deadline:
            if log.read_text(errors="replace").count("Activated node_id") >= count:
                return
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited; see the logs in {self.workdir}")
            time.sleep(0.2)
        raise TimeoutError(f"{count} SuperNodes did not connect within {timeout:g} s; see {self.workdir}")

    def kill_node(self, k: int) -> None:
        """SIGKILL SuperNode k and its subprocesses (a device that dies)."""
        proc = self.procs[f"supernode-{k}"]
        for pid in [proc.pid, *_children(proc.pid)]:
            _signal(pid, signal.SIGKILL)
        proc.wait(10)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def stop(self, grace: float = 5.0) -> None:
        """Stop every process started here (SIGTERM, then SIGKILL after `grace` s)."""
        if self._timer is not None:
            self._timer.cancel()
        tree = {name: [p.pid, *_children(p.pid)] for name, p in self.procs.items() if p.poll() is None}
        for name in sorted(tree, key=lambda n: n == "superlink"):  # nodes first
            for pid in tree[name]:
                _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pids in tree.values():
            for pid in pids:
                _signal(pid, signal.SIGKILL)
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        # SIGKILL takes effect asynchronously: return once the descendants are gone too
        _wait_gone([pid for pids in tree.values() for pid in pids], 10.0)

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.stop()


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Until no process in `pids` is alive (a zombie awaiting its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
