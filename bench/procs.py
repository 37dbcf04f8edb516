"""Processes of a benchmark run: the mock upstreams, the proxy under test, CPU pinning, RSS.

Everything here is blocking and runs between measurements, never inside one.
"""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
MOCK = BENCH_DIR / "mock_upstream.py"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_layout(pin):
    """CPU sets for (proxy, mock, client); None where nothing is pinned.

    Two CPUs: the proxy gets one to itself, the mock and the load generator share the other.
    Three or more: one each.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None, None
    if len(cpus) == 2:
        return {cpus[0]}, {cpus[1]}, {cpus[1]}
    return {cpus[0]}, {cpus[1]}, set(cpus[2:])


def raise_fd_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


NICE = 0  # set by run.py (--nice); applied to every child


def _preexec(cpus):
    def run():
        os.setsid()  # own process group: a stop reaches the process and its children only
        if cpus:
            os.sched_setaffinity(0, cpus)
        if NICE:
            os.setpriority(os.PRIO_PROCESS, 0, NICE)
    return run


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name, argv, env=None, cwd=None, cpus=None, log_dir=None):
        self.name = name
        self.log_path = Path(log_dir or "/tmp") / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - the server process writes it; closed when it stops
        self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      preexec_fn=_preexec(cpus))
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def output(self, limit=4000):
        self.log.flush()
        data = self.log_path.read_bytes()
        return data[-limit:].decode("utf-8", "replace")

    def stop(self, timeout=10):
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self.log.close()


def start_mock(chunks, delay_ms, cpus, log_dir, timeout=15):
    """A mock upstream on a free port; (Proc, port)."""
    argv = [sys.executable, str(MOCK), "--port", "0", "--chunks", str(chunks),
            "--delay-ms", str(delay_ms)]
    proc = Proc(f"mock-c{chunks}-d{delay_ms}", argv, cpus=cpus, log_dir=log_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"listening on http://[\d.]+:(\d+)", proc.output())
        if m:
            return proc, int(m.group(1))
        if not proc.alive():
            break
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"mock upstream did not start:\n{proc.output()}")


def http_get(port, path, timeout=2.0):
    """(status, body) of a GET on 127.0.0.1, or (None, error text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError as exc:
        return None, str(exc)
    finally:
        conn.close()


def healthy_connection(port, timeout=30.0):
    """A keep-alive connection to 127.0.0.1:`port` once `GET /health` answers (a server just started)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/health")
            conn.getresponse().read()
            return conn
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_proxy(repo, python, backend_type, backend_port, db_dir, extra_env, cpus, log_dir,
                timeout=60, backends=0):
    """`python wsgi.py` from the repo root, configured by the environment contract; waits for
    `GET /health` to answer `OK`. Returns (Proc, port, seconds to ready). ``backends`` > 0: a
    BACKENDS_FILE of that many backends, all at the mock (instead of BACKEND_TYPE/BACKEND_URL)."""
    port = free_port()
    env = dict(os.environ)
    env.update({
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "BACKEND_TYPE": backend_type,
        "BACKEND_URL": f"http://127.0.0.1:{backend_port}",
        "DATABASE_URL": f"sqlite:///{db_dir}/bench-{port}.db",
        "LOG_LEVEL": "WARNING",
    })
    if backends:
        path = os.path.join(db_dir, f"backends-{port}.toml")
        with open(path, "w") as out:
            out.write("".join(f'[backends.b{i}]\ntype = "{backend_type}"\n'
                              f'url = "http://127.0.0.1:{backend_port}"\n' for i in range(backends)))
        del env["BACKEND_TYPE"], env["BACKEND_URL"]
        env["BACKENDS_FILE"] = path
    env.update(extra_env)
    return _start_server(f"proxy-{backend_type}-{port}", [python, "wsgi.py"], env, repo, cpus,
                         log_dir, port, timeout)


def start_reference(mode, backend_port, cpus, log_dir, timeout=30):
    """bench/reference_app.py in `hello` or `relay` mode; (Proc, port, seconds to ready)."""
    port = free_port()
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port),
               BACKEND_URL=f"http://127.0.0.1:{backend_port}")
    argv = [sys.executable, str(BENCH_DIR / "reference_app.py"), mode]
    return _start_server(f"reference-{mode}-{port}", argv, env, str(BENCH_DIR), cpus, log_dir,
                         port, timeout)


def _start_server(name, argv, env, cwd, cpus, log_dir, port, timeout):
    t0 = time.monotonic()
    proc = Proc(name, argv, env=env, cwd=cwd, cpus=cpus, log_dir=log_dir)
    while time.monotonic() - t0 < timeout:
        if not proc.alive():
            break
        status, body = http_get(port, "/health", timeout=1.0)
        if status == 200 and body.strip() == b"OK":
            return proc, port, time.monotonic() - t0
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{name} did not become ready (GET /health):\n{proc.output()}")


def rss_kib(pid):
    """Resident set size of a process in KiB (VmRSS from /proc/<pid>/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_py_spy():
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def start_py_spy(pid, seconds, out_path, rate=200):
    """py-spy recording a process's stacks (raw collapsed format); None if py-spy is missing."""
    exe = find_py_spy()
    if not exe:
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", str(rate), "--nonblocking", "--format", "raw", "--output", str(out_path)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
