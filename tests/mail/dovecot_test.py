#!/usr/bin/env python3
"""Dovecot on a spoolfs mount: messages delivered over LMTP, then read,
flagged, copied and expunged over IMAP, checked message by message; no
Error:/Panic: in Dovecot's log. Runs with Dovecot's indexes on local disk and
again with the indexes on the mount, each also with one brick stopped.

Settings follow Dovecot's advice for shared/cluster filesystems:
mmap_disable=yes, mail_fsync=always, fcntl locking."""
import email
import imaplib
import os
import random
import shutil
import smtplib
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from spoolcluster import Cluster, free_port, wait_until_serving  # noqa: E402

MAIL_UID = 8  # Debian's "mail" user owns the mailboxes
USERS = ["alice", "bob", "carol"]


def message(i, user, size):
    rng = random.Random(i)
    body = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 \n") for _ in range(size))
    return ("From: sender%d@example.test\r\nTo: %s@example.test\r\nSubject: test %d\r\n"
            "Message-ID: <%d.%s@example.test>\r\n\r\n%s\r\n" % (i, user, i, i, user, body.replace("\n", "\r\n")))


class Dovecot:
    def __init__(self, mount, index_on_mount):
        self.dir = tempfile.mkdtemp(prefix="spooldovecot.")
        os.chmod(self.dir, 0o755)
        self.imap_port, self.lmtp_port = free_port(), free_port()
        self.mail_root = os.path.join(mount, "vmail")
        os.makedirs(self.mail_root, exist_ok=True)
        os.chown(self.mail_root, MAIL_UID, MAIL_UID)
        index = "" if index_on_mount else ":INDEX=%s/index/%%n" % self.dir
        if not index_on_mount:
            os.makedirs(os.path.join(self.dir, "index"))
            os.chown(os.path.join(self.dir, "index"), MAIL_UID, MAIL_UID)
        self.log = os.path.join(self.dir, "dovecot.log")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write("""
base_dir = {d}/run
state_dir = {d}/state
log_path = {log}
info_log_path = {d}/info.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{mail}/%n/Maildir{index}
mmap_disable = yes
mail_fsync = always
lock_method = fcntl
passdb {{
  driver = static
  args = password=secret
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={mail}/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@example.test
}}
""".format(d=self.dir, log=self.log, mail=self.mail_root, index=index, uid=MAIL_UID,
           imap=self.imap_port, lmtp=self.lmtp_port))
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_until_serving(lambda: imaplib.IMAP4("127.0.0.1", self.imap_port).logout(), "dovecot", self.log_text)

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        subprocess.run(["doveadm", "-c", self.conf, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class DovecotOnSpoolfs(unittest.TestCase):
    def exercise(self, index_on_mount, degraded):
        cluster = Cluster().up()
        dovecot = None
        try:
            if degraded:
                cluster.stop_brick(1)
            dovecot = Dovecot(cluster.mount, index_on_mount)
            sent = {}
            lmtp = smtplib.LMTP("127.0.0.1", dovecot.lmtp_port)
            for i in range(60):
                user = USERS[i % len(USERS)]
                size = random.Random(i).choice([300, 2000, 9000, 70000])
                msg = message(i, user, size)
                lmtp.sendmail("sender%d@example.test" % i, ["%s@example.test" % user], msg)
                sent.setdefault(user, {})["<%d.%s@example.test>" % (i, user)] = msg
            lmtp.quit()

            for user in USERS:
                imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
                imap.login(user, "secret")
                typ, data = imap.select("INBOX")
                self.assertEqual(typ, "OK")
                self.assertEqual(int(data[0]), len(sent[user]), "message count in INBOX of " + user)
                typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
                got = {}
                for part in data:
                    if isinstance(part, tuple):
                        raw = part[1].decode()
                        got[email.message_from_string(raw)["Message-ID"]] = raw
                self.assertEqual(set(got), set(sent[user]))
                for mid, raw in got.items():
                    # Dovecot prepends Return-Path, Delivered-To and Received;
                    # everything that was sent follows, byte for byte.
                    stored = raw.replace("\r\n", "\n").rstrip("\n")
                    original = sent[user][mid].replace("\r\n", "\n").rstrip("\n")
                    self.assertTrue(stored.endswith(original), "message differs: " + mid)
                    self.assertLess(len(stored) - len(original), 1000, "only trace headers were added: " + mid)
                # Flag everything seen, copy to a folder, expunge a third.
                self.assertEqual(imap.store("1:*", "+FLAGS", "\\Seen")[0], "OK")
                self.assertEqual(imap.create("Archive")[0], "OK")
                self.assertEqual(imap.copy("1:*", "Archive")[0], "OK")
                count = len(sent[user])
                doomed = [str(n) for n in range(1, count + 1) if n % 3 == 0]
                self.assertEqual(imap.store(",".join(doomed), "+FLAGS", "\\Deleted")[0], "OK")
                self.assertEqual(imap.expunge()[0], "OK")
                imap.close()
                imap.logout()

                # A new session sees the result: flags kept, expunged gone, copies complete.
                imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
                imap.login(user, "secret")
                typ, data = imap.select("INBOX", readonly=True)
                self.assertEqual(int(data[0]), count - len(doomed))
                typ, data = imap.search(None, "UNSEEN")
                self.assertEqual(data[0].split(), [], "every remaining message is \\Seen")
                typ, data = imap.select("Archive", readonly=True)
                self.assertEqual(int(data[0]), count)
                typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                archived = {email.message_from_string(p[1].decode())["Message-ID"] for p in data
                            if isinstance(p, tuple)}
                self.assertEqual(archived, set(sent[user]))
                imap.logout()

            log = dovecot.log_text()
            bad = [line for line in log.splitlines() if "Error:" in line or "Panic:" in line
                   or "Corrupted" in line]
            self.assertEqual(bad, [], "Dovecot logged errors:\n" + log[-5000:])
        except Exception:
            print(cluster.logs())
            if dovecot:
                print("==> dovecot.log <==\n" + dovecot.log_text()[-5000:])
            raise
        finally:
            if dovecot:
                dovecot.stop()
            cluster.down()

    def test_indexes_on_local_disk(self):
        self.exercise(index_on_mount=False, degraded=False)

    def test_indexes_on_mount(self):
        self.exercise(index_on_mount=True, degraded=False)

    def test_indexes_on_mount_one_brick_down(self):
        self.exercise(index_on_mount=True, degraded=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
