#!/usr/bin/env python3
"""Mail across hosts (issue 10): one spoolfs cluster mounted twice, as two
hosts would mount it (mount A and mount B: two spoolfs processes, two meta
sessions, kernel attribute/entry caches of 120 s, so that only meta's
invalidations can make one mount see the other's changes in time), and two
private Dovecot instances, A on mount A and B on mount B, over the same
maildirs, with the same settings as tests/mail/dovecot_test.py (Dovecot's
advice for clustered filesystems).

Phase 1, Dovecot's supported pattern (a mailbox used by one host at a time,
as after a VM migration): the users' empty mailboxes opened through B, then
60 messages of mixed sizes delivered over LMTP
through A to three users; through B's IMAP each one is fetched and compared
byte for byte, some are flagged \\Seen or \\Flagged, some copied to a new
folder, some expunged; then through A's IMAP the folders, flags, UIDs,
copies and expunges are exactly what B did, and more deliveries through A
get new UIDs after B's.

Phase 2, the stretch (two hosts on one mailbox at the same moment, which
Dovecot does not promise on NFS): deliveries through A while B's IMAP
repeatedly SELECTs every INBOX and fetches every message. Every message B
sees must be intact and keep its UID; at the end every message is present
exactly once and intact through both A and B, with the same UIDs.

What proves invalidations: with a spoolfs whose mounts apply none of meta's
invalidations (checked by hand), phase 1 still passes -- Dovecot copes with
stale directory attributes when one host at a time uses a mailbox, as it
does on NFS -- but phase 2 fails within seconds (B sees a message change
its UID, presumably from stale uidlist or index state). With invalidations it
passes.

Finally neither Dovecot's log may show Error:, Panic:, Fatal:, corruption
or any Warning: but a slow step. Runs with the indexes on the mount (the shared-filesystem case)
and again with each host's indexes on its local disk."""
import os
import re
import smtplib
import sys
import threading
import time
import traceback
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from dovecot_instance import Dovecot, delivered_intact, fetch_all, message, message_id  # noqa: E402
from spoolcluster import Cluster  # noqa: E402

USERS = ["alice", "bob", "carol"]
# Longer than the whole test: no cached entry or attribute expires on its own.
CACHE = ("--attr-timeout", "120", "--entry-timeout", "120")
SIZES = [300, 2000, 9000, 70000, 300, 1200, 250000]


def user_of(i):
    return USERS[i % len(USERS)]


def size_of(i):
    return SIZES[(i * 7 + i // 3) % len(SIZES)]


def log_problems(dovecot):
    """Errors, crashes and corruption in the log, and any warning (Dovecot
    warns of a message reappearing, a changed UIDVALIDITY, a duplicate
    uidlist entry...) except that some step was slow under load."""
    return [line for line in dovecot.problems(extra=("Warning:",))
            if not ("Warning:" in line and re.search(r" took \d+(\.\d+)? (milli)?seconds", line)
                    and "corrupt" not in line.lower())]


def index_of(mid):
    return int(mid.strip("<>").split(".")[0])


def ordinal(mid):
    """The message's number among its user's messages (users take turns)."""
    return index_of(mid) // len(USERS)


class DovecotAcrossHosts(unittest.TestCase):
    def deliver(self, dovecot, numbers):
        lmtp = smtplib.LMTP("127.0.0.1", dovecot.lmtp_port)
        for i in numbers:
            user = user_of(i)
            msg = message(i, user, size_of(i))
            # Known before it is sent: a reader may see it before LMTP answers.
            self.sent[user][message_id(i, user)] = msg
            lmtp.sendmail("sender%d@example.test" % i, ["%s@example.test" % user], msg)
        lmtp.quit()

    def check_mailbox(self, imap, mailbox, expected, who):
        """SELECTs `mailbox` read-only and checks that it holds exactly the
        messages of `expected` ({Message-ID: flags}), intact, with those
        flags. Returns {Message-ID: (uid, raw)}."""
        typ, data = imap.select(mailbox, readonly=True)
        self.assertEqual(typ, "OK", "%s: SELECT %s: %r" % (who, mailbox, data))
        self.assertEqual(int(data[0]), len(expected), "%s: message count in %s" % (who, mailbox))
        got = fetch_all(imap)
        self.assertEqual(set(got), set(expected), "%s: messages in %s" % (who, mailbox))
        user = who.split()[-1]
        out = {}
        for mid, (uid, flags, raw) in got.items():
            self.assertTrue(delivered_intact(raw, self.sent[user][mid]), "%s: %s differs in %s" % (who, mid, mailbox))
            self.assertEqual(flags - {"\\Recent"}, expected[mid], "%s: flags of %s in %s" % (who, mid, mailbox))
            out[mid] = (uid, raw)
        return out

    # ------------------------------------------------------------ phase 1

    def phase1(self, a, b):
        # B served these users before they moved to A (as before a VM
        # migration): B's kernel has their maildirs and index files cached
        # for 120 s, as they were while still empty.
        for user in USERS:
            imap = b.imap(user)
            typ, data = imap.select("INBOX")
            self.assertEqual((typ, int(data[0])), ("OK", 0), "B %s: empty INBOX" % user)
            imap.logout()
        self.deliver(a, range(60))
        self.expected = {}  # user -> mailbox -> {Message-ID: flags}
        seen_by_b = {}  # user -> mailbox -> {Message-ID: (uid, raw)}
        for user in USERS:
            who = "B " + user
            imap = b.imap(user)
            typ, data = imap.list()
            self.assertEqual(typ, "OK")
            self.assertEqual([d for d in data if d and b"Archive" in d], [], who + ": no Archive yet")
            typ, data = imap.select("INBOX")
            self.assertEqual(typ, "OK", who + ": SELECT INBOX")
            self.assertEqual(int(data[0]), len(self.sent[user]), who + ": message count in INBOX")
            got = fetch_all(imap)
            self.assertEqual(set(got), set(self.sent[user]), who + ": every delivered message")
            for mid, (uid, flags, raw) in got.items():
                self.assertTrue(delivered_intact(raw, self.sent[user][mid]), who + ": message differs: " + mid)
            uid = {mid: str(v[0]) for mid, v in got.items()}

            def uids(pred):
                return ",".join(uid[m] for m in got if pred(ordinal(m)))

            def seen(i):
                return i % 2 == 0

            def flagged(i):
                return i % 5 == 0

            def copied(i):
                return i % 4 == 0 or i % 7 == 0

            def doomed(i):
                return i % 3 == 0

            self.assertEqual(imap.uid("STORE", uids(seen), "+FLAGS", "(\\Seen)")[0], "OK")
            self.assertEqual(imap.uid("STORE", uids(flagged), "+FLAGS", "(\\Flagged)")[0], "OK")
            self.assertEqual(imap.create("Archive")[0], "OK")
            self.assertEqual(imap.uid("COPY", uids(copied), "Archive")[0], "OK")
            self.assertEqual(imap.uid("STORE", uids(doomed), "+FLAGS", "(\\Deleted)")[0], "OK")
            self.assertEqual(imap.expunge()[0], "OK")
            imap.close()

            def flags(i):
                return ({"\\Seen"} if seen(i) else set()) | ({"\\Flagged"} if flagged(i) else set())

            self.expected[user] = {
                "INBOX": {m: flags(ordinal(m)) for m in got if not doomed(ordinal(m))},
                "Archive": {m: flags(ordinal(m)) for m in got if copied(ordinal(m))},
            }
            # B itself sees what it did, in a new session.
            seen_by_b[user] = {}
            for mailbox, expected in self.expected[user].items():
                seen_by_b[user][mailbox] = self.check_mailbox(imap, mailbox, expected, who)
            imap.logout()

        # The mailboxes "migrate back" to A: A's IMAP sees exactly what B
        # did, the same UIDs and the same bytes.
        for user in USERS:
            who = "A " + user
            imap = a.imap(user)
            typ, data = imap.list()
            self.assertEqual(typ, "OK")
            names = [d.split()[-1].strip(b'"') for d in data if d]
            self.assertIn(b"Archive", names, who + ": Archive listed: %r" % data)
            for mailbox, expected in self.expected[user].items():
                got = self.check_mailbox(imap, mailbox, expected, who)
                self.assertEqual(got, seen_by_b[user][mailbox], who + ": UIDs and bytes in %s as B saw them" % mailbox)
            imap.logout()

        # A delivers again: the new messages come after B's UIDs, nothing
        # that B expunged comes back, B's flags stay.
        self.deliver(a, range(60, 72))
        for user in USERS:
            who = "A " + user
            imap = a.imap(user)
            new = {m: set() for m in self.sent[user] if index_of(m) >= 60}
            self.expected[user]["INBOX"].update(new)
            got = self.check_mailbox(imap, "INBOX", self.expected[user]["INBOX"], who)
            old_max = max(uid for uid, _ in seen_by_b[user]["INBOX"].values())
            for mid in new:
                self.assertGreater(got[mid][0], old_max, who + ": UID of new " + mid)
            imap.logout()

    # ------------------------------------------------------------ phase 2

    def phase2(self, a, b):
        failures = []
        done = threading.Event()
        passes = [0]
        uid_of = {}  # (user, Message-ID) -> the UID B saw first
        early = set()  # messages B saw before A's deliveries ended

        def reader():
            # B reads while A delivers: every message B sees is intact and
            # keeps its UID, and nothing B saw disappears.
            try:
                last = {}
                while True:
                    finishing = done.is_set()
                    for user in USERS:
                        during = not done.is_set()
                        imap = b.imap(user)
                        typ, data = imap.select("INBOX")
                        if typ != "OK":
                            raise AssertionError("B %s: SELECT INBOX: %r" % (user, data))
                        got = fetch_all(imap) if int(data[0]) else {}
                        imap.logout()
                        for mid, (uid, flags, raw) in got.items():
                            if mid not in self.sent[user]:
                                raise AssertionError("B %s: unknown message %s" % (user, mid))
                            if not delivered_intact(raw, self.sent[user][mid]):
                                raise AssertionError("B %s: %s differs (%d bytes)" % (user, mid, len(raw)))
                            if during and index_of(mid) >= 100:
                                early.add(mid)
                            if uid_of.setdefault((user, mid), uid) != uid:
                                raise AssertionError("B %s: %s changed UID %d -> %d" % (
                                    user, mid, uid_of[(user, mid)], uid))
                        lost = set(last.get(user, ())) - set(got)
                        if lost:
                            raise AssertionError("B %s: messages disappeared: %s" % (user, sorted(lost)))
                        last[user] = set(got)
                    passes[0] += 1
                    if finishing:
                        return
            except Exception:
                failures.append(traceback.format_exc())

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for start in range(100, 160, 10):
                self.deliver(a, range(start, start + 10))
        finally:
            done.set()
            thread.join(120)
        self.assertFalse(thread.is_alive(), "B's reader hung")
        self.assertEqual(failures, [], "B's reader while A delivered:\n" + "\n".join(failures))
        print("phase 2: B made %d passes over the three INBOXes while A delivered 60 messages, and saw %d of "
              "them arrive before the last was delivered" % (passes[0], len(early)), flush=True)
        self.assertGreater(len(early), 0, "B read while A delivered")

        for user in USERS:
            self.expected[user]["INBOX"].update({m: set() for m in self.sent[user] if index_of(m) >= 100})
            on = {}
            for host, dovecot in (("A", a), ("B", b)):
                imap = dovecot.imap(user)
                for mailbox, expected in self.expected[user].items():
                    on[(host, mailbox)] = self.check_mailbox(imap, mailbox, expected, "%s %s" % (host, user))
                imap.logout()
            for mailbox in self.expected[user]:
                self.assertEqual(on[("A", mailbox)], on[("B", mailbox)],
                                 "%s: A and B show the same UIDs and bytes in %s" % (user, mailbox))

    # ------------------------------------------------------------ driver

    def exercise(self, index_on_mount):
        started = time.time()
        cluster = Cluster(prefix="spoolhosts.").up()
        a = b = None
        self.sent = {user: {} for user in USERS}
        try:
            mount_a = cluster.mount_again(os.path.join(cluster.dir, "hostA"), *CACHE)
            mount_b = cluster.mount_again(os.path.join(cluster.dir, "hostB"), *CACHE)
            a = Dovecot(mount_a, index_on_mount, name="hostA")
            b = Dovecot(mount_b, index_on_mount, name="hostB")
            self.phase1(a, b)
            print("phase 1 done after %.1f s" % (time.time() - started), flush=True)
            self.phase2(a, b)
            print("phase 2 done after %.1f s" % (time.time() - started), flush=True)
            for name, dovecot in (("A", a), ("B", b)):
                self.assertEqual(log_problems(dovecot), [],
                                 "Dovecot %s logged problems:\n%s" % (name, dovecot.log_text()[-5000:]))
        except Exception:
            print(cluster.logs())
            for name, dovecot in (("A", a), ("B", b)):
                if dovecot:
                    print("==> dovecot %s log <==\n%s" % (name, dovecot.log_text()[-5000:]))
            raise
        finally:
            for dovecot in (a, b):
                if dovecot:
                    dovecot.stop()
            cluster.down()

    def test_indexes_on_mount(self):
        self.exercise(index_on_mount=True)

    def test_indexes_on_local_disks(self):
        self.exercise(index_on_mount=False)


if __name__ == "__main__":
    unittest.main(verbosity=2)
