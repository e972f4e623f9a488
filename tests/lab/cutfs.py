#!/usr/bin/env python3
"""cutfs: a FUSE filesystem that loses unsynced data on a simulated power cut.

  cutfs.py BACKING_DIR MOUNTPOINT [--seed N]

Mounts BACKING_DIR at MOUNTPOINT, in the foreground, and prints `ready` (one line on
stdout, flushed) once the kernel has connected; a test waits for that line or polls
`os.path.ismount(MOUNTPOINT)`. Needs root and libfuse2 through fusepy (Debian:
python3-fusepy).

Data: whatever is written to a file is held in memory, as a list of pending operations
(write OFFSET BYTES, truncate LENGTH) kept in the order they came, and reaches the backing
file only when the file is fsync'ed or fdatasync'ed, when the whole list is applied in
order. Reads and stat see the pending data (sizes included). Namespace operations
(create, unlink, rename, mkdir, rmdir, link, symlink, chmod, chown, utimens) go to
BACKING_DIR at once: directory durability is not what this models. Pending operations
follow a file's inode, so a renamed file keeps them and a file whose last name is gone
drops them once it is closed. A file unlinked while open lives on as .fuse_hiddenNNN
(libfuse2's way) until its last close; a cut or unmount deletes it, as mounting a real
filesystem frees orphan inodes. The backing files are not fsync'ed on the host: the host
does not lose power, only this process does.

The cut: SIGUSR1. The process takes the lock (no operation runs after it), writes to each
file a prefix of its pending operations, in order, and drops the rest, as a flash device
that had written some of the queued pages when the power went. The prefix length is
`kept_ops(seed, path, pending)`, uniform in 0..pending and fixed by the seed (--seed, or
a random one) and the file's name, so a cut can be replayed. One line per file with
pending operations goes to stderr:

  cutfs: cut (seed 7): /netmon.db: kept 3 of 5 pending ops, dropped 2
  cutfs: cut (seed 7): /.fuse_hidden0000000200000001: deleted, dropped 4 pending ops

Then it lazily unmounts MOUNTPOINT and exits 0 without any further writes; open files
on the mount get ENOTCONN. Kill whatever uses the mount before the cut, as the power
would.

A clean stop (`umount MOUNTPOINT`, `fusermount -u MOUNTPOINT`, SIGTERM or SIGINT) flushes
nothing: unsynced data is lost, as on a cut that kept nothing, and the same lines say so
with `unmount` in place of `cut (seed N)`.

No shared mmap: every file is opened with direct_io, and the kernel then refuses
mmap(MAP_SHARED) with ENODEV (fs/fuse/file.c, fuse_file_mmap, unless the daemon asks for
FUSE_DIRECT_IO_ALLOW_MMAP, which libfuse2 cannot). JFFS2 refuses only writable shared
maps (generic_file_readonly_mmap); here read-only shared maps fail too. MAP_PRIVATE
works. SQLite's WAL index (-shm) therefore cannot be used here, as on a JFFS2 router,
unless locking_mode=EXCLUSIVE keeps it in heap memory.
"""
import argparse
import ctypes
import errno
import importlib
import os
import random
import signal
import stat
import sys
import threading
import time


def _import_fusepy():
    # Debian's python3-fusepy installs the module as `fusepy` (PyPI's is `fuse`, a name
    # python3-fuse also uses for another API). A Python outside Debian's (pyenv, a venv)
    # does not search Debian's dist-packages; fusepy is one pure-Python file, so it is
    # fine to load from there.
    for extra in (None, "/usr/lib/python3/dist-packages"):
        if extra and extra not in sys.path:
            sys.path.append(extra)
        for name in ("fusepy", "fuse"):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            except OSError as e:
                sys.exit(f"cutfs: fusepy cannot load libfuse2 ({e}); install libfuse2")
            if hasattr(module, "FUSE"):
                return module
    sys.exit("cutfs: fusepy not found; install Debian's python3-fusepy")


fuse = _import_fusepy()
FuseOSError = fuse.FuseOSError

MNT_DETACH = 2  # <sys/mount.h>
HIDDEN_PREFIX = ".fuse_hidden"  # libfuse2's name for an unlinked file still open


def kept_ops(seed, path, pending):
    """How many of a file's `pending` operations a cut with `seed` writes.

    One generator per file, seeded by the seed and the name, so the choice for a file
    does not depend on which other files had pending data.
    """
    return random.Random(f"{seed}\0{path}").randint(0, pending)


class PendingFile:
    """The unsynced state of one backing inode.

    `fd` stays open as long as this exists: it keeps the inode alive, so its (dev, ino)
    key cannot be reused by a new file while pending data is filed under it.
    """

    def __init__(self, fd, key, path):
        self.fd = fd
        self.key = key
        self.path = path
        self.size = os.fstat(fd).st_size  # size as readers see it, pending ops applied
        self.ops = []  # ("w", offset, bytes) or ("t", length), oldest first
        self.opens = 0
        self.touched_ns = 0  # when pending data last changed; stat shows it as mtime

    def apply(self, ops):
        for op in ops:
            if op[0] == "w":
                _, offset, data = op
                view = memoryview(data)
                while view:
                    n = os.pwrite(self.fd, view, offset)
                    view, offset = view[n:], offset + n
            else:
                os.ftruncate(self.fd, op[1])

    def read(self, size, offset):
        """`size` bytes at `offset` as if every pending op had been applied."""
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        buf = bytearray(os.pread(self.fd, end - offset, offset))
        length = os.fstat(self.fd).st_size
        # Invariant: every byte of buf at or past the file's length so far is zero, so
        # a later extension (write past EOF, truncate up) reads as a hole should.
        buf.extend(bytes(end - offset - len(buf)))
        for op in self.ops:
            if op[0] == "w":
                _, at, data = op
                lo, hi = max(at, offset), min(at + len(data), end)
                if lo < hi:
                    buf[lo - offset:hi - offset] = data[lo - at:hi - at]
                length = max(length, at + len(data))
            else:
                new = op[1]
                if new < length:
                    lo, hi = max(new, offset), min(length, end)
                    if lo < hi:
                        buf[lo - offset:hi - offset] = bytes(hi - lo)
                length = new
        return bytes(buf)


class CutFs(fuse.Operations):
    use_ns = True  # fusepy: times in nanoseconds

    def __init__(self, root, mountpoint, seed):
        self.root = os.path.realpath(root)
        self.mountpoint = os.path.realpath(mountpoint)
        self.seed = seed
        # One lock for everything: operations are short, and the cut must see a
        # state no operation is halfway through. (Not named `lock`: fusepy would take
        # it for the FUSE lock operation.)
        self.mutex = threading.Lock()
        self.files = {}  # (st_dev, st_ino) -> PendingFile
        self.handles = {}  # fh -> PendingFile
        self.next_fh = 1
        # libfuse renames a file that is unlinked while open to .fuse_hiddenNNN and
        # unlinks that on the last close; a cut or unmount comes before that close, so
        # it deletes these itself, as a filesystem frees orphan inodes when mounted.
        self.orphans = set()
        self.remove_stale_orphans()
        self.dead = False

    def __call__(self, op, *args):
        if not hasattr(self, op):
            raise FuseOSError(errno.ENOSYS)
        with self.mutex:
            if self.dead:
                raise FuseOSError(errno.EIO)
            try:
                return getattr(self, op)(*args)
            except FuseOSError:
                raise
            except OSError as e:
                raise FuseOSError(e.errno or errno.EIO) from e

    # ---- helpers (called with the mutex held) ----

    def real(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def pending_for(self, path):
        """The PendingFile of the regular file at `path`, made if there is none."""
        st = os.lstat(self.real(path))
        if not stat.S_ISREG(st.st_mode):
            raise FuseOSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL)
        key = (st.st_dev, st.st_ino)
        pf = self.files.get(key)
        if pf is None:
            fd = os.open(self.real(path), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            pf = self.files[key] = PendingFile(fd, key, path)
        return pf

    def known(self, path):
        """The PendingFile at `path` if there is one, without making one."""
        try:
            st = os.lstat(self.real(path))
        except FileNotFoundError:
            return None
        return self.files.get((st.st_dev, st.st_ino))

    def handle(self, fh):
        pf = self.handles.get(fh)
        if pf is None:
            raise FuseOSError(errno.EBADF)
        return pf

    def forget_if_done(self, pf):
        """Drop `pf` when nothing can read it any more or it has nothing to write."""
        if pf.opens or (pf.ops and os.fstat(pf.fd).st_nlink > 0):
            return
        os.close(pf.fd)
        del self.files[pf.key]

    def give_to_caller(self, path):
        # The mount is shared (allow_other) and this process is root: a file a user
        # makes must belong to that user, as on a real filesystem.
        if os.geteuid() == 0:
            uid, gid, _ = fuse.fuse_get_context()
            os.lchown(self.real(path), uid, gid)

    # ---- data ----

    def create(self, path, mode, fi=None):
        os.close(os.open(self.real(path), os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, mode))
        self.give_to_caller(path)
        return self.open(path, os.O_RDWR)

    def open(self, path, flags):
        pf = self.pending_for(path)
        if flags & os.O_TRUNC:
            self.truncate(path, 0, None)
        pf.opens += 1
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.handles[fh] = pf
        return fh

    def read(self, path, size, offset, fh):
        return self.handle(fh).read(size, offset)

    def write(self, path, data, offset, fh):
        pf = self.handle(fh)
        pf.ops.append(("w", offset, bytes(data)))
        pf.size = max(pf.size, offset + len(data))
        pf.touched_ns = time.time_ns()
        return len(data)

    def truncate(self, path, length, fh=None):
        pf = self.handle(fh) if fh is not None else self.pending_for(path)
        pf.ops.append(("t", length))
        pf.size = length
        pf.touched_ns = time.time_ns()
        return 0

    def fsync(self, path, datasync, fh):
        pf = self.handle(fh)
        pf.apply(pf.ops)
        pf.ops.clear()
        return 0

    def flush(self, path, fh):
        # close(2), not a durability point.
        return 0

    def release(self, path, fh):
        pf = self.handles.pop(fh, None)
        if pf is not None:
            pf.opens -= 1
            self.forget_if_done(pf)
        return 0

    def getattr(self, path, fh=None):
        if fh is not None:
            st = os.fstat(self.handle(fh).fd)
        else:
            st = os.lstat(self.real(path))
        attrs = {
            key: getattr(st, key)
            for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                        "st_rdev", "st_blksize")
        }
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        pf = self.files.get((st.st_dev, st.st_ino)) if stat.S_ISREG(st.st_mode) else None
        if pf is not None:
            attrs["st_size"] = pf.size
            attrs["st_blocks"] = (pf.size + 511) // 512
            attrs["st_mtime"] = max(attrs["st_mtime"], pf.touched_ns)
            attrs["st_ctime"] = max(attrs["st_ctime"], pf.touched_ns)
        return attrs

    # ---- namespace: straight to the backing directory ----

    def unlink(self, path):
        pf = self.known(path)
        os.unlink(self.real(path))
        self.orphans.discard(path)
        if pf is not None:
            self.forget_if_done(pf)

    def rename(self, old, new):
        replaced = self.known(new)
        os.rename(self.real(old), self.real(new))
        self.orphans.discard(new)
        if replaced is not None:
            self.forget_if_done(replaced)

        def moved(path):
            if path == old or path.startswith(old + "/"):
                return new + path[len(old):]
            return path

        for pf in self.files.values():
            pf.path = moved(pf.path)
        self.orphans = {moved(path) for path in self.orphans}
        if os.path.basename(new).startswith(HIDDEN_PREFIX):
            self.orphans.add(new)

    def link(self, target, source):
        os.link(self.real(source), self.real(target))

    def symlink(self, target, source):
        os.symlink(source, self.real(target))
        self.give_to_caller(target)

    def readlink(self, path):
        return os.readlink(self.real(path))

    def mknod(self, path, mode, dev):
        os.mknod(self.real(path), mode, dev)
        self.give_to_caller(path)

    def mkdir(self, path, mode):
        os.mkdir(self.real(path), mode)
        self.give_to_caller(path)

    def rmdir(self, path):
        os.rmdir(self.real(path))

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self.real(path))

    def chmod(self, path, mode):
        os.chmod(self.real(path), stat.S_IMODE(mode))

    def chown(self, path, uid, gid):
        os.lchown(self.real(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self.real(path), ns=times, follow_symlinks=False)
        pf = self.known(path)
        if pf is not None:
            pf.touched_ns = 0  # an explicit time wins over the one pending writes show

    def fsyncdir(self, path, datasync, fh):
        # Namespace changes are already in the backing directory.
        return 0

    def statfs(self, path):
        sv = os.statvfs(self.root)
        return {
            key: getattr(sv, key)
            for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                        "f_ffree", "f_favail", "f_flag", "f_namemax")
        }

    # ---- life cycle ----

    def remove_stale_orphans(self):
        """Orphans a killed cutfs left behind (it could not delete them)."""
        for top, _, names in os.walk(self.root):
            for name in names:
                if name.startswith(HIDDEN_PREFIX):
                    os.unlink(os.path.join(top, name))
                    report(f"mount: removed orphan {os.path.join(top, name)}")

    def delete_orphans(self):
        for path in sorted(self.orphans):
            try:
                os.unlink(self.real(path))
            except FileNotFoundError:
                pass
        self.orphans.clear()

    def init(self, path):
        try:
            print("ready", flush=True)
        except OSError:
            pass  # nobody reads stdout; readiness can be polled

    def destroy(self, path):
        # A clean unmount flushes nothing, as on a cut that kept nothing.
        self.power_off("unmount", lambda pf: 0)

    def cut(self):
        """The power goes: write a prefix of each file's pending ops, then vanish."""
        self.mutex.acquire()  # held until exit: nothing runs after the cut
        self.power_off(f"cut (seed {self.seed})",
                       lambda pf: kept_ops(self.seed, pf.path, len(pf.ops)))
        unmount_lazily(self.mountpoint)
        sys.stderr.flush()
        os._exit(0)

    def power_off(self, label, kept_of):
        """Write `kept_of(pf)` pending ops of each file, drop the rest, close all."""
        self.dead = True
        self.delete_orphans()
        for pf in sorted(self.files.values(), key=lambda pf: pf.path):
            pending = len(pf.ops)
            if not pending:
                pass
            elif os.fstat(pf.fd).st_nlink == 0:
                report(f"{label}: {pf.path}: deleted, dropped {pending} pending ops")
            else:
                kept = kept_of(pf)
                pf.apply(pf.ops[:kept])
                report(f"{label}: {pf.path}: kept {kept} of {pending} pending ops, "
                       f"dropped {pending - kept}")
            os.close(pf.fd)
        self.files.clear()
        self.handles.clear()


def report(line):
    print(f"cutfs: {line}", file=sys.stderr, flush=True)


def unmount_lazily(mountpoint):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(mountpoint), MNT_DETACH) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EPERM:  # not root: the setuid helper can do it
        for helper in ("fusermount", "fusermount3"):
            try:
                os.spawnvp(os.P_WAIT, helper, [helper, "-u", "-z", mountpoint])
                return
            except OSError:
                continue
    report(f"lazy unmount of {mountpoint} failed: {os.strerror(err)}")


def main():
    parser = argparse.ArgumentParser(
        description="FUSE filesystem that keeps file data in memory until fsync and "
                    "simulates a power cut on SIGUSR1.")
    parser.add_argument("backing_dir")
    parser.add_argument("mountpoint")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for the prefixes a cut keeps (default: random, "
                             "printed with the cut)")
    args = parser.parse_args()
    for what, path in (("backing dir", args.backing_dir), ("mountpoint", args.mountpoint)):
        if not os.path.isdir(path):
            parser.error(f"{what} {path!r} is not a directory")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)

    # The kernel has already applied the caller's umask to the modes it sends.
    os.umask(0)
    fs = CutFs(args.backing_dir, args.mountpoint, seed)

    # libfuse's threads inherit this mask, so SIGUSR1 reaches only the waiting thread:
    # a Python handler would never run while the main thread sits in fuse_main.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

    def wait_for_cut():
        signal.sigwait({signal.SIGUSR1})
        fs.cut()

    threading.Thread(target=wait_for_cut, name="cut", daemon=True).start()

    fuse.FUSE(
        fs,
        args.mountpoint,
        foreground=True,
        fsname="cutfs",
        subtype="cutfs",
        # Every open gets FOPEN_DIRECT_IO: no page cache between the kernel and this
        # process, and no shared mmap.
        direct_io=True,
        # Writes in one request up to 128 KiB instead of 4 KiB pieces.
        big_writes=True,
        # The size of a file changes with pending ops only this process knows of.
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        # The daemon under test may drop root; the kernel checks modes as usual.
        allow_other=True,
        default_permissions=True,
    )


if __name__ == "__main__":
    main()
