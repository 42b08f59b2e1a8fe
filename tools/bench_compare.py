#!/usr/bin/env python3
"""spoolfs side by side with other filesystems on this machine (issue 9).

Each system is set up, measured and torn down by this script, one after the
other, with the same parameters; with --rounds N the order alternates (round 1
in the order below, round 2 reversed, ...) so that neither end of the list
always runs on a warmer or busier machine. Rows:

  spoolfs                  3 bricks, 3 copies, `tools/spool up` (base port 7300)
  local disk               a directory on the filesystem holding /tmp
  fuse passthrough         libfuse's passthrough_ll over a local directory, its
                           default options: the ceiling of any FUSE filesystem
  moosefs goal 3 fsync     master + 3 chunkservers, goal 3, chunkservers with
                           HDD_FSYNC_BEFORE_CLOSE = 1 (durable like spoolfs)
  moosefs goal 3 default   the same with MooseFS's default (no fsync on the
                           chunkservers: a write is acknowledged from page cache)
  glusterfs replica 3      one replica-3 volume of 3 brick directories, default
                           options
  glusterfs ... tuned      the same with the small-file tuning of the Gluster
                           docs (GLUSTER_SMALL_FILE_OPTIONS)

On every mount: `spool-bench maildir` (deliver with fsync, scan, read, flag,
expunge, then every message verified) and Debian's postmark with the
mail-like configuration POSTMARK_CONFIG. Also per system: the peak memory
(VmHWM, read just before teardown) of each of its daemons and of its mount,
and the CPU seconds (user+system) those processes spent per 1,000 deliveries
during the deliver phase (spool-bench maildir --cpu-pids).

Isolation: everything lives under /tmp/cmp-*; glusterd is our own, bound to
127.0.0.2 (the gluster CLI refuses bricks on localhost/127.0.0.1) with its
state in /tmp/cmp-gluster, not /var/lib/glusterd; MooseFS refuses chunkservers
on loopback addresses, so it runs in a network namespace of its own whose lo
carries 10.77.0.1/8 (nothing leaves the namespace). Teardown runs after a
failure, Ctrl-C or SIGTERM too; a system that fails to set up or to run is
shown as "failed: reason" and the others still run.

Runs the binaries of $SPOOL_BUILD (default ./build) without building;
`tools/spool bench-compare` builds first."""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPOOL = os.path.join(ROOT, "tools", "spool")
BUILD = os.path.abspath(os.environ.get("SPOOL_BUILD") or os.path.join(ROOT, "build"))
SPOOL_BENCH = os.path.join(BUILD, "tools", "bench", "spool-bench")
# Raw output of the workloads and every daemon's log, kept after teardown.
LOG_DIR = os.path.join(BUILD, "bench-compare-logs")

SPOOL_DIR = "/tmp/cmp-spool"
SPOOL_BASE_PORT = 7300
LOCAL_DIR = "/tmp/cmp-local"
GLUSTER_DIR = "/tmp/cmp-gluster"
GLUSTER_HOST = "127.0.0.2"
GLUSTER_VOLUME = "cmpvol"
MOOSEFS_DIR = "/tmp/cmp-moosefs"
MOOSEFS_NETNS = "cmp-moosefs"
MOOSEFS_HOST = "10.77.0.1"  # on the namespace's own lo; see MooseFs
MOOSEFS_CLIENT_PORT = 9421
MOOSEFS_CHUNKSERVER_PORT = 9422  # chunkserver i listens on this + i - 1

PASSTHROUGH_SOURCE = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c"

# postmark, one fixed mail-like configuration: 2,000 files of 1-64 KiB (a
# spool's messages) in 50 subdirectories (mailboxes), 5,000 transactions
# (each a create or delete paired with a read or append), unbuffered I/O in
# 4 KiB blocks, fixed seed. postmark times itself in whole seconds, so a
# fast system's figure is coarse (5,000 transactions in 1 s vs 2 s).
POSTMARK_CONFIG = """set location {location}
set number 2000
set size 1024 65536
set subdirectories 50
set transactions 5000
set buffering false
set read 4096
set write 4096
set seed 42
run
quit
"""

# The Gluster docs' small-file tuning ("Small file performance
# enhancements" and "Directory operations" / metadata caching of the Gluster
# administration guides): the metadata-cache and nl-cache option groups
# spelled out (a group file is read from glusterd's working directory, which
# here is our own), lookup-optimize, client-side io-threads and parallel
# readdir. client/server.event-threads are left at their default of 2: the
# guides advise no more than the machine's cores, and this machine has 2.
GLUSTER_SMALL_FILE_OPTIONS = [
    ("features.cache-invalidation", "on"),
    ("features.cache-invalidation-timeout", "600"),
    ("performance.stat-prefetch", "on"),
    ("performance.cache-invalidation", "on"),
    ("performance.md-cache-timeout", "600"),
    ("network.inode-lru-limit", "200000"),
    ("performance.nl-cache", "on"),
    ("performance.nl-cache-timeout", "600"),
    ("cluster.lookup-optimize", "on"),
    ("performance.client-io-threads", "on"),
    ("performance.readdir-ahead", "on"),
    ("performance.parallel-readdir", "on"),
]

PHASES = ["deliver", "scan_entries", "read", "flag", "expunge"]
PHASE_HEADERS = ["deliver/s", "scan ent/s", "read/s", "flag/s", "expunge/s"]


class SetupError(Exception):
    """A system could not be set up or measured; the message says why."""


T0 = time.monotonic()


def log(msg):
    print("bench-compare [%4.0fs] %s" % (time.monotonic() - T0, msg), flush=True)


def run(cmd, timeout=120, check=True, **kwargs):
    """Runs cmd, capturing its output; raises SetupError naming the command
    and its last words if it fails or times out."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise SetupError("%s timed out after %ds" % (" ".join(cmd[:3]), timeout))
    except OSError as e:
        raise SetupError("%s: %s" % (cmd[0], e))
    if check and proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise SetupError("%s exited %d: %s" % (" ".join(cmd[:4]), proc.returncode, " / ".join(last)))
    return proc


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SetupError("%s: not within %ds" % (what, timeout))


def mounted(path):
    """True if path is a mount point (also when its FUSE daemon has died,
    where os.path.ismount fails on ENOTCONN)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def unmount(path):
    if not mounted(path):
        return
    for cmd in (["umount", path], ["fusermount3", "-u", path], ["umount", "-l", path]):
        if subprocess.run(cmd, capture_output=True).returncode == 0 and not mounted(path):
            return
    log("warning: could not unmount %s" % path)


def alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid, timeout=15):
    """SIGTERM, then SIGKILL after timeout s, to one process we started."""
    if not pid or not alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_processes_under(directory, timeout=15):
    """Stops the processes whose command line names our own directory: the
    daemons a system's own daemons spawned (gluster bricks, self-heal daemon)
    when setup failed before we learnt their pids."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and directory + "/" in cmdline(int(entry)):
            stop_pid(int(entry), timeout)


def start_daemon(cmd, log_path):
    """Starts a foreground daemon in its own session (so that Ctrl-C reaches
    only this script, which then tears down in order); returns its Popen."""
    logf = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    except OSError as e:
        raise SetupError("%s: %s" % (cmd[0], e))
    finally:
        logf.close()


def stop_popen(proc, timeout=15):
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def vm_hwm_mib(pid):
    """Peak resident memory of pid in MiB (VmHWM), None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def tcp_listening(host, port):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        return s.connect_ex((host, port)) == 0
    finally:
        s.close()


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


# ---------------------------------------------------------------- systems

class System:
    """One row of the table. setup() returns the directory to benchmark;
    processes() lists (label, pid) of its daemons and mount; check() may
    return a note for the table (e.g. a copy count); teardown() must undo
    whatever part of setup() ran, and may be called more than once.
    Daemons log into self.logs(), which outlives teardown."""
    name = ""
    vmimage = False  # also runs spool-bench vmimage (issue 10)

    def slug(self):
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def logs(self):
        return os.path.join(LOG_DIR, self.slug() + ".daemons")

    def fresh_logs(self):
        shutil.rmtree(self.logs(), ignore_errors=True)
        os.makedirs(self.logs())

    def setup(self):
        raise NotImplementedError

    def processes(self):
        return []

    def check(self, mount):
        return ""

    def teardown(self):
        pass


class Spoolfs(System):
    name = "spoolfs 3 bricks, 3 copies"
    vmimage = True

    def setup(self):
        if os.path.exists(os.path.join(SPOOL_DIR, "cluster.env")):
            self.teardown()
        self.fresh_logs()
        fresh_dir(SPOOL_DIR)
        env = dict(os.environ, SPOOL_BUILD=BUILD)
        try:
            run([SPOOL, "up", "--dir", SPOOL_DIR, "--bricks", "3", "--replicas", "3", "--base-port",
                 str(SPOOL_BASE_PORT), "--no-build"], timeout=120, env=env, start_new_session=True)
        except SetupError as e:
            raise SetupError("%s (teardown keeps its logs in %s)" % (e, self.logs()))
        mount = os.path.join(SPOOL_DIR, "mnt")
        if not mounted(mount):
            raise SetupError("spoolfs is not mounted at %s; see %s/mount.log" % (mount, self.logs()))
        return mount

    def processes(self):
        out = []
        for label in ["meta", "brick1", "brick2", "brick3", "mount"]:
            try:
                with open(os.path.join(SPOOL_DIR, label + ".pid")) as f:
                    out.append((label, int(f.read().split()[0])))
            except (OSError, ValueError, IndexError):
                pass
        return out

    def teardown(self):
        if os.path.exists(os.path.join(SPOOL_DIR, "cluster.env")):
            subprocess.run([SPOOL, "down", "--dir", SPOOL_DIR], capture_output=True, timeout=120,
                           env=dict(os.environ, SPOOL_BUILD=BUILD))
        unmount(os.path.join(SPOOL_DIR, "mnt"))
        if os.path.isdir(SPOOL_DIR):
            os.makedirs(self.logs(), exist_ok=True)
            for name in os.listdir(SPOOL_DIR):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(SPOOL_DIR, name), self.logs())
        shutil.rmtree(SPOOL_DIR, ignore_errors=True)


class LocalDisk(System):
    name = "local disk"
    vmimage = True

    def setup(self):
        path = os.path.join(LOCAL_DIR, "disk")
        fresh_dir(path)
        return path

    def teardown(self):
        shutil.rmtree(os.path.join(LOCAL_DIR, "disk"), ignore_errors=True)


class FusePassthrough(System):
    """libfuse's passthrough_ll, compiled at run time from the example that
    libfuse3-dev ships (its passthrough_helpers.h sits beside it, which a
    quoted #include finds), mounted with its default options."""
    name = "fuse passthrough"

    def __init__(self):
        self.proc = None
        self.source_dir = os.path.join(LOCAL_DIR, "passthrough-src")
        self.mount = os.path.join(LOCAL_DIR, "passthrough-mnt")
        self.binary = os.path.join(BUILD, "bench-compare", "passthrough_ll")

    def compile(self):
        if not os.path.exists(PASSTHROUGH_SOURCE):
            raise SetupError("%s missing (package libfuse3-dev)" % PASSTHROUGH_SOURCE)
        os.makedirs(os.path.dirname(self.binary), exist_ok=True)
        flags = run(["pkg-config", "fuse3", "--cflags", "--libs"]).stdout.split()
        run(["gcc", "-O2", "-Wall", PASSTHROUGH_SOURCE, *flags, "-o", self.binary], timeout=120)

    def setup(self):
        self.fresh_logs()
        self.compile()
        fresh_dir(self.source_dir)
        unmount(self.mount)
        fresh_dir(self.mount)
        self.proc = start_daemon([self.binary, "-f", "-o", "source=" + self.source_dir, self.mount],
                                 os.path.join(self.logs(), "passthrough_ll.log"))
        wait_until(lambda: mounted(self.mount) or self.proc.poll() is not None, 15, "passthrough_ll mount")
        if not mounted(self.mount):
            raise SetupError("passthrough_ll exited %s; see %s/passthrough_ll.log" % (self.proc.poll(), self.logs()))
        return self.mount

    def processes(self):
        return [("passthrough_ll", self.proc.pid)] if self.proc else []

    def teardown(self):
        unmount(self.mount)
        stop_popen(self.proc)
        self.proc = None
        shutil.rmtree(self.source_dir, ignore_errors=True)
        shutil.rmtree(self.mount, ignore_errors=True)


class GlusterFs(System):
    """Our own glusterd on 127.0.0.2 (state in GLUSTER_DIR/state), one
    replica-3 volume of three brick directories, FUSE-mounted by a glusterfs
    client we start in the foreground."""

    def __init__(self, tuned):
        self.tuned = tuned
        self.name = "glusterfs replica 3" + (" small-file tuned" if tuned else "")
        self.vmimage = not tuned
        self.glusterd = None
        self.client = None
        self.daemon_pids = []  # (label, pid) of bricks and self-heal daemon
        self.mount = os.path.join(GLUSTER_DIR, "mnt")
        self.socket = os.path.join(GLUSTER_DIR, "glusterd.socket")
        self.bricks = [os.path.join(GLUSTER_DIR, "bricks", "b%d" % i) for i in (1, 2, 3)]

    def cli(self, *args, timeout=120, check=True):
        return run(["gluster", "--glusterd-sock=" + self.socket, "--log-file=" + os.path.join(self.logs(), "cli.log"),
                    "--mode=script", *args], timeout=timeout, check=check)

    def write_glusterd_volfile(self, path):
        with open(path, "w") as f:
            f.write("""volume management
    type mgmt/glusterd
    option working-directory {dir}/state
    option run-directory {dir}/run
    option logging-directory {logs}
    option glusterd-sockfile {socket}
    option transport-type socket
    option transport.socket.bind-address {host}
    option transport.socket.listen-port 24007
    option transport.socket.keepalive-time 10
    option transport.socket.keepalive-interval 2
    option transport.socket.read-fail-log off
    option ping-timeout 0
    option event-threads 1
end-volume
""".format(dir=GLUSTER_DIR, socket=self.socket, host=GLUSTER_HOST, logs=self.logs()))

    def setup(self):
        for tool in ("glusterd", "glusterfs", "gluster"):
            if not shutil.which(tool):
                raise SetupError("%s not installed (tools/spool deps)" % tool)
        if tcp_listening(GLUSTER_HOST, 24007):
            raise SetupError("something already listens on %s:24007 (another glusterd?)" % GLUSTER_HOST)
        self.fresh_logs()
        fresh_dir(GLUSTER_DIR)
        for sub in ("state", "run", "mnt", *self.bricks):
            os.makedirs(os.path.join(GLUSTER_DIR, sub), exist_ok=True)
        volfile = os.path.join(GLUSTER_DIR, "glusterd.vol")
        self.write_glusterd_volfile(volfile)
        self.glusterd = start_daemon(
            ["glusterd", "-N", "-f", volfile, "-p", os.path.join(GLUSTER_DIR, "glusterd.pid"),
             "-l", os.path.join(self.logs(), "glusterd.log")],
            os.path.join(self.logs(), "glusterd.out"))
        wait_until(lambda: self.glusterd.poll() is not None
                   or self.cli("peer", "status", timeout=10, check=False).returncode == 0, 30, "glusterd start")
        if self.glusterd.poll() is not None:
            raise SetupError("glusterd exited %d; see %s/glusterd.log" % (self.glusterd.poll(), self.logs()))
        # force: the bricks are directories on the root filesystem, which the
        # CLI otherwise refuses.
        self.cli("volume", "create", GLUSTER_VOLUME, "replica", "3",
                 *["%s:%s" % (GLUSTER_HOST, b) for b in self.bricks], "force")
        if self.tuned:
            for key, value in GLUSTER_SMALL_FILE_OPTIONS:
                self.cli("volume", "set", GLUSTER_VOLUME, key, value)
        self.cli("volume", "start", GLUSTER_VOLUME)
        wait_until(self.read_daemon_pids, 60, "gluster bricks online")
        self.client = start_daemon(
            ["glusterfs", "-N", "--volfile-server=" + GLUSTER_HOST, "--volfile-id=" + GLUSTER_VOLUME,
             "--log-file=" + os.path.join(self.logs(), "client.log"), self.mount],
            os.path.join(self.logs(), "client.out"))
        wait_until(lambda: mounted(self.mount) or self.client.poll() is not None, 30, "glusterfs mount")
        if not mounted(self.mount):
            raise SetupError("glusterfs client exited; see %s/client.log" % self.logs())
        return self.mount

    def read_daemon_pids(self):
        """Fills daemon_pids from `volume status --xml`; true once all three
        bricks are online with a pid."""
        proc = self.cli("volume", "status", GLUSTER_VOLUME, "--xml", timeout=20, check=False)
        if proc.returncode != 0:
            return False
        try:
            tree = ElementTree.fromstring(proc.stdout)
        except ElementTree.ParseError:
            return False
        pids = []
        for node in tree.iter("node"):
            path, pid, online = node.findtext("path"), node.findtext("pid"), node.findtext("status")
            if online != "1" or not pid or int(pid) <= 0:
                continue
            if path in self.bricks:
                pids.append(("brick%d" % (self.bricks.index(path) + 1), int(pid)))
            elif "heal" in (node.findtext("hostname") or "").lower():
                pids.append(("self-heal", int(pid)))
        self.daemon_pids = sorted(pids)
        return sum(1 for label, _ in pids if label.startswith("brick")) == 3

    def processes(self):
        out = [("glusterd", self.glusterd.pid)] if self.glusterd else []
        out += self.daemon_pids
        if self.client:
            out.append(("client", self.client.pid))
        return out

    def teardown(self):
        unmount(self.mount)
        stop_popen(self.client)
        self.client = None
        if self.glusterd and self.glusterd.poll() is None:
            # volume stop also stops the bricks and the self-heal daemon.
            for args in (("volume", "stop", GLUSTER_VOLUME, "force"), ("volume", "delete", GLUSTER_VOLUME)):
                try:
                    self.cli(*args, timeout=60, check=False)
                except SetupError as e:
                    log("warning: gluster %s: %s" % (" ".join(args[:2]), e))
        stop_popen(self.glusterd)
        self.glusterd = None
        for _, pid in self.daemon_pids:
            if GLUSTER_DIR in cmdline(pid):  # still ours, not a reused pid
                stop_pid(pid)
        self.daemon_pids = []
        stop_processes_under(GLUSTER_DIR)
        shutil.rmtree(GLUSTER_DIR, ignore_errors=True)


class MooseFs(System):
    """A master and three chunkservers in network namespace MOOSEFS_NETNS
    (MooseFS refuses chunkservers on loopback addresses, so they use
    10.77.0.1 on the namespace's own lo), goal 3 on the whole mount.
    `nsenter --net` enters only the network namespace, so the FUSE mount
    mfsmount makes there is visible here; the mfs* tools that talk to the
    master run there too."""

    def __init__(self, fsync):
        self.fsync = fsync
        self.name = "moosefs goal 3 " + ("fsync" if fsync else "default (no fsync)")
        self.master = None
        self.chunkservers = []
        self.client = None
        self.netns_created = False
        self.mount = os.path.join(MOOSEFS_DIR, "mnt")

    def in_netns(self, cmd):
        return ["nsenter", "--net=/var/run/netns/" + MOOSEFS_NETNS, *cmd]

    def write_config(self, path, settings):
        with open(path, "w") as f:
            for key, value in settings:
                f.write("%s = %s\n" % (key, value))

    def common_settings(self):
        # root, so that the data directories under /tmp need no mfs owner;
        # nice 0 like every other system here (MooseFS defaults to -19).
        return [("WORKING_USER", "root"), ("WORKING_GROUP", "root"), ("NICE_LEVEL", "0")]

    def setup(self):
        for tool in ("mfsmaster", "mfschunkserver", "mfsmount", "mfscli", "mfssetgoal", "ip", "nsenter"):
            if not shutil.which(tool):
                raise SetupError("%s not installed (tools/spool deps)" % tool)
        if os.path.exists("/var/run/netns/" + MOOSEFS_NETNS):
            raise SetupError("network namespace %s already exists (left by an earlier run? "
                             "'ip netns del %s')" % (MOOSEFS_NETNS, MOOSEFS_NETNS))
        self.fresh_logs()
        fresh_dir(MOOSEFS_DIR)
        run(["ip", "netns", "add", MOOSEFS_NETNS])
        self.netns_created = True
        run(["ip", "netns", "exec", MOOSEFS_NETNS, "ip", "addr", "add", MOOSEFS_HOST + "/8", "dev", "lo"])
        run(["ip", "netns", "exec", MOOSEFS_NETNS, "ip", "link", "set", "lo", "up"])

        master_dir = os.path.join(MOOSEFS_DIR, "master")
        os.makedirs(os.path.join(master_dir, "data"))
        shutil.copy("/var/lib/mfs/metadata.mfs.empty", os.path.join(master_dir, "data", "metadata.mfs"))
        with open(os.path.join(master_dir, "mfsexports.cfg"), "w") as f:
            f.write("* / rw,alldirs,maproot=0\n")
        open(os.path.join(master_dir, "mfstopology.cfg"), "w").close()
        self.write_config(os.path.join(master_dir, "mfsmaster.cfg"), self.common_settings() + [
            ("DATA_PATH", os.path.join(master_dir, "data")),
            ("EXPORTS_FILENAME", os.path.join(master_dir, "mfsexports.cfg")),
            ("TOPOLOGY_FILENAME", os.path.join(master_dir, "mfstopology.cfg")),
            ("MATOML_LISTEN_HOST", MOOSEFS_HOST),
            ("MATOCS_LISTEN_HOST", MOOSEFS_HOST),
            ("MATOCL_LISTEN_HOST", MOOSEFS_HOST),
            ("MATOCL_LISTEN_PORT", MOOSEFS_CLIENT_PORT),
        ])
        self.master = start_daemon(self.in_netns(["mfsmaster", "-f", "-c", os.path.join(master_dir, "mfsmaster.cfg"),
                                                  "start"]), os.path.join(self.logs(), "master.log"))
        # Chunkservers retry a refused connection only after 5 s: start them
        # once the master answers.
        wait_until(lambda: self.master.poll() is not None or self.mfscli("-SIN").returncode == 0, 30,
                   "mfsmaster start")
        if self.master.poll() is not None:
            raise SetupError("mfsmaster exited; see %s/master.log" % self.logs())

        for i in (1, 2, 3):
            cs_dir = os.path.join(MOOSEFS_DIR, "cs%d" % i)
            os.makedirs(os.path.join(cs_dir, "data"))
            os.makedirs(os.path.join(cs_dir, "hdd"))
            with open(os.path.join(cs_dir, "mfshdd.cfg"), "w") as f:
                f.write(os.path.join(cs_dir, "hdd") + "\n")
            self.write_config(os.path.join(cs_dir, "mfschunkserver.cfg"), self.common_settings() + [
                ("DATA_PATH", os.path.join(cs_dir, "data")),
                ("HDD_CONF_FILENAME", os.path.join(cs_dir, "mfshdd.cfg")),
                ("HDD_FSYNC_BEFORE_CLOSE", 1 if self.fsync else 0),
                ("MASTER_HOST", MOOSEFS_HOST),
                ("BIND_HOST", MOOSEFS_HOST),
                ("CSSERV_LISTEN_HOST", MOOSEFS_HOST),
                ("CSSERV_LISTEN_PORT", MOOSEFS_CHUNKSERVER_PORT + i - 1),
            ])
            self.chunkservers.append(start_daemon(
                self.in_netns(["mfschunkserver", "-f", "-c", os.path.join(cs_dir, "mfschunkserver.cfg"), "start"]),
                os.path.join(self.logs(), "chunkserver%d.log" % i)))
        wait_until(lambda: self.chunkservers_connected() == 3, 60, "3 moosefs chunkservers registered")

        os.makedirs(self.mount)
        self.client = start_daemon(self.in_netns(["mfsmount", "-f", "-H", MOOSEFS_HOST, "-P",
                                                  str(MOOSEFS_CLIENT_PORT), self.mount]),
                                   os.path.join(self.logs(), "mfsmount.log"))
        wait_until(lambda: mounted(self.mount) or self.client.poll() is not None, 30, "mfsmount")
        if not mounted(self.mount):
            raise SetupError("mfsmount exited; see %s/mfsmount.log" % self.logs())
        run(self.in_netns(["mfssetgoal", "-r", "3", self.mount]))
        goal = run(self.in_netns(["mfsgetgoal", self.mount])).stdout.strip()
        if not goal.endswith(": 3"):
            raise SetupError("goal of the mount root is not 3: %s" % goal)
        return self.mount

    def mfscli(self, *args):
        return run(self.in_netns(["mfscli", "-H", MOOSEFS_HOST, "-P", str(MOOSEFS_CLIENT_PORT), *args]),
                   timeout=20, check=False)

    def chunkservers_connected(self):
        proc = self.mfscli("-SCS")
        return sum(1 for line in proc.stdout.splitlines() if line.startswith("chunk servers:"))

    def check(self, mount):
        """Writes a sample file and counts the copies of its chunk: goal 3
        must mean 3 copies on 3 chunkservers."""
        sample = os.path.join(mount, "goal-check.sample")
        with open(sample, "wb") as f:
            f.write(os.urandom(1 << 20))
            f.flush()
            os.fsync(f.fileno())
        info = run(self.in_netns(["mfsfileinfo", sample])).stdout
        copies = len(re.findall(r"^\s*copy \d+: .*VALID", info, re.M))
        servers = sorted(set(re.findall(r"copy \d+: (\S+)", info)))
        os.unlink(sample)
        note = "sample file: %d valid copies on %d chunkservers" % (copies, len(servers))
        if copies != 3:
            note += " (EXPECTED 3)"
        return note

    def processes(self):
        out = [("master", self.master.pid)] if self.master else []
        out += [("chunkserver%d" % (i + 1), p.pid) for i, p in enumerate(self.chunkservers)]
        if self.client:
            out.append(("mfsmount", self.client.pid))
        return out

    def teardown(self):
        unmount(self.mount)
        stop_popen(self.client)
        self.client = None
        for proc in self.chunkservers:
            stop_popen(proc)
        self.chunkservers = []
        stop_popen(self.master, timeout=60)  # the master writes its metadata on the way out
        self.master = None
        stop_processes_under(MOOSEFS_DIR)
        if self.netns_created:
            subprocess.run(["ip", "netns", "del", MOOSEFS_NETNS], capture_output=True)
            self.netns_created = False
        shutil.rmtree(MOOSEFS_DIR, ignore_errors=True)


def all_systems():
    return [Spoolfs(), LocalDisk(), FusePassthrough(), MooseFs(fsync=True), MooseFs(fsync=False),
            GlusterFs(tuned=False), GlusterFs(tuned=True)]


# ---------------------------------------------------------------- workloads

class RoundResult:
    def __init__(self):
        self.rates = {}  # phase -> ops/s, plus "postmark"
        self.cpu_per_1000 = None
        self.errors = []  # what went wrong in the workloads, for the table
        self.memory = []  # (label, MiB)
        self.note = ""
        self.seconds = 0.0  # setup + workloads + teardown


def run_maildir(mount, args, pids, log_path, result):
    cmd = [SPOOL_BENCH, "maildir", "--root", mount, "--threads", str(args.threads), "--mailboxes",
           str(args.mailboxes), "--messages", str(args.messages)]
    if pids:
        cmd += ["--cpu-pids", ",".join(str(pid) for _, pid in pids)]
    # Generous: GlusterFS, the slowest, needs ~150 s for 5,000 messages here.
    timeout = 600 + args.messages // 5
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SetupError("spool-bench maildir timed out after %ds" % timeout)
    with open(log_path, "a") as f:
        f.write("$ %s\n%s%s\n" % (" ".join(cmd), proc.stdout, proc.stderr))
    found = re.search(r"^RESULT (.*)$", proc.stdout, re.M)
    if not found:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        raise SetupError("spool-bench maildir exited %d without a RESULT: %s" % (proc.returncode, tail))
    for item in found.group(1).split():
        key, value = item.split("=")
        result.rates[key] = float(value)
    verify = re.search(r"^verify: (\d+) messages present and intact, (\d+) bad; total errors (\d+)", proc.stdout,
                       re.M)
    if not verify:
        result.errors.append("maildir: no verify line")
    elif int(verify.group(3)) or int(verify.group(2)):
        result.errors.append("maildir: %s bad, %s errors" % (verify.group(2), verify.group(3)))
    elif proc.returncode != 0:
        result.errors.append("maildir exited %d" % proc.returncode)
    cpu = re.search(r"^CPU deliver_s=\S+ pids=\d+ gone=(\d+) per_1000=(\S+)", proc.stdout, re.M)
    if cpu:
        result.cpu_per_1000 = float(cpu.group(2))
        if int(cpu.group(1)):
            result.errors.append("%s process(es) gone during deliver" % cpu.group(1))


def run_postmark(mount, log_path, result):
    location = os.path.join(mount, "postmark")
    os.makedirs(location, exist_ok=True)
    config = os.path.join(os.path.dirname(log_path), "postmark.cfg")
    with open(config, "w") as f:
        f.write(POSTMARK_CONFIG.format(location=location))
    try:
        proc = subprocess.run(["postmark", config], capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        raise SetupError("postmark timed out")
    finally:
        shutil.rmtree(location, ignore_errors=True)
    with open(log_path, "a") as f:
        f.write("$ postmark %s\n%s%s\n" % (config, proc.stdout, proc.stderr))
    found = re.search(r"seconds of transactions \((\d+) per second\)", proc.stdout)
    if not found:
        result.errors.append("postmark exited %d without a rate" % proc.returncode)
        return
    result.rates["postmark"] = float(found.group(1))


def run_vmimage(system, mount, args, log_path, result):
    """Issue 10: `spool-bench vmimage` (a VM image's random 4 KiB direct I/O)
    on the systems that host VM images here: spoolfs, the local disk and
    GlusterFS replica 3 (untuned)."""
    if not system.vmimage or args.vm_seconds <= 0:
        return
    cmd = [SPOOL_BENCH, "vmimage", "--root", mount, "--size-mib", str(args.vm_size_mib), "--seconds",
           str(args.vm_seconds)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200 + args.vm_size_mib)
    except subprocess.TimeoutExpired:
        raise SetupError("spool-bench vmimage timed out")
    with open(log_path, "a") as f:
        f.write("$ %s\n%s%s\n" % (" ".join(cmd), proc.stdout, proc.stderr))
    found = re.search(r"^RESULT (.*)$", proc.stdout, re.M)
    if not found or proc.returncode != 0:
        result.errors.append("vmimage exited %d: %s" % (proc.returncode, " / ".join(
            (proc.stderr or proc.stdout).strip().splitlines()[-2:])))
    if found:
        for item in found.group(1).split():
            key, value = item.split("=")
            result.rates[key] = float(value)


# ---------------------------------------------------------------- the table

def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


class Row:
    def __init__(self, name):
        self.name = name
        self.rounds = []  # RoundResult of each round that ran to the end
        self.failures = []  # "round N: reason"

    def rate(self, key):
        return mean([r.rates.get(key) for r in self.rounds])

    def cpu(self):
        return mean([r.cpu_per_1000 for r in self.rounds])

    def seconds(self):
        return sum(r.seconds for r in self.rounds)

    def memory(self):
        """(label, peak MiB over the rounds) per process."""
        peaks = {}
        for r in self.rounds:
            for label, mib in r.memory:
                peaks[label] = max(peaks.get(label, 0), mib)
        return list(peaks.items())


def fmt(value, width, digits=0):
    if value is None:
        return "-".rjust(width)
    return ("{:,.%df}" % digits).format(value).rjust(width)


def render(rows, args, elapsed):
    name_w = max(len(r.name) for r in rows) + 1
    lines = []
    lines.append("spoolfs bench-compare: spool-bench maildir --threads %d --mailboxes %d --messages %d (fsync on); "
                 "postmark 2,000 files 1-64 KiB, 50 dirs, 5,000 transactions; %d round(s), order alternating"
                 % (args.threads, args.mailboxes, args.messages, args.rounds))
    lines.append("")
    keys = PHASES + ["postmark"]
    header = "system".ljust(name_w) + "".join(h.rjust(11) for h in PHASE_HEADERS) + "  postmark/s" \
        + "  CPU s/1k deliv" + "  peak MiB"
    lines.append(header)
    lines.append("-" * len(header))
    for row in rows:
        if not row.rounds:
            lines.append(row.name.ljust(name_w) + ("failed: " + "; ".join(row.failures) if row.failures
                                                   else "not run (interrupted)"))
            continue
        mem = row.memory()
        line = row.name.ljust(name_w) + "".join(fmt(row.rate(k), 11) for k in PHASES) \
            + fmt(row.rate("postmark"), 12) + fmt(row.cpu(), 16, 2) \
            + fmt(sum(m for _, m in mem) if mem else None, 10)
        lines.append(line)
        errors = [e for r in row.rounds for e in r.errors]
        if errors:
            lines.append(" " * name_w + "ERRORS: " + "; ".join(errors))
        if row.failures:
            lines.append(" " * name_w + "failed: " + "; ".join(row.failures))
    lines.append("")
    spool = next((row for row in rows if row.name == Spoolfs.name), None)
    ratio_rows = [row for row in rows if row is not spool] if spool and spool.rounds else []
    if ratio_rows:
        lines.append("spoolfs / system (above 1: spoolfs faster)")
        header = "system".ljust(name_w) + "".join(h.rjust(11) for h in PHASE_HEADERS) + "  postmark/s"
        lines.append(header)
        lines.append("-" * len(header))
    for row in ratio_rows:
        cells = []
        for k in keys:
            a, b = spool.rate(k), row.rate(k)
            cells.append(fmt(a / b if a and b else None, 11 if k != "postmark" else 12, 2))
        lines.append(row.name.ljust(name_w) + "".join(cells))
    if ratio_rows:
        lines.append("")
    vm_rows = [row for row in rows if row.rounds and row.rate("vm_randwrite") is not None]
    if vm_rows:
        lines.append("VM image: spool-bench vmimage, %d MiB image, random 4 KiB O_DIRECT, 16 in flight, %d s each "
                     "(writes end with an fdatasync)" % (args.vm_size_mib, args.vm_seconds))
        header = "system".ljust(name_w) + "randwrite IOPS".rjust(16) + "randread IOPS".rjust(15) \
            + "spoolfs/system w".rjust(18) + "r".rjust(7)
        lines.append(header)
        lines.append("-" * len(header))
        for row in vm_rows:
            cells = [fmt(row.rate("vm_randwrite"), 16), fmt(row.rate("vm_randread"), 15)]
            if spool and spool.rounds and row is not spool and spool.rate("vm_randwrite") is not None:
                cells.append(fmt(spool.rate("vm_randwrite") / row.rate("vm_randwrite"), 18, 2))
                cells.append(fmt(spool.rate("vm_randread") / row.rate("vm_randread"), 7, 2))
            lines.append(row.name.ljust(name_w) + "".join(cells))
        lines.append("")
    lines.append("peak memory (VmHWM, MiB, read just before teardown) of each daemon and mount")
    for row in rows:
        mem = row.memory()
        if not row.rounds:
            detail = "-"
        else:
            detail = ", ".join("%s %.0f" % (label, mib) for label, mib in mem) if mem else "- (no daemons)"
        lines.append("  " + row.name.ljust(name_w) + detail)
    notes = [(row.name, r.note) for row in rows for r in row.rounds if r.note]
    if notes:
        lines.append("")
        lines.append("checks")
        for name, note in notes:
            lines.append("  " + name.ljust(name_w) + note)
    lines.append("")
    if lines[-1]:
        lines.append("")
    lines.append("seconds per system (setup, workloads, teardown; all rounds): " + ", ".join(
        "%s %.0f" % (row.name, row.seconds()) for row in rows if row.rounds))
    lines.append("CPU s/1k deliv: user+system CPU seconds of the system's daemons and mount during the deliver "
                 "phase, per 1,000 deliveries (local disk: kernel only, not counted)")
    lines.append("postmark/s: postmark's own figure; it times in whole seconds, so above ~1,000/s it is coarse")
    lines.append("wall time %.0f s; raw output and daemon logs in %s" % (elapsed, LOG_DIR))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main

class InterruptsDeferred:
    """Holds Ctrl-C and SIGTERM back while a teardown runs, so that a second
    Ctrl-C cannot leave a half-stopped system behind; raises
    KeyboardInterrupt at the end if one came."""

    def __enter__(self):
        self.received = False
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.hold)
        return self

    def hold(self, signum, frame):
        self.received = True
        log("tearing down first; please wait")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.received and exc[0] is None:
            raise KeyboardInterrupt
        return False


def measure(system, args, round_no):
    """Sets up, measures and tears down one system; returns a RoundResult or
    raises SetupError. Teardown runs whatever happens."""
    result = RoundResult()
    started = time.monotonic()
    log_path = os.path.join(LOG_DIR, "%s.round%d.log" % (system.slug(), round_no))
    open(log_path, "w").close()
    try:
        log("round %d: %s: setting up" % (round_no, system.name))
        mount = system.setup()
        pids = system.processes()
        log("round %d: %s: maildir on %s" % (round_no, system.name, mount))
        run_maildir(mount, args, pids, log_path, result)
        log("round %d: %s: vmimage" % (round_no, system.name)) if system.vmimage else None
        run_vmimage(system, mount, args, log_path, result)
        log("round %d: %s: postmark" % (round_no, system.name))
        run_postmark(mount, log_path, result)
        result.note = system.check(mount)
        # Read just before teardown: the peak over the whole run.
        for label, pid in system.processes():
            mib = vm_hwm_mib(pid)
            if mib is None:
                result.errors.append("%s (pid %d) gone before teardown" % (label, pid))
            else:
                result.memory.append((label, mib))
        return result
    finally:
        log("round %d: %s: tearing down" % (round_no, system.name))
        with InterruptsDeferred():
            system.teardown()
        result.seconds = time.monotonic() - started


def leftovers():
    """Mounts, namespaces and processes of ours that teardown missed."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith("/tmp/cmp-"):
                found.append("mount " + point)
    if os.path.exists("/var/run/netns/" + MOOSEFS_NETNS):
        found.append("netns " + MOOSEFS_NETNS)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and alive(int(entry)):
            line = cmdline(int(entry))
            if any(d + "/" in line for d in (SPOOL_DIR, LOCAL_DIR, GLUSTER_DIR, MOOSEFS_DIR)):
                found.append("process %s: %s" % (entry, line[:100]))
    return found


def parse_args():
    parser = argparse.ArgumentParser(prog="tools/spool bench-compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # The defaults are the short run, which fits in 15 minutes here (GlusterFS
    # alone takes half of it); --messages 5000 --vm-seconds 20 is the longer one.
    parser.add_argument("--messages", type=int, default=4000, help="maildir messages (default 4000)")
    parser.add_argument("--threads", type=int, default=8, help="maildir threads (default 8)")
    parser.add_argument("--mailboxes", type=int, default=50, help="maildir mailboxes (default 50)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds; even rounds run the systems in reverse order (default 1)")
    parser.add_argument("--only", default="",
                        help="comma-separated substrings: run only the systems whose name contains one "
                             "(the ratios need spoolfs among them)")
    parser.add_argument("--vm-size-mib", type=int, default=1024,
                        help="spool-bench vmimage image size on spoolfs, local disk, GlusterFS (default 1024)")
    parser.add_argument("--vm-seconds", type=int, default=10,
                        help="seconds of random writes and of random reads each; 0 = no vmimage (default 10)")
    parser.add_argument("--out", default=os.path.join(BUILD, "bench-compare.txt"),
                        help="where the table is saved too (default build/bench-compare.txt)")
    return parser.parse_args()


def main():
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-compare: must run as root (network namespace, FUSE mounts, glusterd)")
    if not os.access(SPOOL_BENCH, os.X_OK):
        sys.exit("bench-compare: %s missing; build first (tools/spool bench-compare builds)" % SPOOL_BENCH)
    stale = leftovers()
    if stale:
        sys.exit("bench-compare: leftovers of an earlier run, remove them first:\n  " + "\n  ".join(stale))
    os.makedirs(LOG_DIR, exist_ok=True)

    systems = all_systems()
    if args.only:
        wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
        systems = [s for s in systems if any(w in s.name.lower() for w in wanted)]
        if not systems:
            sys.exit("bench-compare: --only %s matches no system" % args.only)
    rows = {s.name: Row(s.name) for s in systems}

    # SIGTERM tears down like Ctrl-C does.
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)

    start = time.monotonic()
    interrupted = False
    try:
        for round_no in range(1, args.rounds + 1):
            order = systems if round_no % 2 == 1 else list(reversed(systems))
            for system in order:
                row = rows[system.name]
                try:
                    row.rounds.append(measure(system, args, round_no))
                except SetupError as e:
                    log("round %d: %s: failed: %s" % (round_no, system.name, e))
                    row.failures.append("round %d: %s" % (round_no, e) if args.rounds > 1 else str(e))
                except Exception as e:  # a bug or an OS error: this row fails, the others still run
                    reason = "%s: %s" % (type(e).__name__, e)
                    log("round %d: %s: failed: %s" % (round_no, system.name, reason))
                    row.failures.append("round %d: %s" % (round_no, reason) if args.rounds > 1 else reason)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; every system set up so far was torn down")

    try:
        os.rmdir(LOCAL_DIR)  # the systems removed what they put there
    except OSError:
        pass
    table = render([rows[s.name] for s in systems], args, time.monotonic() - start)
    if interrupted:
        table += "INTERRUPTED: the table is partial\n"
    stale = leftovers()
    if stale:
        table += "LEFTOVERS after teardown:\n  " + "\n  ".join(stale) + "\n"
    print()
    print(table, end="")
    with open(args.out, "w") as f:
        f.write(table)
    log("table saved to %s" % args.out)
    return 130 if interrupted else (1 if stale else 0)


if __name__ == "__main__":
    sys.exit(main())
