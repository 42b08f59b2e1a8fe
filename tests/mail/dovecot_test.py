#!/usr/bin/env python3
"""Dovecot on a spoolfs mount: messages delivered over LMTP, then read,
flagged, copied and expunged over IMAP, checked message by message; no
Error:/Panic: in Dovecot's log. Runs with Dovecot's indexes on local disk and
again with the indexes on the mount, each also with one brick stopped.

Settings follow Dovecot's advice for shared/cluster filesystems:
mmap_disable=yes, mail_fsync=always, fcntl locking."""
import email
import os
import random
import smtplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from dovecot_instance import Dovecot, message  # noqa: E402
from spoolcluster import Cluster  # noqa: E402

USERS = ["alice", "bob", "carol"]


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
                imap = dovecot.imap(user)
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
                imap = dovecot.imap(user)
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

            self.assertEqual(dovecot.problems(), [], "Dovecot logged errors:\n" + dovecot.log_text()[-5000:])
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
