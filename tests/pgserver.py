"A throwaway PostgreSQL server for tests: Debian's binaries run as the `postgres` user on 127.0.0.1, a free port."

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest


def pg_bin() -> Path | None:
    "The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, or None."
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def require(what: str, reason: str) -> None:
    "Skip for a missing server or tool, or fail when CI asked for every real server (INTRADAY_REQUIRE_SERVERS=1)."
    if os.environ.get("INTRADAY_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{what}: {reason} (INTRADAY_REQUIRE_SERVERS=1: .ci/run installs it)")
    pytest.skip(f"{what}: {reason}")


def free_port() -> int:
    "A TCP port free on 127.0.0.1 right now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str, **kw) -> subprocess.CompletedProcess:
    runas = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    return subprocess.run([*runas, *cmd], capture_output=True, text=True, timeout=120, **kw)


@contextmanager
def postgres_server(database: str = "intraday"):
    "Start PostgreSQL in a temporary directory; yield its SQLAlchemy URL (trust auth, user postgres); stop it."
    bindir = pg_bin()
    if bindir is None:
        require("PostgreSQL", "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        require("PostgreSQL", "running as root without runuser to drop to the postgres user")
    root = Path(tempfile.mkdtemp(prefix="intraday-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    root.chmod(0o700)
    data, port = root / "data", free_port()
    try:
        r = _as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        if r.returncode:
            raise RuntimeError(f"initdb failed ({r.returncode}): {r.stderr.strip()}")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        r = _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", opts, "-w", "start")
        if r.returncode:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({r.returncode}): {r.stderr.strip()} {log[-2000:]}")
        r = _as_postgres(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        if r.returncode:
            raise RuntimeError(f"createdb failed ({r.returncode}): {r.stderr.strip()}")
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        if (data / "postmaster.pid").exists():
            _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
