#!/usr/bin/env python3
"""spoolfs soak test: a mail workload on a spoolfs mount while bricks and meta
are SIGKILLed and restarted at random; at the end every acknowledged message
is present and byte-for-byte correct and the cluster is healthy again.

Workload (threads, all on the mount):
  deliverers  tmp/UNIQUE -> write -> fsync -> close -> rename into new/; a
              message counts as acknowledged only once rename returned
  readers     read a random acknowledged message and compare it byte for byte
  flaggers    rename new/X -> cur/X:2,S, then toggle cur/X:2,S <-> cur/X:2,FS
  expungers   unlink a message; it leaves the expected set once unlink returned
  listers     list new/ and cur/ of a random mailbox
A message's content is derived from the seed, its mailbox and its unique name
(which carries the size as ",S=<bytes>", as maildir does).

Chaos: at random intervals one daemon is SIGKILLed -- a random brick (never
more than one brick down at a time, so the write quorum of 2 of 3 holds) or
meta -- and started again after a few seconds with `tools/spool start-brick N`
/ `start-meta` (the command line `up` used). The next kill waits until meta
shows every brick up again.

Any OSError in the workload is a failure, printed with its context. At the
end chaos stops, every daemon must be running (a daemon that died on its own
is a failure), `spoolctl status --json` must show every brick up and
pgs_degraded == 0 within --healthy-timeout, and every acknowledged message is
read back through the soak's mount and through a second, fresh mount; new/
and cur/ must hold exactly the expected files. Exit status 0 only if all of
that holds.

Runs the binaries of $SPOOL_BUILD_DIR or $SPOOL_BUILD (default ./build)
without building; `tools/spool soak` builds first."""
import argparse
import base64
import collections
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spoolcluster import Cluster  # noqa: E402

T0 = time.monotonic()
_print_lock = threading.Lock()


def log(msg):
    with _print_lock:
        print("[%7.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__


# ------------------------------------------------------------------ messages

def pick_size(rng):
    """Mostly 1-10 KiB, some under 1 KiB, a few large ones up to 1 MiB."""
    r = rng.random()
    if r < 0.10:
        return rng.randint(300, 1023)
    if r < 0.85:
        return rng.randint(1024, 10 * 1024)
    if r < 0.97:
        return rng.randint(10 * 1024 + 1, 128 * 1024)
    return rng.randint(128 * 1024 + 1, 1024 * 1024)


def message_bytes(seed, mailbox, base):
    """The content of message `base` (unique name without flags, ending in
    ",S=<size>") in `mailbox`: a function of seed, mailbox and name only."""
    size = int(base.rsplit(",S=", 1)[1])
    rng = random.Random("%s/%s/%s" % (seed, mailbox, base))
    header = ("Return-Path: <soak@example.test>\nFrom: Soak <soak@example.test>\nTo: <%s@example.test>\n"
              "Subject: soak %s\nMessage-ID: <%s@soak.example.test>\n\n" % (mailbox, base, base)).encode()
    body = base64.encodebytes(rng.randbytes(size * 3 // 4 + 3))
    return (header + body)[:size]


class Msg:
    __slots__ = ("mailbox", "base", "folder", "name", "busy")

    def __init__(self, mailbox, base):
        self.mailbox, self.base, self.folder, self.name, self.busy = mailbox, base, "new", base, False

    def rel(self):
        return "%s/Maildir/%s/%s" % (self.mailbox, self.folder, self.name)


class Expected:
    """The acknowledged messages. A worker claims a message before touching
    it, so no two operations on one message overlap (they would race
    legitimately, as two IMAP sessions on one message do)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.msgs = []      # for random choice
        self.index = {}     # (mailbox, base) -> position in msgs

    def __len__(self):
        with self.lock:
            return len(self.msgs)

    def add(self, m):
        with self.lock:
            self.index[(m.mailbox, m.base)] = len(self.msgs)
            self.msgs.append(m)

    def remove(self, m):
        with self.lock:
            i = self.index.pop((m.mailbox, m.base))
            last = self.msgs.pop()
            if last is not m:
                self.msgs[i] = last
                self.index[(last.mailbox, last.base)] = i

    def claim(self, rng, want=None):
        with self.lock:
            for _ in range(20):
                if not self.msgs:
                    return None
                m = self.msgs[rng.randrange(len(self.msgs))]
                if not m.busy and (want is None or want(m)):
                    m.busy = True
                    return m
            return None

    def release(self, m):
        with self.lock:
            m.busy = False

    def snapshot(self):
        with self.lock:
            return list(self.msgs)


# ------------------------------------------------------------------ soak

class Soak:
    def __init__(self, args, cluster):
        self.args = args
        self.cluster = cluster
        self.seed = args.seed
        self.root = os.path.join(cluster.mount, "soak-%d" % args.seed)
        self.mailboxes = ["user%02d" % i for i in range(args.mailboxes)]
        self.expected = Expected()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures = []          # every failure, as printed
        self.error_kinds = collections.Counter()
        self.stats = collections.Counter()
        self.max_latency = collections.defaultdict(float)
        self.seq = 0
        self.current = {}           # thread name -> (op, path, start)
        self.chaos = None
        self.agent = None

    # -- bookkeeping
    def fail(self, text):
        with self.lock:
            self.failures.append(text)
            n = len(self.failures)
        if n <= 100:
            log("FAIL: " + text)
        elif n == 101:
            log("FAIL: (more failures; only counted from now on)")

    def context(self):
        return self.chaos.describe() if self.chaos else "no chaos"

    def count(self, what, n=1):
        with self.lock:
            self.stats[what] += n

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def op(self, kind, path, fn, *a):
        """Runs one file-system call; an OSError is recorded with context and re-raised."""
        me = threading.current_thread().name
        start = time.monotonic()
        self.current[me] = (kind, path, start)
        try:
            return fn(*a)
        except OSError as e:
            took = time.monotonic() - start
            with self.lock:
                self.error_kinds["%s %s" % (kind, errname(e))] += 1
            self.fail("%s %s: %s (%s) after %.2f s in %s; chaos: %s" % (
                kind, os.path.relpath(path, self.root), e.strerror or e, errname(e), took, me, self.context()))
            raise
        finally:
            took = time.monotonic() - start
            self.current.pop(me, None)
            with self.lock:
                if took > self.max_latency[kind]:
                    self.max_latency[kind] = took

    def path(self, m, folder=None, name=None):
        return os.path.join(self.root, m.mailbox, "Maildir", folder or m.folder, name or m.name)

    # -- workload
    def setup(self):
        for mb in self.mailboxes:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.root, mb, "Maildir", sub), exist_ok=True)

    def deliver(self, rng):
        mb = rng.choice(self.mailboxes)
        size = pick_size(rng)
        base = "%d.M%dP%d.soak,S=%d" % (int(time.time()), self.next_seq(), os.getpid(), size)
        data = message_bytes(self.seed, mb, base)
        tmp = os.path.join(self.root, mb, "Maildir", "tmp", base)
        new = os.path.join(self.root, mb, "Maildir", "new", base)
        try:
            fd = self.op("create", tmp, os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return
        ok = False
        try:
            view = memoryview(data)
            while view:
                n = self.op("write", tmp, os.write, fd, view[:64 * 1024])
                view = view[n:]
            self.op("fsync", tmp, os.fsync, fd)
            ok = True
        except OSError:
            pass
        finally:
            try:
                self.op("close", tmp, os.close, fd)
            except OSError:
                ok = False
        if not ok:
            return
        try:
            self.op("rename", tmp, os.rename, tmp, new)
        except OSError:
            return
        self.expected.add(Msg(mb, base))
        self.count("delivered")
        self.count("delivered_bytes", size)

    def read(self, rng):
        m = self.expected.claim(rng)
        if m is None:
            return False
        try:
            p = self.path(m)
            want = message_bytes(self.seed, m.mailbox, m.base)
            try:
                got = self.read_file(p)
            except OSError:
                return True
            self.count("read")
            if got != want:
                self.fail("read %s: content differs: %s; chaos: %s" % (m.rel(), diff(want, got), self.context()))
            return True
        finally:
            self.expected.release(m)

    def read_file(self, p):
        fd = self.op("open", p, os.open, p, os.O_RDONLY)
        try:
            parts = []
            while True:
                b = self.op("read", p, os.read, fd, 256 * 1024)
                if not b:
                    return b"".join(parts)
                parts.append(b)
        finally:
            self.op("close", p, os.close, fd)

    def flag(self, rng):
        m = self.expected.claim(rng)
        if m is None:
            return False
        try:
            if m.folder == "new":
                folder, name = "cur", m.base + ":2,S"
            else:
                folder, name = "cur", m.base + (":2,FS" if m.name.endswith(":2,S") else ":2,S")
            src, dst = self.path(m), self.path(m, folder, name)
            try:
                self.op("rename", src, os.rename, src, dst)
            except OSError:
                return True
            m.folder, m.name = folder, name
            self.count("flagged")
            return True
        finally:
            self.expected.release(m)

    def expunge(self, rng):
        if len(self.expected) < 50:
            return False
        m = self.expected.claim(rng)
        if m is None:
            return False
        try:
            p = self.path(m)
            try:
                self.op("unlink", p, os.unlink, p)
            except OSError:
                return True
            self.expected.remove(m)
            self.count("expunged")
            return True
        finally:
            self.expected.release(m)

    def list(self, rng):
        mb = rng.choice(self.mailboxes)
        for sub in ("new", "cur"):
            p = os.path.join(self.root, mb, "Maildir", sub)
            try:
                self.op("listdir", p, os.listdir, p)
            except OSError:
                return True
        self.count("listed")
        return True

    def worker(self, kind, index):
        rng = random.Random("%s/%s/%d" % (self.seed, kind, index))
        fn, pause = {
            "deliver": (self.deliver, 0.0),
            "read": (self.read, 0.01),
            "flag": (self.flag, 0.02),
            "expunge": (self.expunge, 0.08),
            "list": (self.list, 0.2),
        }[kind]
        while not self.stop.is_set():
            errors = len(self.failures)
            try:
                did = fn(rng)
            except Exception as e:  # a bug in the soak itself: report, do not hide
                self.fail("%s worker crashed: %r" % (kind, e))
                did = True
            if len(self.failures) != errors:
                time.sleep(0.5)  # do not spin on a dead mount
            elif not did:
                time.sleep(0.05)
            elif pause:
                time.sleep(rng.uniform(0, 2 * pause))

    # -- checks at the end
    def wait_healthy(self, timeout, settle=6.0):
        """Seconds until every brick is up and no PG is degraded, or None.
        Healthy must hold for `settle` seconds, longer than meta takes to mark
        a silent brick down (5 s), so that a brick that died just now counts."""
        start = time.monotonic()
        last, err, since = None, None, None
        while time.monotonic() - start < timeout + settle:
            try:
                last = self.agent.call("status")
                err = None
                bricks = last.get("bricks", [])
                if (len(bricks) >= self.cluster.bricks and all(b.get("state") == "up" for b in bricks)
                        and last.get("pgs_degraded") == 0):
                    since = time.monotonic() if since is None else since
                    if time.monotonic() - since >= settle:
                        return since - start
                else:
                    since = None
                    if time.monotonic() - start >= timeout:
                        break
            except Exception as e:
                err, since = e, None
            time.sleep(0.5)
        import json
        self.fail("cluster not healthy %.0f s after chaos stopped (every brick up, pgs_degraded == 0); "
                  "last status: %s%s" % (timeout, json.dumps(last, indent=1) if last else "none",
                                         "; last error: %s" % err if err else ""))
        return None

    def verify(self, mount, label):
        """Reads every expected message through `mount` and compares new/ and
        cur/ of every mailbox with the expected set."""
        root = os.path.join(mount, os.path.relpath(self.root, self.cluster.mount))
        by_dir = collections.defaultdict(dict)
        for m in self.expected.snapshot():
            by_dir[(m.mailbox, m.folder)][m.name] = m
        missing = corrupt = unexpected = checked = 0
        nbytes = 0
        for mb in self.mailboxes:
            for sub in ("new", "cur"):
                d = os.path.join(root, mb, "Maildir", sub)
                want = by_dir.get((mb, sub), {})
                try:
                    have = set(os.listdir(d))
                except OSError as e:
                    self.fail("verify (%s): listdir %s/%s: %s" % (label, mb, sub, e))
                    continue
                for name in sorted(have - set(want)):
                    unexpected += 1
                    self.fail("verify (%s): unexpected file %s/Maildir/%s/%s" % (label, mb, sub, name))
                for name, m in sorted(want.items()):
                    p = os.path.join(d, name)
                    if name not in have:
                        missing += 1
                        self.fail("verify (%s): acknowledged message missing: %s" % (label, m.rel()))
                        continue
                    try:
                        got = read_file(p)
                    except OSError as e:
                        corrupt += 1
                        self.fail("verify (%s): read %s: %s (%s)" % (label, m.rel(), e.strerror, errname(e)))
                        continue
                    good = message_bytes(self.seed, m.mailbox, m.base)
                    checked += 1
                    nbytes += len(got)
                    if got != good:
                        corrupt += 1
                        self.fail("verify (%s): %s: content differs: %s" % (label, m.rel(), diff(good, got)))
        log("verified through %s: %d messages (%.1f MiB) read, %d missing, %d corrupt, %d unexpected" % (
            label, checked, nbytes / 2**20, missing, corrupt, unexpected))
        return checked, missing, corrupt, unexpected


def read_file(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        parts = []
        while True:
            b = os.read(fd, 256 * 1024)
            if not b:
                return b"".join(parts)
            parts.append(b)
    finally:
        os.close(fd)


def diff(want, got):
    if len(want) != len(got):
        return "%d bytes, expected %d" % (len(got), len(want))
    i = next(i for i in range(len(want)) if want[i] != got[i])
    return "first difference at byte %d of %d (got %r, expected %r)" % (i, len(want), got[i:i + 16], want[i:i + 16])


# ------------------------------------------------------------------ agent

class AgentError(Exception):
    pass


class Agent:
    """Starts processes (daemons, spoolctl, mounts) for the soak from a helper
    process that never opens a file on the mount.

    Why: a child made by fork+exec closes every descriptor it inherited (at
    exec, or close_fds), and closing a descriptor of a FUSE file sends FLUSH,
    which the mount answers by committing the file -- to meta. While meta is
    down that blocks for up to the mount's hard timeout (60 s) per open file,
    so starting meta again from a process whose threads hold open files on
    the mount waits minutes for meta itself. (Measured: subprocess.run(["true"])
    took 175 s with three writer threads during a meta outage.)"""

    def __init__(self, cluster_dir):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--agent", cluster_dir],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lock = threading.Lock()

    def call(self, method, *args):
        with self.lock:
            try:
                self.proc.stdin.write(json.dumps({"call": method, "args": args}) + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            except OSError as e:
                raise AgentError("agent process: %s" % e)
        if not line:
            raise AgentError("agent process exited (status %s)" % self.proc.poll())
        reply = json.loads(line)
        if not reply["ok"]:
            raise AgentError(reply["error"])
        return reply["result"]

    def run(self, argv, log_file=None):
        """(returncode, output) of `argv`; its output goes to `log_file` if
        given (for a program that leaves a daemon behind holding it)."""
        return self.call("run", argv, log_file)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def agent_main(cluster_dir):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cluster = Cluster.attach(cluster_dir)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["call"] == "run":
                argv, log_file = req["args"][0], req["args"][1] if len(req["args"]) > 1 else None
                if log_file:
                    with open(log_file, "a") as out:
                        result = [subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode, ""]
                else:
                    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    result = [r.returncode, r.stdout]
            else:
                result = getattr(cluster, req["call"])(*req["args"])
            reply = {"ok": True, "result": result}
        except subprocess.CalledProcessError as e:
            reply = {"ok": False, "error": "%s\n%s" % (e, (e.output or "").strip())}
        except Exception as e:
            reply = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(reply), flush=True)
    return 0


# ------------------------------------------------------------------ chaos

class Chaos(threading.Thread):
    """Kills one daemon at a time and starts it again. Every third event
    (in shuffled rounds) kills meta, the others a random brick."""

    def __init__(self, soak, rng, until):
        super().__init__(name="chaos", daemon=True)
        self.soak, self.cluster, self.rng, self.until = soak, soak.cluster, rng, until
        self.down = None            # (name, since) of the daemon killed now
        self.kills = collections.Counter()
        self.longest = collections.defaultdict(float)
        self.recoveries = []        # seconds from restart until meta shows all bricks up
        self.events = collections.deque(maxlen=4)
        self.lock = threading.Lock()

    def describe(self):
        with self.lock:
            now = time.monotonic() - T0
            down = "%s down for %.1f s" % (self.down[0], now - self.down[1]) if self.down else "all running"
            recent = ", ".join("%s at %.1fs" % (what, t) for t, what in self.events)
        return "%s (recent: %s)" % (down, recent or "none")

    def event(self, what):
        with self.lock:
            self.events.append((time.monotonic() - T0, what))
        log("chaos: " + what)

    def check_alive(self):
        for name in self.cluster.daemons():
            if not self.cluster.alive(name):
                self.soak.fail("%s died without being killed; last log lines:\n%s" % (name, tail(self.cluster, name)))
                self.restart(name)

    def restart(self, name):
        log("chaos: starting %s" % name)
        try:
            self.soak.agent.call("start", name)
        except AgentError as e:
            self.soak.fail("could not start %s again: %s\n%s" % (name, e, tail(self.cluster, name)))
            return False
        self.event("%s started again (pid %s)" % (name, self.cluster.pid(name)))
        return True

    def wait_all_up(self, why, timeout=30):
        start = time.monotonic()
        last = None
        while time.monotonic() - start < timeout:
            try:
                last = self.soak.agent.call("status", 5)
                bricks = last.get("bricks", [])
                if len(bricks) >= self.cluster.bricks and all(b.get("state") == "up" for b in bricks):
                    return time.monotonic() - start
            except Exception as e:
                last = str(e)
            time.sleep(0.2)
        self.soak.fail("meta does not show every brick up %d s after %s; last status: %s" % (timeout, why, last))
        return None

    def run(self):
        kinds = []
        while not self.soak.stop.wait(self.rng.uniform(*self.soak.args.gap)):
            if time.monotonic() > self.until:
                break
            self.check_alive()
            if not kinds:
                kinds = ["brick", "brick", "meta"]
                self.rng.shuffle(kinds)
            kind = kinds.pop()
            if kind == "meta":
                name, outage = "meta", self.rng.uniform(*self.soak.args.meta_outage)
            else:
                name = "brick%d" % self.rng.randint(1, self.cluster.bricks)
                outage = self.rng.uniform(*self.soak.args.brick_outage)
            pid = self.cluster.pid(name)
            with self.lock:
                self.down = (name, time.monotonic() - T0)
            self.cluster.kill(name)
            self.kills[name] += 1
            self.event("SIGKILL %s (pid %s), back in %.1f s" % (name, pid, outage))
            self.soak.stop.wait(outage)
            with self.lock:
                took = time.monotonic() - T0 - self.down[1]
                self.down = None
            self.longest[kind] = max(self.longest[kind], took)
            if self.restart(name):
                up = self.wait_all_up("%s was started again" % name)
                if up is not None:
                    self.recoveries.append(up)


def tail(cluster, name, lines=20):
    try:
        with open(os.path.join(cluster.dir, name + ".log"), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return "(no log: %s)" % e


# ------------------------------------------------------------------ main

class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tools/spool soak",
        description="Mail workload on a spoolfs mount while bricks and meta are killed and restarted at random; "
                    "then every acknowledged message must be intact and the cluster healthy.")
    p.add_argument("--minutes", type=float, default=5.0, help="how long the workload and chaos run (default 5)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--bricks", type=int, default=3, help="bricks (default 3; 3 copies, quorum 2)")
    p.add_argument("--dir", default=None,
                   help="cluster directory (default: a new temporary one, removed after a passing run)")
    p.add_argument("--mailboxes", type=int, default=16, help="maildirs to deliver into (default 16)")
    p.add_argument("--deliverers", type=int, default=4, help="delivering threads (default 4)")
    p.add_argument("--readers", type=int, default=2, help="reading threads (default 2)")
    p.add_argument("--healthy-timeout", type=float, default=120.0,
                   help="seconds the cluster has to become healthy after chaos stops (default 120)")
    p.add_argument("--no-chaos", action="store_true", help="workload only, nothing is killed")
    p.add_argument("--inject-fault", choices=["corrupt-message", "lose-message", "extra-file", "brick-down"],
                   help="check the checker: damage the result on purpose; the run must then fail")
    a = p.parse_args(argv)
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 2**31)
    if a.bricks < 3:
        p.error("--bricks must be at least 3 (one brick down must leave a write quorum of 2)")
    a.gap = (2.0, 6.0)            # seconds between one daemon back up and the next kill
    a.brick_outage = (1.0, 10.0)  # longer than meta's 5 s down-after some of the time
    a.meta_outage = (1.0, 10.0)   # well within the mount's 60 s hard-mount bound
    return a


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("soak: seed %d, %.1f min, %d bricks, %d mailboxes, %d deliverers, %d readers, build %s%s" % (
        args.seed, args.minutes, args.bricks, args.mailboxes, args.deliverers, args.readers,
        os.environ.get("SPOOL_BUILD_DIR") or os.environ.get("SPOOL_BUILD") or "build",
        ", fault injected: " + args.inject_fault if args.inject_fault else ""), flush=True)
    cluster = Cluster(bricks=args.bricks, replicas=3, dir=args.dir, prefix="spoolsoak.")
    soak = Soak(args, cluster)
    verify_mount = None
    agent = None
    interrupted = None
    healthy_after = None
    verified = []
    try:
        cluster.up()
        soak.agent = agent = Agent(cluster.dir)  # before any file on the mount is opened
        soak.setup()
        until = time.monotonic() + args.minutes * 60
        threads = []
        for kind, n in (("deliver", args.deliverers), ("read", args.readers), ("flag", 1), ("expunge", 1),
                        ("list", 1)):
            for i in range(n):
                t = threading.Thread(target=soak.worker, args=(kind, i), name="%s%d" % (kind, i), daemon=True)
                t.start()
                threads.append(t)
        if not args.no_chaos:
            soak.chaos = Chaos(soak, random.Random("%d/chaos" % args.seed), until)
            soak.chaos.start()
        next_report = time.monotonic() + 15
        while time.monotonic() < until:
            time.sleep(0.5)
            if time.monotonic() >= next_report:
                next_report += 15
                with soak.lock:
                    s = dict(soak.stats)
                log("progress: delivered %d read %d flagged %d expunged %d listed %d, expected %d, failures %d; %s" % (
                    s.get("delivered", 0), s.get("read", 0), s.get("flagged", 0), s.get("expunged", 0),
                    s.get("listed", 0), len(soak.expected), len(soak.failures), soak.context()))

        log("stopping workload and chaos")
        soak.stop.set()
        if soak.chaos:
            soak.chaos.join(90)
            if soak.chaos.is_alive():
                soak.fail("chaos thread did not finish within 90 s")
        deadline = time.monotonic() + 120
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        for name, (kind, path, start) in list(soak.current.items()):
            soak.fail("%s still blocked in %s %s after %.0f s" % (name, kind, path, time.monotonic() - start))

        if args.inject_fault == "brick-down":
            cluster.kill("brick1")
            log("fault injected: brick1 killed and left down")
        for name in cluster.daemons():
            if not cluster.alive(name):
                soak.fail("%s is not running at the end; last log lines:\n%s" % (name, tail(cluster, name)))
                if args.inject_fault == "brick-down":
                    continue  # left down: the health check must notice too
                try:
                    agent.call("start", name)
                except AgentError as e:
                    soak.fail("could not start %s: %s" % (name, e))
        if not os.path.ismount(cluster.mount):
            soak.fail("%s is no longer mounted; mount log:\n%s" % (cluster.mount, tail(cluster, "mount")))

        healthy_after = soak.wait_healthy(args.healthy_timeout)
        if healthy_after is not None:
            log("cluster healthy %.1f s after chaos stopped" % healthy_after)

        inject(args, soak)
        verified.append(("soak mount",) + soak.verify(cluster.mount, "soak mount"))
        verify_mount = os.path.join(cluster.dir, "mnt-verify")
        os.makedirs(verify_mount, exist_ok=True)
        rc, out = agent.run([os.path.join(cluster.build, "fusemount", "spoolfs"), "--meta", cluster.meta,
                             "--cluster-key", cluster.key, "--log-file",
                             os.path.join(cluster.dir, "verify-mount.log"), verify_mount],
                            os.path.join(cluster.dir, "verify-mount.log"))
        if rc != 0:
            raise RuntimeError("second mount failed (exit %d): %s" % (rc, out))
        verified.append(("fresh mount",) + soak.verify(verify_mount, "fresh mount"))
    except Interrupted as e:
        interrupted = str(e)
        soak.fail("interrupted by %s" % e)
    except Exception as e:
        import traceback
        soak.fail("soak aborted: %s\n%s" % (e, traceback.format_exc()))
    finally:
        soak.stop.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleaning up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if soak.chaos and soak.chaos.is_alive():
            soak.chaos.join(30)
        if verify_mount and os.path.ismount(verify_mount):
            if agent.run(["fusermount3", "-u", verify_mount])[0] != 0:
                agent.run(["umount", "-l", verify_mount])
        passed = not soak.failures
        if not passed:
            for name in cluster.daemons() + ["mount"]:
                print("==> %s/%s.log (last lines) <==\n%s" % (cluster.dir, name, tail(cluster, name, 15)), flush=True)
        try:
            if agent:
                agent.call("down")
                for m in (cluster.mount, verify_mount):
                    if m and os.path.ismount(m):  # a dead mount process leaves its mount behind
                        agent.run(["umount", "-l", m])
                agent.close()
            else:
                cluster.down(keep=True)
        except (AgentError, subprocess.CalledProcessError) as e:
            soak.fail("tools/spool down failed: %s" % (getattr(e, "output", None) or e))
            passed = False
        if passed and cluster.owns_dir and not os.environ.get("SPOOL_KEEP_TEST_DIRS"):
            shutil.rmtree(cluster.dir, ignore_errors=True)

    summary(args, soak, healthy_after, verified, passed, cluster)
    if interrupted:
        return 130
    return 0 if passed else 1


def inject(args, soak):
    f = args.inject_fault
    msgs = soak.expected.snapshot()
    if not f or f == "brick-down" or not msgs:
        return
    m = random.Random(args.seed).choice(msgs)
    p = soak.path(m)
    if f == "corrupt-message":
        with open(p, "r+b") as fh:
            fh.seek(len(message_bytes(soak.seed, m.mailbox, m.base)) // 2)
            fh.write(b"\x00")
    elif f == "lose-message":
        os.unlink(p)
    elif f == "extra-file":
        with open(os.path.join(soak.root, m.mailbox, "Maildir", "new", "stray.soak,S=1"), "wb") as fh:
            fh.write(b"x")
    log("fault injected: %s on %s" % (f, m.rel()))


def summary(args, soak, healthy_after, verified, passed, cluster):
    s = soak.stats
    ch = soak.chaos
    print("\nsoak summary (seed %d, %.1f min, %d bricks)" % (args.seed, args.minutes, args.bricks))
    print("  workload: delivered %d (%.1f MiB), read %d, flagged %d, expunged %d, listed %d; %d messages expected" % (
        s["delivered"], s["delivered_bytes"] / 2**20, s["read"], s["flagged"], s["expunged"], s["listed"],
        len(soak.expected)))
    lat = ", ".join("%s %.1f s" % (k, v) for k, v in sorted(soak.max_latency.items()))
    print("  slowest call of each kind: %s" % (lat or "none"))
    if ch:
        bricks = sum(v for k, v in ch.kills.items() if k != "meta")
        per = ", ".join("%s %d" % (k, v) for k, v in sorted(ch.kills.items()) if k != "meta")
        print("  kills: %d brick (%s), %d meta; longest outage: brick %.1f s, meta %.1f s; "
              "all bricks up again after a restart within %.1f s at most" % (
                  bricks, per or "none", ch.kills["meta"], ch.longest["brick"], ch.longest["meta"],
                  max(ch.recoveries, default=0)))
    else:
        print("  kills: none (--no-chaos)")
    errs = sum(soak.error_kinds.values())
    print("  workload errors: %d%s" % (errs, " (" + ", ".join(
        "%s: %d" % kv for kv in soak.error_kinds.most_common()) + ")" if errs else ""))
    print("  healthy after chaos stopped: %s" % ("%.1f s" % healthy_after if healthy_after is not None else "NO"))
    for label, checked, missing, corrupt, unexpected in verified:
        print("  verified through the %s: %d messages, %d missing, %d corrupt, %d unexpected" % (
            label, checked, missing, corrupt, unexpected))
    if passed:
        print("soak: PASS")
    else:
        print("soak: FAIL (%d failures; cluster directory kept: %s)" % (len(soak.failures), cluster.dir))
        for f in soak.failures[:10]:
            print("  - " + f.splitlines()[0])
    sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--agent"]:
        sys.exit(agent_main(sys.argv[2]))
    sys.exit(main(sys.argv[1:]))
