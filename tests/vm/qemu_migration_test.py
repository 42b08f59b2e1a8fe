#!/usr/bin/env python3
"""A VM whose disk image lives on spoolfs is live-migrated between two hosts.

Two mounts of one cluster stand for two hosts. A qemu on mount A runs a VM
with a qcow2 disk; a destination qemu started with -incoming has the same
image, by its path on mount B. Data written through the source before the
migration and through the destination after it must be what qemu-io reads
back through either mount; qemu's image locking (OFD locks, held in meta)
must keep a writer on mount B out while the source holds the image, and let
it in once the migration completed and the source quit."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from spoolcluster import Cluster, free_port, wait_until_serving  # noqa: E402

ACCEL = "kvm:tcg" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"


class Qmp:
    """A QMP connection to one qemu (JSON lines over TCP on 127.0.0.1)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self):
        while True:
            while b"\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("qmp connection closed")
                self.buf += data
            line, _, self.buf = self.buf.partition(b"\n")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def command(self, name, **args):
        self.sock.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        reply = self._read()
        if "error" in reply:
            raise RuntimeError("%s: %s" % (name, reply["error"]))
        return reply["return"]

    def quit(self):
        try:
            self.command("quit")
        except ConnectionError:
            pass  # qemu may exit before its answer is read

    def hmp(self, line):
        return self.command("human-monitor-command", **{"command-line": line})

    def close(self):
        self.sock.close()

    def __del__(self):
        self.sock.close()


def qemu_io(image, *commands, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args + [image], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class QemuMigrationTest(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(prefix="spoolvm.").up()
        self.a = self.cluster.mount
        self.b = os.path.join(self.cluster.dir, "mnt-b")
        os.makedirs(self.b, exist_ok=True)
        self.mount_b = subprocess.Popen(
            [os.path.join(self.cluster.build, "fusemount", "spoolfs"), "-f", "--meta", self.cluster.meta,
             "--cluster-key", self.cluster.key, self.b],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while not os.path.ismount(self.b):
            self.assertLess(time.time(), deadline, "mount B did not come up")
            time.sleep(0.1)
        self.qemus = []

    def tearDown(self):
        for q in self.qemus:
            if q.poll() is None:
                q.kill()
                q.wait()
        subprocess.run(["fusermount3", "-u", self.b], stderr=subprocess.DEVNULL)
        self.mount_b.wait(timeout=30)
        self.cluster.down()

    def start_qemu(self, image, qmp_port, log, incoming=None):
        args = ["qemu-system-x86_64", "-machine", "q35,accel=" + ACCEL, "-m", "128", "-nodefaults",
                "-display", "none", "-serial", "none",
                "-drive", "file=%s,if=none,id=disk0,format=qcow2,cache=none,aio=threads" % image,
                "-device", "virtio-blk-pci,drive=disk0",
                "-qmp", "tcp:127.0.0.1:%d,server=on,wait=off" % qmp_port]
        if incoming:
            args += ["-incoming", incoming]
        with open(log, "w") as out:
            q = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.qemus.append(q)
        wait_until_serving(lambda: socket.create_connection(("127.0.0.1", qmp_port), timeout=1).close(),
                           "qemu " + image, lambda: open(log).read())
        return q, Qmp(qmp_port)

    def test_live_migration_between_two_mounts(self):
        image_a = os.path.join(self.a, "vm.qcow2")
        image_b = os.path.join(self.b, "vm.qcow2")
        subprocess.run(["qemu-img", "create", "-f", "qcow2", image_a, "1G"], check=True, stdout=subprocess.DEVNULL)

        src, src_qmp = self.start_qemu(image_a, free_port(), os.path.join(self.cluster.dir, "qemu-src.log"))
        self.assertEqual(src_qmp.command("query-status")["status"], "running")
        # Written by the guest's disk through the source (qemu's own I/O path, O_DIRECT).
        out = src_qmp.hmp('qemu-io disk0 "write -P 0xa1 0 4M"')
        self.assertNotIn("error", out.lower(), out)
        out = src_qmp.hmp('qemu-io disk0 "write -P 0xa2 512M 1M"')
        self.assertNotIn("error", out.lower(), out)

        # The image is locked: a writer on the other host is refused.
        locked = qemu_io(image_b, "write -P 0xff 0 4k")
        self.assertNotEqual(locked.returncode, 0, locked.stdout)
        self.assertIn("lock", locked.stdout.lower(), locked.stdout)

        migration_port = free_port()
        dst, dst_qmp = self.start_qemu(image_b, free_port(), os.path.join(self.cluster.dir, "qemu-dst.log"),
                                       incoming="tcp:127.0.0.1:%d" % migration_port)
        started = time.time()
        src_qmp.command("migrate", uri="tcp:127.0.0.1:%d" % migration_port)
        while True:
            status = src_qmp.command("query-migrate").get("status")
            if status == "completed":
                break
            self.assertIn(status, ("setup", "active", "device", "pre-switchover"), "migration " + str(status))
            self.assertLess(time.time() - started, 120, "migration did not complete")
            time.sleep(0.2)
        migrated_s = time.time() - started
        # The destination resumes the guest once it has taken over the image.
        while dst_qmp.command("query-status")["status"] != "running":
            self.assertLess(time.time() - started, 30, "destination never resumed: " + open(
                os.path.join(self.cluster.dir, "qemu-dst.log")).read())
            time.sleep(0.1)

        # The source is done; the destination owns the image and writes.
        src_qmp.quit()
        src.wait(timeout=30)
        out = dst_qmp.hmp('qemu-io disk0 "write -P 0xb1 1M 2M"')
        self.assertNotIn("error", out.lower(), out)
        out = dst_qmp.hmp('qemu-io disk0 "read -P 0xa2 512M 1M"')
        self.assertNotIn("pattern verification failed", out, out)
        # Still locked, now by the destination.
        self.assertNotEqual(qemu_io(image_a, "write 0 4k").returncode, 0)
        dst_qmp.quit()
        dst.wait(timeout=30)

        # Both mounts read exactly what both qemus wrote.
        for image in (image_a, image_b):
            r = qemu_io(image, "read -P 0xa1 0 1M", "read -P 0xb1 1M 2M", "read -P 0xa1 3M 1M",
                        "read -P 0xa2 512M 1M", "read -P 0 4M 100M")
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertNotIn("failed", r.stdout, r.stdout)
        compare = subprocess.run(["qemu-img", "compare", image_a, image_b], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        self.assertEqual(compare.returncode, 0, compare.stdout)
        check = subprocess.run(["qemu-img", "check", image_b], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        self.assertEqual(check.returncode, 0, check.stdout)
        # Now nobody holds it: a writer gets in.
        self.assertEqual(qemu_io(image_b, "write -P 0xc1 0 4k").returncode, 0)
        print("live migration (%s) completed in %.1f s" % (ACCEL, migrated_s), flush=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
