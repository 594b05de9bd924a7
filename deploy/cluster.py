"""N service replicas on loopback ports behind Debian's nginx: ``python -m deploy.cluster``.

``make cluster`` runs it (``REPLICAS=2 PORT=8000``): replicas on ``PORT+1`` .. ``PORT+N``
(``--replica-ports`` to choose), nginx on ``PORT`` with ``deploy/nginx.conf`` rendered
into a state directory (cache, logs, pid; ``--state``, by default a fresh temporary
directory). A replica that exits is started again on its port; Ctrl-C (SIGINT) or
SIGTERM stops nginx first, then the replicas, each given a grace period before it is
killed, at any moment, also while they are starting (:class:`SignalStop`). The tests
start the same arrangement through :class:`Cluster`.

The processes run in sessions of their own, so that a terminal's Ctrl-C reaches only
this supervisor, which stops them in order (nginx first: no new request reaches a
replica that is shutting down). A supervisor killed with SIGKILL leaves them running.

Rendering: the template's placeholders are ``${TENSORINIT_NGINX_*}`` (envsubst syntax,
so the official nginx image renders the same file in docker-compose); :func:`render`
fills them and refuses a placeholder it has no value for. ``TENSORINIT_NGINX_AUTH_REQUEST``
is nginx's key check before every cached answer (deploy/nginx.conf says why): on when the
replicas refuse a request without a key, which they are asked once started.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Protocol

import httpx

TEMPLATE = Path(__file__).with_name("nginx.conf")
ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\$\{(TENSORINIT_NGINX_[A-Z_]+)\}")
#: nginx skips a replica for this long after one failure (connect error, timeout, 502/503).
FAIL_TIMEOUT = "5s"
GRACE_SECONDS = 10.0
READY_SECONDS = 120.0  # a first start on a fresh machine compiles the numba kernels
#: deploy/nginx.conf's internal location that asks a replica's GET /auth whether a request's key is valid.
AUTH_REQUEST = "/_auth"


class Stopping(Protocol):
    """What tells the supervisor to stop: a :class:`SignalStop`, or a ``threading.Event`` in tests."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class StoppedError(Exception):
    """Raised while starting a process when ``stopping`` is set: the start is abandoned."""


class SignalStop:
    """``signals`` received, as something to wait on; installed at creation, restored by :meth:`restore`.

    A Python signal handler runs in the main thread between two bytecodes, wherever that
    thread is: inside ``threading.Event.wait`` it already holds the Event's lock, so a
    handler that calls ``Event.set`` (or takes any lock) can deadlock (issue 17: after
    SIGTERM, three nested ``Event.set`` handlers waited above ``Event.wait`` forever). So
    the handler here does nothing at all: ``signal.set_wakeup_fd`` carries the signal, the
    interpreter's C-level handler writing its number to a non-blocking pipe that
    :meth:`wait` selects on. The handler only replaces the default actions (SIGINT's
    KeyboardInterrupt could cut a stop half-way and leave children running). Main thread
    only, as every signal handler.
    """

    def __init__(self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = frozenset(int(s) for s in signals)
        self.received: list[int] = []
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {s: signal.signal(s, self._ignore) for s in signals}

    @staticmethod
    def _ignore(signum: int, frame: FrameType | None) -> None:
        """Nothing: the wakeup pipe has the signal already."""

    def is_set(self) -> bool:
        """Whether one of ``signals`` has been received."""
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self._read, 512):
                self.received += [n for n in data if n in self.signals]
        return bool(self.received)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for one of ``signals``; whether one has been received."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            select.select([self._read], [], [], left)  # woken by the pipe; retried after EINTR (PEP 475)
        return True

    def restore(self) -> None:
        """Put back the handlers and wakeup descriptor found at creation."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)

    def __enter__(self) -> SignalStop:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.restore()


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every ``${TENSORINIT_NGINX_*}`` replaced; KeyError naming any without a value."""
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def upstreams(addresses: Sequence[str]) -> str:
    """The upstream block's server lines for ``host:port`` addresses."""
    return "\n        ".join(f"server {a} max_fails=1 fail_timeout={FAIL_TIMEOUT};" for a in addresses)


def nginx_binary() -> str:
    """Debian's nginx (``/usr/sbin`` is not on every user's PATH); FileNotFoundError says how to install it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError("nginx is not installed: `make nginx` (apt-get install nginx) installs it")
    return found


def _stop(process: subprocess.Popen[bytes], first: signal.Signals, grace: float) -> None:
    """Send ``first``, wait ``grace`` seconds, then SIGKILL its whole process group; reap the process.

    The processes started here lead sessions of their own, so the group is the process and
    whatever it started (nginx's workers, uvicorn's): none is left behind by a SIGKILL.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(first)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def wait_until(url: str, timeout: float, alive: subprocess.Popen[bytes] | None = None, stopping: Stopping | None = None) -> None:
    """Poll ``url`` until it answers 200; RuntimeError when ``alive`` exits or ``timeout`` passes, StoppedError once ``stopping`` is set."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"{alive.args!r} exited with {alive.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout} s")
        if stopping is None:
            time.sleep(0.05)
        elif stopping.wait(0.05):
            raise StoppedError(f"stopped while waiting for {url}")


class Replica:
    """One ``python -m service.api.serve`` on 127.0.0.1:``port``, its output appended to ``log``."""

    def __init__(self, port: int, env: Mapping[str, str], log: Path, stopping: Stopping | None = None):
        self.port = port
        self.env = dict(env)
        self.log = log
        self.stopping = stopping
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and return once its /readyz answers 200."""
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the process."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.api.serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        """Return once /readyz answers 200; RuntimeError if the process exits first, StoppedError if told to stop."""
        assert self.process is not None
        wait_until(f"{self.url}/readyz", READY_SECONDS, self.process, self.stopping)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` (SIGKILL, SIGSTOP, SIGCONT: the fault tests) to the process."""
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """SIGTERM (in-flight streams get up to ``grace`` seconds), then SIGKILL."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            _stop(self.process, signal.SIGTERM, grace)


class Cluster:
    """Replicas on ``replica_ports`` behind nginx on ``port``, all on 127.0.0.1; a context manager.

    ``state`` holds the rendered nginx.conf, the cache, nginx's and the replicas' logs.
    ``env`` is added to this process's environment for the replicas. Once ``stopping`` is
    set, a start (or a revival) in progress is abandoned with :class:`StoppedError`.
    """

    def __init__(
        self,
        port: int,
        replica_ports: Sequence[int],
        state: Path,
        env: Mapping[str, str] | None = None,
        stopping: Stopping | None = None,
    ):
        self.port = port
        self.state = state
        self.stopping = stopping
        replica_env = {**os.environ, **(env or {})}
        self.replicas = [Replica(p, replica_env, state / f"replica-{p}.log", stopping) for p in replica_ports]
        self.nginx: subprocess.Popen[bytes] | None = None
        self.auth_request = "off"
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.state / "nginx.conf"

    def nginx_values(self) -> dict[str, str]:
        """The placeholders' values for this cluster."""
        return {
            "TENSORINIT_NGINX_USER": getpass.getuser(),
            "TENSORINIT_NGINX_LISTEN": f"127.0.0.1:{self.port}",
            "TENSORINIT_NGINX_UPSTREAMS": upstreams([f"127.0.0.1:{r.port}" for r in self.replicas]),
            "TENSORINIT_NGINX_STATE": str(self.state),
            "TENSORINIT_NGINX_AUTH_REQUEST": self.auth_request,
        }

    def keys_required(self) -> bool:
        """Whether a replica refuses a request without a key (asked, not guessed from the settings: it decides)."""
        return any(httpx.get(f"{r.url}/auth", timeout=10.0).status_code != 204 for r in self.replicas)

    def start(self) -> None:
        """Start every replica (ready), then nginx (answering /readyz through itself)."""
        self.state.mkdir(parents=True, exist_ok=True)
        try:
            for replica in self.replicas:
                replica.spawn()  # all at once: each spends seconds importing and loading its kernels
            for replica in self.replicas:
                replica.wait_ready()
            self.auth_request = AUTH_REQUEST if self.keys_required() else "off"
            self.config.write_text(render(TEMPLATE.read_text(), self.nginx_values()))
            binary = nginx_binary()
            # -e: the error log from the first line on (the default one may not be writable).
            command = [binary, "-p", str(self.state), "-c", str(self.config), "-e", str(self.state / "error.log")]
            subprocess.run([*command, "-t", "-q"], check=True)
            with (self.state / "nginx.out").open("ab") as out:
                self.nginx = subprocess.Popen([*command, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            wait_until(f"{self.url}/readyz", 30.0, self.nginx, self.stopping)
        except BaseException:
            self.stop()
            raise

    def revive(self) -> list[Replica]:
        """Start again every replica whose process has exited; those restarted."""
        with self._lock:
            dead = [r for r in self.replicas if r.process is not None and not r.running]
            for replica in dead:
                replica.start()
            return dead

    def supervise(self, stop: Stopping, every: float = 0.5) -> None:
        """Revive replicas until ``stop`` is set (the loop of ``make cluster``)."""
        while not stop.wait(every):
            if self.nginx is not None and self.nginx.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.nginx.returncode}; see {self.state / 'error.log'}")
            for replica in self.revive():
                print(f"replica on port {replica.port} exited; started again", file=sys.stderr, flush=True)

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """nginx first (SIGQUIT: graceful), then the replicas (SIGTERM), SIGKILL after ``grace``."""
        if self.nginx is not None:
            _stop(self.nginx, signal.SIGQUIT, grace)
        stopping = [threading.Thread(target=r.stop, args=(grace,)) for r in self.replicas]
        for thread in stopping:  # together: each may wait for its streams
            thread.start()
        for thread in stopping:
            thread.join()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def _state_dir(path: str | None) -> Iterator[Path]:
    if path is not None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="tensorinit-cluster-") as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers (another user when started as root) read and write in it
        yield Path(tmp)


def main(argv: list[str] | None = None) -> None:
    """Run a cluster until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="nginx's port (default $PORT or 8000)")
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("REPLICAS", "2")), help="default $REPLICAS or 2")
    parser.add_argument("--replica-ports", type=lambda s: [int(p) for p in s.split(",")], help="comma-separated; default PORT+1..PORT+N")
    parser.add_argument("--state", help="directory for nginx.conf, the cache and logs (default: a temporary one)")
    args = parser.parse_args(argv)
    ports = args.replica_ports or [args.port + 1 + i for i in range(args.replicas)]
    # Installed for the rest of the process (never restored): a signal during the stop,
    # or after it, finds the same handler that does nothing.
    stop = SignalStop((signal.SIGTERM, signal.SIGINT))
    try:
        with _state_dir(args.state) as state, Cluster(args.port, ports, state, stopping=stop) as cluster:
            print(f"nginx on {cluster.url} -> replicas {', '.join(r.url for r in cluster.replicas)}; state in {state}", flush=True)
            cluster.supervise(stop)
    except StoppedError:
        pass  # told to stop while starting or reviving: what had started is stopped already
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
