"""A private Dovecot instance for the mail tests (its own base_dir, config,
log and ports on 127.0.0.1), serving IMAP and LMTP for maildirs under
<mount>/vmail/<user>/Maildir, plus the helpers the Dovecot tests share.

Settings follow Dovecot's "Mail storage on shared disks" advice for
clustered filesystems: mmap_disable=yes, mail_fsync=always, fcntl locking.
mail_nfs_storage/mail_nfs_index stay off: they only work around NFS's
attribute cache (they flush it with chown() tricks), and spoolfs keeps its
kernel caches coherent itself; turning them on would hide exactly the
incoherence the multi-host test is there to catch."""
import email
import imaplib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from spoolcluster import free_port, wait_until_serving  # noqa: E402

MAIL_UID = 8  # Debian's "mail" user owns the mailboxes
PASSWORD = "secret"


def message(i, user, size):
    """Test message `i` for `user`, about `size` bytes of body, CRLF line ends."""
    rng = random.Random(i)
    body = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 \n") for _ in range(size))
    return ("From: sender%d@example.test\r\nTo: %s@example.test\r\nSubject: test %d\r\n"
            "Message-ID: %s\r\n\r\n%s\r\n" % (i, user, i, message_id(i, user), body.replace("\n", "\r\n")))


def message_id(i, user):
    return "<%d.%s@example.test>" % (i, user)


def delivered_intact(stored, original):
    """True if `stored` (as IMAP returns it) is `original` with only the trace
    headers Dovecot prepends on delivery (Return-Path, Delivered-To, Received)."""
    stored = stored.replace("\r\n", "\n").rstrip("\n")
    original = original.replace("\r\n", "\n").rstrip("\n")
    return stored.endswith(original) and len(stored) - len(original) < 1000


def fetch_all(imap, items="BODY.PEEK[]"):
    """FETCH 1:* (UID FLAGS `items`) of the selected mailbox as
    {Message-ID: (uid, flags, raw text)}; fails on a duplicate Message-ID."""
    typ, data = imap.fetch("1:*", "(UID FLAGS %s)" % items)
    if typ != "OK":
        raise AssertionError("FETCH failed: %r" % data)
    out = {}
    for part in data:
        if not isinstance(part, tuple):
            continue
        head = part[0].decode()
        uid = int(re.search(r"UID (\d+)", head).group(1))
        flags = set(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split())
        raw = part[1].decode()
        mid = email.message_from_string(raw)["Message-ID"]
        if mid in out:
            raise AssertionError("message %s appears twice (UIDs %d and %d)" % (mid, out[mid][0], uid))
        out[mid] = (uid, flags, raw)
    return out


class Dovecot:
    """`mount`: where the maildirs live (<mount>/vmail). `index_on_mount`:
    Dovecot's indexes next to the mails on the mount, or else in the
    instance's own local directory. `name`: Dovecot's instance_name."""

    def __init__(self, mount, index_on_mount=True, name="dovecot"):
        self.name = name
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
instance_name = {name}
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
  args = password={password}
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
""".format(name=name, d=self.dir, log=self.log, mail=self.mail_root, index=index, uid=MAIL_UID,
           password=PASSWORD, imap=self.imap_port, lmtp=self.lmtp_port))
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_until_serving(lambda: imaplib.IMAP4("127.0.0.1", self.imap_port).logout(), "dovecot", self.log_text)

    def imap(self, user):
        """A logged-in IMAP connection for `user`."""
        conn = imaplib.IMAP4("127.0.0.1", self.imap_port)
        conn.login(user, PASSWORD)
        return conn

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def problems(self, extra=()):
        """Lines of the error log that show an error, a crash or a damaged
        index (Dovecot logs index repairs as warnings mentioning corruption),
        plus lines containing any string of `extra`."""
        marks = ("Error:", "Panic:", "Fatal:") + tuple(extra)
        return [line for line in self.log_text().splitlines()
                if any(m in line for m in marks) or "corrupt" in line.lower()]

    def stop(self):
        subprocess.run(["doveadm", "-c", self.conf, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if os.environ.get("SPOOL_KEEP_TEST_DIRS"):
            print("kept Dovecot %s's directory %s" % (self.name, self.dir), flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
