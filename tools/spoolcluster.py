"""A local spoolfs cluster driven from Python through `tools/spool` (the
commands the README shows): `up` on free ports in a temporary directory (or a
given one), `start-meta` / `start-brick N` to bring back one daemon exactly as
`up` started it, `down`. Used by the mail-software tests and by the soak test.

The binaries come from $SPOOL_BUILD_DIR (meson test sets it) or $SPOOL_BUILD;
`up` is always run with --no-build, so build first."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPOOL = os.path.join(ROOT, "tools", "spool")


def build_dir():
    """The build whose binaries the cluster runs."""
    return os.environ.get("SPOOL_BUILD_DIR") or os.environ.get("SPOOL_BUILD") or os.path.join(ROOT, "build")


def free_port_range(count):
    """A base port whose next `count` ports are free on 127.0.0.1."""
    for base in range(20000 + (os.getpid() % 200) * 50, 60000, 50):
        ok = True
        for p in range(base, base + count + 1):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no free port range")


def wait_until_serving(connect, what, log_text, seconds=20):
    """Calls `connect` until it stops raising OSError; fails with the server's log."""
    deadline = time.time() + seconds
    while True:
        try:
            connect()
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("%s did not start:\n%s" % (what, log_text()))
            time.sleep(0.1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    """One meta, `bricks` bricks and a mount, under `dir` (a new temporary
    directory, removed by down(), if None). Daemons are named "meta" and
    "brick1".."brickN" as in their pid and log files."""

    def __init__(self, bricks=3, replicas=3, dir=None, prefix="spoolmail."):
        self.owns_dir = dir is None
        if dir is None:
            dir = tempfile.mkdtemp(prefix=prefix)
            os.chmod(dir, 0o755)  # mail users traverse it to reach the mount
        else:
            os.makedirs(dir, exist_ok=True)
        self.dir = os.path.abspath(dir)
        self.bricks = bricks
        self.replicas = replicas
        self.base_port = free_port_range(bricks + 1)
        self.mount = os.path.join(self.dir, "mnt")
        self.meta = "127.0.0.1:%d" % self.base_port
        self.key = os.path.join(self.dir, "cluster.key")
        self.build = build_dir()
        self.env = dict(os.environ)
        self.env["SPOOL_BUILD"] = self.build

    @classmethod
    def attach(cls, dir):
        """The cluster that `tools/spool up` started in `dir` (from its cluster.env)."""
        env = {}
        with open(os.path.join(dir, "cluster.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                env[k] = v.strip('"')
        c = cls.__new__(cls)
        c.owns_dir = False
        c.dir = os.path.abspath(dir)
        c.bricks, c.replicas, c.base_port = int(env["BRICKS"]), int(env["REPLICAS"]), int(env["BASE_PORT"])
        c.mount, c.meta, c.key, c.build = env["MOUNT"], env["META"], env["KEY"], env["BUILD"]
        c.env = dict(os.environ)
        c.env["SPOOL_BUILD"] = c.build
        return c

    def run(self, *args):
        # Own session: a Ctrl-C in the terminal reaches us, not the daemons,
        # so that down() can stop them in order (mount first).
        return subprocess.run([SPOOL, *args, "--dir", self.dir], env=self.env, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True).stdout

    def up(self):
        out = self.run("up", "--no-build", "--bricks", str(self.bricks), "--replicas", str(self.replicas),
                       "--base-port", str(self.base_port))
        print(out, flush=True)
        return self

    def daemons(self):
        return ["meta"] + ["brick%d" % i for i in range(1, self.bricks + 1)]

    def pid(self, name):
        """The pid recorded for daemon `name`, or None."""
        try:
            with open(os.path.join(self.dir, name + ".pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def alive(self, name):
        pid = self.pid(name)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A killed child of ours would be a zombie; daemons are not our children.
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def kill(self, name, sig=signal.SIGKILL):
        """Sends `sig` to daemon `name` and, for SIGKILL, waits until it is gone."""
        pid = self.pid(name)
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            deadline = time.time() + 10
            while self.alive(name) and time.time() < deadline:
                time.sleep(0.02)

    def stop_brick(self, index):
        """SIGKILLs brick `index` (1-based)."""
        self.kill("brick%d" % index)

    def start(self, name):
        """Starts daemon `name` ("meta" or "brickN") again, as `up` did."""
        if name == "meta":
            return self.run("start-meta")
        return self.run("start-brick", name[len("brick"):])

    def status(self, timeout=10):
        """spoolctl status --json as a dict (raises on failure)."""
        out = subprocess.run([os.path.join(self.build, "tools", "ctl", "spoolctl"), "--meta", self.meta,
                              "--cluster-key", self.key, "status", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError("spoolctl status: exit %d: %s" % (out.returncode, out.stdout.strip()))
        return json.loads(out.stdout)

    def down(self, keep=False):
        try:
            self.run("down")
        finally:
            if self.owns_dir and not keep and not os.environ.get("SPOOL_KEEP_TEST_DIRS"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out.append("==> %s <==\n%s" % (name, f.read()[-4000:]))
        return "\n".join(out)
