"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary folder.

``PostgresServer.start()`` runs ``initdb`` into a fresh temporary folder, starts the server on
127.0.0.1 at a free port (its unix socket inside that folder, ``fsync=off``), creates the role
``sweeper`` with a password generated for this process (SCRAM-SHA-256 over TCP) and the
database ``studies``. ``stop()`` stops it (``pg_ctl stop -m fast``, then signals if needed) and
deletes the folder. The password leaves this module only inside :attr:`PostgresServer.url`:
it is never on a command line, in the server's log or printed.

As root, PostgreSQL refuses to run: initdb and pg_ctl then run as the ``postgres`` user through
``runuser``; where no such user exists, a system user ``clonesweep-pg`` is created for it.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir"]

ROLE = "sweeper"
DATABASE = "studies"
ADMIN = "postgres"  # the cluster's superuser: local (unix socket) trust only
FALLBACK_OS_USER = "clonesweep-pg"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or no way to run them."""


def _has_initdb(bindir: Path) -> bool:
    return (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()


def find_bindir() -> Path | None:
    """The PostgreSQL server binaries: ``pg_config --bindir``, the newest
    ``/usr/lib/postgresql/*/bin``, or wherever ``initdb`` is on PATH.

    A candidate counts only if ``initdb`` and ``pg_ctl`` are really there (Debian's libpq-dev
    ships a ``pg_config`` that names the server's folder without the server installed).
    """
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_initdb(Path(out)):
            return Path(out)

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if _has_initdb(Path(candidate)):
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(initdb).resolve().parent
        if _has_initdb(bindir):
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _os_user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _run_as_user() -> str | None:
    """The OS user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and `runuser` is missing: PostgreSQL "
                                  "refuses to run as root")
    if _os_user_exists("postgres"):
        return "postgres"
    if not _os_user_exists(FALLBACK_OS_USER):
        useradd = shutil.which("useradd")
        if useradd is None:
            raise PostgresUnavailable("running as root, no `postgres` user and no `useradd` "
                                      f"to create {FALLBACK_OS_USER!r}")
        done = subprocess.run([useradd, "--system", "--no-create-home", "--shell",
                               "/usr/sbin/nologin", FALLBACK_OS_USER],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0 and not _os_user_exists(FALLBACK_OS_USER):
            raise PostgresUnavailable(f"cannot create the system user {FALLBACK_OS_USER!r}: "
                                      f"{done.stderr.strip()}")
    return FALLBACK_OS_USER


class PostgresServer:
    """One throwaway cluster. Use as a context manager, or call start() and stop()."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.os_user = _run_as_user()
        self.root: Path | None = None
        self.port = 0
        self._password = secrets.token_urlsafe(24)
        self._started = False

    # -- paths ------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "sock"

    @property
    def log(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``studies`` database as ``sweeper`` (holds the password)."""
        return (f"postgresql+psycopg2://{ROLE}:{self._password}@127.0.0.1:{self.port}/"
                f"{DATABASE}")

    @property
    def password(self) -> str:
        """For tests that check the password leaks nowhere; never print it."""
        return self._password

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _cmd(self, *argv: str) -> list[str]:
        prefix = ["runuser", "-u", self.os_user, "--"] if self.os_user else []
        return [*prefix, *argv]

    def _run(self, *argv: str, timeout: float = 120) -> None:
        assert self.root is not None
        done = subprocess.run(self._cmd(*argv), cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\nserver log:\n" + self.log.read_text(errors="replace")[-3000:]
        except (OSError, AssertionError):
            return ""

    def start(self, attempts: int = 3) -> None:
        # /tmp itself (not pytest's 0700 root-owned basetemp), so the server's user can reach it.
        self.root = Path(tempfile.mkdtemp(prefix="clonesweep-pg-"))
        try:
            self.socket_dir.mkdir()
            if self.os_user:
                for path in (self.root, self.socket_dir):
                    shutil.chown(path, self.os_user, self.os_user)
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", ADMIN,
                      "--auth-local=trust", "--auth-host=scram-sha-256",
                      "--encoding=UTF8", "--locale=C", "--no-sync")
            for attempt in range(attempts):
                self.port = _free_port()
                self._configure()
                try:
                    self._run(str(self.bindir / "pg_ctl"), "start", "-D", str(self.data),
                              "-l", str(self.log), "-w", "-t", "60")
                    self._started = True
                    break
                except RuntimeError:
                    # Most likely the port was taken between picking it and binding it.
                    if attempt == attempts - 1:
                        raise
            self._create_role_and_database()
        except BaseException:
            self.stop()
            raise

    def _configure(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "password_encryption": "'scram-sha-256'",
            "max_connections": "50",
        }
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        # postgresql.auto.conf is read last: a rewrite per attempt replaces the port.
        (self.data / "postgresql.auto.conf").write_text(
            "# written by tests/pgserver.py\n" + text)

    def _create_role_and_database(self) -> None:
        import psycopg2
        from psycopg2 import sql
        from psycopg2.extensions import encrypt_password

        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user=ADMIN,
                                dbname="postgres", connect_timeout=30)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                # Only the SCRAM verifier reaches the server (and any statement it logs).
                verifier = encrypt_password(self._password, ROLE, conn, "scram-sha-256")
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(verifier)))
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(ROLE)))
        finally:
            conn.close()

    def pause(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), keeping its data."""
        self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast",
                  "-w", "-t", "60")

    def resume(self) -> None:
        """Start a paused server again, on the same port with the same data."""
        self._run(str(self.bindir / "pg_ctl"), "start", "-D", str(self.data), "-l",
                  str(self.log), "-w", "-t", "60")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder. Safe to call twice."""
        if self.root is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data),
                              "-m", "fast", "-w", "-t", "60")
                except (RuntimeError, OSError, subprocess.SubprocessError):
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
            self._started = False

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            for _ in range(50):
                time.sleep(0.1)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
