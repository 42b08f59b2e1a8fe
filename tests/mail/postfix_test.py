#!/usr/bin/env python3
"""Postfix delivering to maildirs on a spoolfs mount: a private Postfix
instance (its own config, queue and port on 127.0.0.1) receives messages over
SMTP and its virtual(8) agent delivers them (tmp/ -> link into new/); every
message must arrive intact. Also with one brick stopped."""
import email
import os
import random
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from spoolcluster import Cluster, free_port, wait_until_serving  # noqa: E402

MAIL_UID = 8
USERS = ["dave", "erin", "frank", "grace"]

MASTER_CF = """{port} inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
proxymap unix - - n - - proxymap
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


class Postfix:
    def __init__(self, mount):
        self.dir = tempfile.mkdtemp(prefix="spoolpostfix.")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.base = os.path.join(mount, "postfix")
        os.makedirs(self.base, exist_ok=True)
        os.chown(self.base, MAIL_UID, MAIL_UID)
        for sub in ("queue", "data"):
            os.makedirs(os.path.join(self.dir, sub))
        self.log = os.path.join(self.dir, "maillog")
        with open(os.path.join(self.dir, "vmailbox"), "w") as f:
            for u in USERS:
                f.write("%s@example.test %s/Maildir/\n" % (u, u))
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write("""compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.example.test
mydestination =
relay_domains =
alias_maps =
alias_database =
virtual_mailbox_domains = example.test
virtual_mailbox_base = {base}
virtual_mailbox_maps = texthash:{d}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{uid}
virtual_minimum_uid = 1
maillog_file = {log}
maillog_file_prefixes = {d}
smtputf8_enable = no
""".format(d=self.dir, base=self.base, uid=MAIL_UID, log=self.log))
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port="127.0.0.1:%d" % self.port))
        self.postfix("set-permissions")
        self.postfix("start")
        wait_until_serving(lambda: smtplib.SMTP("127.0.0.1", self.port).quit(), "postfix", self.log_text)

    def postfix(self, command):
        subprocess.run(["postfix", "-c", self.dir, command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        self.postfix("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PostfixOnSpoolfs(unittest.TestCase):
    def exercise(self, degraded):
        cluster = Cluster().up()
        postfix = None
        try:
            if degraded:
                cluster.stop_brick(2)
            postfix = Postfix(cluster.mount)
            sent = {}
            smtp = smtplib.SMTP("127.0.0.1", postfix.port)
            for i in range(80):
                user = USERS[i % len(USERS)]
                rng = random.Random(i)
                body = "".join(rng.choice("abcdefghij klmnop\n") for _ in range(rng.choice([200, 3000, 20000])))
                mid = "<%d.%s@sender.test>" % (i, user)
                msg = "From: s@sender.test\r\nTo: %s@example.test\r\nSubject: %d\r\nMessage-ID: %s\r\n\r\n%s\r\n" % (
                    user, i, mid, body.replace("\n", "\r\n"))
                smtp.sendmail("s@sender.test", ["%s@example.test" % user], msg)
                sent[mid] = (user, body)
            smtp.quit()

            deadline = time.time() + 120
            while True:
                delivered = {}
                for user in USERS:
                    new = os.path.join(postfix.base, user, "Maildir", "new")
                    for name in os.listdir(new) if os.path.isdir(new) else []:
                        with open(os.path.join(new, name), errors="replace") as f:
                            m = email.message_from_string(f.read())
                        delivered[m["Message-ID"]] = (user, m.get_payload())
                if len(delivered) >= len(sent) or time.time() > deadline:
                    break
                time.sleep(0.5)
            self.assertEqual(set(delivered), set(sent), "every message delivered exactly once")
            for mid, (user, body) in sent.items():
                got_user, got_body = delivered[mid]
                self.assertEqual(got_user, user)
                self.assertEqual(got_body.replace("\r\n", "\n").rstrip("\n"), body.rstrip("\n"), mid)
            for user in USERS:
                tmp = os.path.join(postfix.base, user, "Maildir", "tmp")
                self.assertEqual(os.listdir(tmp), [], "nothing left in tmp/")
            bad = [line for line in postfix.log_text().splitlines()
                   if "status=deferred" in line or "status=bounced" in line or "fatal:" in line or "panic:" in line]
            self.assertEqual(bad, [], "Postfix problems:\n" + "\n".join(bad[:20]))
        except Exception:
            print(cluster.logs())
            if postfix:
                print("==> maillog <==\n" + postfix.log_text()[-5000:])
            raise
        finally:
            if postfix:
                postfix.stop()
            cluster.down()

    def test_delivery(self):
        self.exercise(degraded=False)

    def test_delivery_one_brick_down(self):
        self.exercise(degraded=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
