"""A throw-away PostgreSQL server on 127.0.0.1, for the tests, the storage benchmark and trying a
multi-worker study on one machine (``make postgres``, or ``python -m diagnose.tune.pg_server``).

It runs the Debian ``postgresql`` package's binaries: ``initdb`` into a fresh temporary folder
(trust authentication, fsync off: nothing in it is meant to outlive it), ``postgres`` on a free
port, stopped and deleted on ``stop()``, on leaving the ``with`` block and at interpreter exit.
PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user (the package
creates it), else ``nobody``. Where it cannot start, ``PostgresUnavailable`` says why.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

SUPERUSER = "diagnose"


class PostgresUnavailable(RuntimeError):
    """No throw-away server can be started here (the reason is the message)."""


def _binary(name: str) -> str:
    """A PostgreSQL server binary: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise PostgresUnavailable(f"no '{name}' binary (install the Debian package: apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    """The user the server runs as: None (this one) unless this is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresServer:
    """``with PostgresServer() as server: server.url`` -> ``postgresql://diagnose@127.0.0.1:<port>/postgres``."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self.folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the server's ``postgres`` database (psycopg 3)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        """initdb, then start the server and wait until it accepts connections."""
        initdb, postgres = _binary("initdb"), _binary("postgres")
        user = _run_as()
        self.folder = Path(tempfile.mkdtemp(prefix="diagnose-pg-"))
        data, sockets = self.folder / "data", self.folder / "sockets"
        sockets.mkdir()
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self.folder, sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # the temporary folder's parents must be traversable by that user (/tmp is)
        done = subprocess.run([initdb, "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                               "--no-sync", "--no-instructions"], capture_output=True, text=True, user=user,
                              cwd=self.folder, check=False)
        if done.returncode != 0:
            self.stop()
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        self.port = _free_port()
        log = open(self.folder / "server.log", "wb")
        self._process = subprocess.Popen(
            [postgres, "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(sockets),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, user=user, cwd=self.folder, start_new_session=True)
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                text = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise PostgresUnavailable(f"postgres exited at start: {text.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                if self._ready():
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PostgresUnavailable(f"postgres did not accept connections within {self.start_timeout:.0f} s")

    def _ready(self) -> bool:
        """Whether a client can log in (the port opens before the server accepts sessions)."""
        try:
            import psycopg
        except ImportError as err:
            self.stop()
            raise PostgresUnavailable("the PostgreSQL driver is missing (pip install 'psycopg[binary]')") from err
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                                 connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder. Safe to call twice."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown: roll back sessions, exit
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main() -> int:
    """Start a server, print its URL, and keep it until Ctrl-C (``make postgres``)."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as err:
        print(f"diagnose: {err}", file=sys.stderr)
        return 1
    print(f"PostgreSQL is up (a throw-away server, deleted on exit): {server.url}\n"
          f"e.g.  diagnose tune CONFIG.yaml --workers 4 --storage {server.url}\nCtrl-C stops it.", flush=True)
    try:
        while server._process is not None and server._process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
