#!/usr/bin/env python3
"""Self-check of cutfs.py: mounts it on temporary directories and proves what it models.

  python3 tests/lab/cutfs_check.py [--seed N] [--rounds N]

As root (FUSE mounts), with python3-fusepy installed. Checks:
  durability  fsync'ed data survives a cut; unsynced writes are kept as a prefix chosen by
              the seed (none, some, all); rename carries pending data, unlink drops it; a
              clean unmount keeps nothing unsynced
  mmap        mmap(MAP_SHARED, PROT_WRITE) on a file in the mount fails
  sqlite      journal_mode=DELETE, synchronous=FULL: a writer is SIGKILLed at a random
              moment and the filesystem cut with a random seed, --rounds times; after each
              remount integrity_check is ok and every commit the writer saw is there
  wal         WAL fails on the mount (its -shm needs a shared map) unless
              locking_mode=EXCLUSIVE comes first; then it survives kill + cut as well
Everything it starts or makes (cutfs processes, writers, mounts, temporary directories)
is removed on the way out, also when a check fails. The last line is
`cutfs_check: N passed, N failed`; the exit status is 1 if any failed.
"""
import argparse
import contextlib
import errno
import mmap
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
CUTFS = os.path.join(HERE, "cutfs.py")
sys.path.insert(0, HERE)
from cutfs import kept_ops, unmount_lazily  # noqa: E402

READY_TIMEOUT = 10
EXIT_TIMEOUT = 10


def mounted(path):
    """Whether `path` is a mount point, dead FUSE mounts included (ismount is False
    for those: their stat fails with ENOTCONN)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
            if point == path:
                return True
    return False


class Cutfs:
    """One cutfs process on BACKING at MOUNT."""

    def __init__(self, backing, mount, seed):
        self.backing, self.mount, self.seed = backing, mount, seed
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, CUTFS, backing, mount, "--seed", str(seed)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if line != "ready\n":
            self.close()
            raise AssertionError(f"cutfs did not say ready (said {line!r}): {self.errors()}")
        assert os.path.ismount(mount), "cutfs said ready but the mount is not there"

    def errors(self):
        self.stderr.seek(0)
        return self.stderr.read()

    def _wait_gone(self, how):
        try:
            code = self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"cutfs did not exit after {how}") from None
        assert code == 0, f"cutfs exited {code} after {how}: {self.errors()}"
        assert not mounted(self.mount), f"{self.mount} still mounted after {how}"
        return [l for l in self.errors().splitlines() if l.startswith("cutfs: ")]

    def cut(self):
        """Power cut; returns cutfs's report lines."""
        self.proc.send_signal(signal.SIGUSR1)
        return self._wait_gone("SIGUSR1")

    def unmount(self):
        """Clean unmount; returns cutfs's report lines."""
        subprocess.run(["umount", self.mount], check=True)
        return self._wait_gone("umount")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if mounted(self.mount):
            unmount_lazily(self.mount)
        self.stderr.close()


class Lab(contextlib.ExitStack):
    """Temporary backing dir + mount point, and everything started on them; all of it
    is taken down on exit."""

    def __init__(self):
        super().__init__()
        self.top = tempfile.mkdtemp(prefix="cutfs-check-")
        self.backing = os.path.join(self.top, "flash")
        self.mount = os.path.join(self.top, "mnt")
        os.mkdir(self.backing)
        os.mkdir(self.mount)
        self.callback(shutil.rmtree, self.top, ignore_errors=True)

    def cutfs(self, seed=0):
        fs = Cutfs(self.backing, self.mount, seed)
        self.callback(fs.close)
        return fs

    def spawn(self, *args, **kwargs):
        proc = subprocess.Popen(*args, **kwargs)
        self.callback(stop, proc)
        return proc

    def on_flash(self, name):
        with open(os.path.join(self.backing, name), "rb") as f:
            return f.read()

    def m(self, name):
        return os.path.join(self.mount, name)


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def close_quietly(fd):
    with contextlib.suppress(OSError):
        os.close(fd)


def seed_keeping(path, pending, kept):
    """A seed whose cut keeps `kept` of `pending` ops of `path`."""
    return next(s for s in range(100_000) if kept_ops(s, path, pending) == kept)


def write_unsynced(path, chunks, synced=b""):
    """`synced` written and fsync'ed, then each chunk written (one op each), no fsync."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if synced:
            os.write(fd, synced)
            os.fsync(fd)
        for chunk in chunks:
            os.write(fd, chunk)
    finally:
        os.close(fd)


def check_durability(rng, rounds):
    synced, chunks = b"synced;", [b"one;", b"two;", b"three;"]
    for kept in (0, 1, len(chunks)):
        seed = seed_keeping("/f", len(chunks), kept)
        with Lab() as lab:
            fs = lab.cutfs(seed)
            write_unsynced(lab.m("f"), chunks, synced)
            with open(lab.m("f"), "rb") as f:
                assert f.read() == synced + b"".join(chunks), "reads miss unsynced data"
            assert os.stat(lab.m("f")).st_size == len(synced) + sum(map(len, chunks))
            assert lab.on_flash("f") == synced, "unsynced data reached the flash early"
            report = fs.cut()
            want = synced + b"".join(chunks[:kept])
            assert lab.on_flash("f") == want, f"seed {seed}: flash has {lab.on_flash('f')!r}"
            line = f"cutfs: cut (seed {seed}): /f: kept {kept} of {len(chunks)} pending ops, " \
                   f"dropped {len(chunks) - kept}"
            assert report == [line], report
            print(f"  seed {seed}: {report[0][7:]}; flash holds {want!r}")

    with Lab() as lab:
        fs = lab.cutfs(seed_keeping("/renamed", 2, 2))
        write_unsynced(lab.m("f"), [b"a", b"b"])
        os.rename(lab.m("f"), lab.m("renamed"))
        write_unsynced(lab.m("gone"), [b"x"])
        os.unlink(lab.m("gone"))
        held = os.open(lab.m("held"), os.O_RDWR | os.O_CREAT, 0o644)
        # Closed after the cut: close reports the dead mount (ENOTCONN), as it should.
        lab.callback(close_quietly, held)
        os.write(held, b"held")
        os.unlink(lab.m("held"))
        assert os.fstat(held).st_size == 4 and os.pread(held, 9, 0) == b"held"
        # Truncating past EOF and writing after the hole: reads see zeros in the gap.
        fd = os.open(lab.m("sparse"), os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"abcdef")
        os.ftruncate(fd, 2)
        os.pwrite(fd, b"Z", 5)
        assert os.pread(fd, 10, 0) == b"ab\0\0\0Z", os.pread(fd, 10, 0)
        os.fsync(fd)
        os.close(fd)
        assert lab.on_flash("sparse") == b"ab\0\0\0Z"
        report = fs.cut()
        assert lab.on_flash("renamed") == b"ab", lab.on_flash("renamed")
        assert sorted(os.listdir(lab.backing)) == ["renamed", "sparse"], os.listdir(lab.backing)
        assert len(report) == 2 and "deleted, dropped 1 pending ops" in report[0] \
            and "/renamed: kept 2 of 2" in report[1], report
        print("  rename carries pending writes, unlink drops them (open or not), "
              "holes read as zeros")

    with Lab() as lab:
        fs = lab.cutfs()
        write_unsynced(lab.m("f"), [b"lost"], synced=b"kept")
        report = fs.unmount()
        assert lab.on_flash("f") == b"kept", lab.on_flash("f")
        assert report == ["cutfs: unmount: /f: kept 0 of 1 pending ops, dropped 1"], report
        print("  a clean unmount keeps nothing unsynced")


def check_mmap(rng, rounds):
    with Lab() as lab:
        lab.cutfs()
        with open(lab.m("f"), "w+b") as f:
            f.write(b"\0" * 4096)
            f.flush()
            try:
                mmap.mmap(f.fileno(), 4096, flags=mmap.MAP_SHARED,
                          prot=mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError as e:
                assert e.errno == errno.ENODEV, e
                print(f"  mmap(MAP_SHARED, PROT_READ|PROT_WRITE): {e}")
            else:
                raise AssertionError("a writable shared map of a cutfs file succeeded")
            try:
                mmap.mmap(f.fileno(), 4096, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            except OSError as e:
                assert e.errno == errno.ENODEV, e
                print(f"  mmap(MAP_SHARED, PROT_READ): {e} (JFFS2 allows this one)")
            else:
                raise AssertionError("a read-only shared map of a cutfs file succeeded")
            with mmap.mmap(f.fileno(), 4096, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ) as m:
                assert m[:4] == b"\0\0\0\0"
            print("  mmap(MAP_PRIVATE, PROT_READ) works")


# The writer: one row per transaction (random size, so pages overflow and the file grows)
# and a counter in another table that must always equal the row count. It prints the
# counter after each COMMIT returns (the counter, not count(*), which reads every page).
WRITER = r"""
import os, random, sqlite3, sys
db, wal = sys.argv[1], sys.argv[2] == "wal"
con = sqlite3.connect(db, isolation_level=None, timeout=30)
if wal:
    con.execute("PRAGMA locking_mode=EXCLUSIVE")
mode = con.execute("PRAGMA journal_mode=" + ("WAL" if wal else "DELETE")).fetchone()[0]
assert mode == ("wal" if wal else "delete"), mode
con.execute("PRAGMA synchronous=FULL")
rng = random.Random(os.getpid())
while True:
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO row(payload) VALUES (?)", (os.urandom(rng.randrange(10, 6000)),))
    con.execute("UPDATE counter SET n = n + 1")
    n = con.execute("SELECT n FROM counter").fetchone()[0]
    con.execute("COMMIT")
    sys.stdout.write(f"{n}\n")
    sys.stdout.flush()
"""


def connect(path, wal):
    con = sqlite3.connect(path, isolation_level=None, timeout=30)
    if wal:
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("PRAGMA journal_mode=WAL")
    else:
        con.execute("PRAGMA journal_mode=DELETE")
    con.execute("PRAGMA synchronous=FULL")
    return con


def verify(path, wal, at_least):
    con = connect(path, wal)
    try:
        result = con.execute("PRAGMA integrity_check").fetchall()
        assert result == [("ok",)], f"integrity_check: {result}"
        rows = con.execute("SELECT count(*) FROM row").fetchone()[0]
        counter = con.execute("SELECT n FROM counter").fetchone()[0]
    finally:
        con.close()
    assert rows >= at_least, f"{rows} rows after the cut, the writer had committed {at_least}"
    assert counter == rows, f"counter {counter} != {rows} rows: a transaction was torn"
    return rows


def power_cut_rounds(rng, rounds, wal):
    with Lab() as lab:
        db = lab.m("netmon.db")
        fs = lab.cutfs(rng.randrange(2**32))
        con = connect(db, wal)
        con.execute("CREATE TABLE row(id INTEGER PRIMARY KEY, payload BLOB)")
        con.execute("CREATE TABLE counter(n INTEGER)")
        con.execute("INSERT INTO counter VALUES (0)")
        for _ in range(50):
            con.execute("BEGIN")
            con.execute("INSERT INTO row(payload) VALUES (randomblob(100))")
            con.execute("UPDATE counter SET n = n + 1")
            con.execute("COMMIT")
        con.close()
        fs.cut()

        committed, dropped_rounds, journal_rounds = 50, 0, 0
        for n in range(rounds):
            seed = rng.randrange(2**32)
            fs = lab.cutfs(seed)
            rows = verify(db, wal, committed)
            writer = lab.spawn([sys.executable, "-c", WRITER, db, "wal" if wal else "delete"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.05, 0.8))
            writer.kill()
            out, err = writer.communicate()
            assert writer.returncode == -signal.SIGKILL, f"writer died early: {err}"
            reports = out.split()
            committed = int(reports[-1]) if reports else rows
            report = fs.cut()
            dropped = sum(int(re.search(r"dropped (\d+)", l).group(1)) for l in report)
            dropped_rounds += dropped > 0
            leftovers = sorted(set(os.listdir(lab.backing)) - {"netmon.db"})
            journal_rounds += bool(leftovers)
            print(f"  round {n + 1:2}: seed {seed:10}, writer committed {committed:5} "
                  f"(+{committed - rows}), cut dropped {dropped:2} ops, "
                  f"left {', '.join(leftovers) or 'no journal'}")
        fs = lab.cutfs()
        rows = verify(db, wal, committed)
        fs.unmount()
        print(f"  {rows} rows, integrity ok after {rounds} kills and cuts; {dropped_rounds} cuts "
              f"dropped unsynced writes, {journal_rounds} left a journal or WAL to recover")


def check_sqlite(rng, rounds):
    power_cut_rounds(rng, rounds, wal=False)


def check_wal(rng, rounds):
    with Lab() as lab:
        lab.cutfs()
        con = sqlite3.connect(lab.m("shared.db"), isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE t(x)")
        except sqlite3.OperationalError as e:
            print(f"  WAL without locking_mode=EXCLUSIVE: {e} ({e.sqlite_errorname})")
            assert e.sqlite_errorname == "SQLITE_IOERR_SHMMAP", e.sqlite_errorname
        else:
            raise AssertionError("WAL with a shared -shm worked on cutfs")
        finally:
            con.close()

        con = connect(lab.m("exclusive.db"), wal=True)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.execute("CREATE TABLE t(x)")
        for i in range(10):
            con.execute("INSERT INTO t VALUES (?)", (i,))
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 10
        assert "exclusive.db-shm" not in os.listdir(lab.backing)
        con.close()
        print("  locking_mode=EXCLUSIVE, then journal_mode=WAL: works, no -shm file")
    power_cut_rounds(rng, max(1, rounds // 4), wal=True)


CHECKS = [check_durability, check_mmap, check_sqlite, check_wal]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="seed for the random kills and cuts")
    parser.add_argument("--rounds", type=int, default=20, help="kill + cut rounds (sqlite)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("cutfs_check: run as root (it mounts FUSE filesystems)")
    # SIGTERM unwinds like an exception, so the cleanup below still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"cutfs_check: seed {seed}")
    passed = failed = 0
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        print(f"{name}:")
        try:
            check(random.Random(f"{seed}:{name}"), args.rounds)
        except Exception:
            failed += 1
            traceback.print_exc()
            print(f"{name}: FAILED")
        else:
            passed += 1
            print(f"{name}: ok")
    print(f"cutfs_check: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
