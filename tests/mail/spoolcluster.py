"""A spoolfs cluster for the mail-software tests, started with `tools/spool up`
(the command the README shows) on free ports in a temporary directory."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPOOL = os.path.join(ROOT, "tools", "spool")


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
    def __init__(self, bricks=3, replicas=3):
        self.dir = tempfile.mkdtemp(prefix="spoolmail.")
        os.chmod(self.dir, 0o755)  # mail users traverse it to reach the mount
        self.bricks = bricks
        self.replicas = replicas
        self.base_port = free_port_range(bricks + 1)
        self.mount = os.path.join(self.dir, "mnt")
        self.env = dict(os.environ)
        if "SPOOL_BUILD_DIR" in os.environ:
            self.env["SPOOL_BUILD"] = os.environ["SPOOL_BUILD_DIR"]

    def run(self, *args):
        return subprocess.run([SPOOL, *args, "--dir", self.dir], env=self.env, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout

    def up(self):
        out = self.run("up", "--no-build", "--bricks", str(self.bricks), "--replicas", str(self.replicas),
                       "--base-port", str(self.base_port))
        print(out, flush=True)
        return self

    def stop_brick(self, index):
        """SIGKILLs brick `index` (1-based)."""
        with open(os.path.join(self.dir, "brick%d.pid" % index)) as f:
            os.kill(int(f.read().strip()), 9)

    def down(self, keep=False):
        try:
            self.run("down")
        finally:
            if not keep and not os.environ.get("SPOOL_KEEP_TEST_DIRS"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out.append("==> %s <==\n%s" % (name, f.read()[-4000:]))
        return "\n".join(out)
