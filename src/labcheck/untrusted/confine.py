"""OS confinement from inside the worker, applied before any student line runs (untrusted side).

Outermost first, what this module adds to what the grader set up (labcheck.sandbox):
  - `confine_filesystem`: the fallback when bubblewrap is missing: in a private mount namespace (root),
    hide the denied paths under empty read-only mounts and make every mount read-only but the scratch;
  - `block_new_processes`: a seccomp filter (no fork, no exec; threads allowed), also built for bwrap;
  - `install_guard`: an audit hook refusing processes, sockets, ctypes and the denied paths with clear
    messages; `ctypes.CDLL(path)` of an installed library (torchvision loads its operators so) is the one
    native load it allows: a regular file under the environment's library folders, never a writable one. A Python-level hook can be defeated by pure Python (PEP 578 says as much): the OS layers
    above are what hold; the hook gives readable errors and covers machines without them.
"""
from __future__ import annotations

import os
import struct
import sys


# ---------------------------------------------------------------------------------------------
# OS-level confinement (Linux, where the grader could give the worker its own mount namespace)
#
# The audit hook below gives clear messages, but a Python-level hook can be defeated by pure
# Python (PEP 578 says as much). So where the OS allows, the worker first makes the files it must
# not see disappear and the file system read-only, and forbids new processes with seccomp; these
# hold for anything the submission does, hook or no hook.

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
# The host's shared libraries: bound read-only into bubblewrap's file system (labcheck.sandbox), and
# with the interpreter's own library folders the only places a submission's imports may dlopen from.
SYSTEM_LIBRARIES = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/lib", "/lib64", "/lib32", "/libx32")
_MOUNT_OPTS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc, ctypes


def _mount(libc, ctypes, src, target, fstype, flags, data=None) -> None:
    enc = lambda x: None if x is None else os.fsencode(x)  # noqa: E731
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, flags to keep) from /proc/self/mountinfo, deepest last."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = 0
            for opt in fields[5].split(","):
                flags |= _MOUNT_OPTS.get(opt, 0)
            points.append((point, flags))
    return points


def confine_filesystem(policy: dict) -> str:
    """Hide the denied paths (empty read-only tmpfs / /dev/null on top) and make every mount read-only
    except the scratch folder. Needs root in a private mount namespace; returns what was done."""
    if not policy.get("mount_namespace") or os.geteuid() != 0:
        return "no mount namespace"
    libc, ctypes = _libc()
    scratch = os.path.realpath(policy["allow_write"][0])
    _mount(libc, ctypes, None, "/", None, MS_REC | MS_PRIVATE)  # never propagate anything to the host
    hidden = 0
    for path in policy.get("deny", []):
        path = os.path.realpath(path)
        if os.path.isdir(path):
            _mount(libc, ctypes, "tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=555")
            hidden += 1
        elif os.path.isfile(path):
            _mount(libc, ctypes, "/dev/null", path, None, MS_BIND)
            hidden += 1
    _mount(libc, ctypes, scratch, scratch, None, MS_BIND)
    os.chdir(scratch)  # re-enter through the new (writable) mount
    readonly = 0
    for point, flags in _mount_points():
        if point == scratch or point.startswith(("/proc", "/dev", "/sys")):
            continue
        try:
            _mount(libc, ctypes, None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
            readonly += 1
        except OSError:
            pass  # e.g. a mount hidden under a tmpfs above: nothing to write there anyway
    return f"{hidden} paths hidden, {readonly} mounts read-only"


# seccomp: refuse fork/vfork (and, in the worker's own filter, execve/execveat), ptrace and its kin, and clone without
# CLONE_THREAD (threads stay allowed); clone3 answers ENOSYS, so libc falls back to clone, whose flags
# the filter can read. The same program, without the exec rule, is what the grader hands to bubblewrap
# (`bwrap --seccomp FD`): bwrap installs it right before it executes the worker, so exec must pass there.
_SECCOMP = {  # machine -> (AUDIT_ARCH, fork, vfork, execve, execveat, clone, clone3)
    "x86_64": (0xC000003E, 57, 58, 59, 322, 56, 435),
    "aarch64": (0xC00000B7, None, None, 221, 281, 220, 435),
}
# Reaching into another process (ptrace, process_vm_readv/writev, pidfd_getfd): refused too, so that a
# zygote's child cannot touch the zygote that forks the next student's worker (labcheck.untrusted.zygote).
_SECCOMP_PEEK = {"x86_64": (101, 310, 311, 438), "aarch64": (117, 270, 271, 438)}
# memfd_create: memory held in an anonymous file escapes RLIMIT_DATA (issue #22: 4.5 GB held that way).
_SECCOMP_MEMFD = {"x86_64": 319, "aarch64": 279}


def seccomp_program(block_exec: bool = True) -> bytes | None:
    """A classic-BPF seccomp program (struct sock_filter[]) for this machine, or None where unsupported."""
    import platform

    spec = _SECCOMP.get(platform.machine())
    if spec is None:
        return None
    arch, fork, vfork, execve, execveat, clone, clone3 = spec
    LD, JEQ, JSET, JGE, RET = 0x20, 0x15, 0x45, 0x35, 0x06
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    CLONE_THREAD = 0x00010000
    deny = [n for n in (fork, vfork) + ((execve, execveat) if block_exec else ()) + _SECCOMP_PEEK[platform.machine()]
            + (_SECCOMP_MEMFD[platform.machine()],) if n is not None]
    # program; jump offsets are relative to the next instruction
    prog = [(LD, 0, 0, 4)]  # A = arch
    body: list[tuple[int, int, int, int]] = []
    body.append((LD, 0, 0, 0))  # A = syscall number
    body.append((JGE, 0, 0, 0x40000000))  # x32 ABI numbers: deny (patched below)
    for n in deny:
        body.append((JEQ, 0, 0, n))  # patched: jt -> DENY
    body.append((JEQ, 0, 0, clone3))  # jt -> ENOSYS
    body.append((JEQ, 0, 0, clone))  # jf -> ALLOW
    body.append((0x20, 0, 0, 16))  # A = low 32 bits of args[0] (clone flags)
    body.append((JSET, 0, 0, CLONE_THREAD))  # jt -> ALLOW, jf -> DENY
    tail = [(RET, 0, 0, ALLOW), (RET, 0, 0, EPERM), (RET, 0, 0, ENOSYS)]
    prog.append((JEQ, 0, 0, arch))  # jf -> DENY
    code = prog + body + tail
    i_allow, i_deny, i_enosys = len(code) - 3, len(code) - 2, len(code) - 1

    def to(i, target):
        return target - (i + 1)

    fixed = []
    for i, (op, jt, jf, k) in enumerate(code):
        if op == JEQ and i == 1:
            jt, jf = 0, to(i, i_deny)
        elif op == JGE:
            jt, jf = to(i, i_deny), 0
        elif op == JEQ and k in deny and i > 2:
            jt, jf = to(i, i_deny), 0
        elif op == JEQ and k == clone3 and i > 2:
            jt, jf = to(i, i_enosys), 0
        elif op == JEQ and k == clone and i > 2:
            jt, jf = 0, to(i, i_allow)
        elif op == JSET:
            jt, jf = to(i, i_allow), to(i, i_deny)
        fixed.append((op, jt, jf, k))
    return b"".join(struct.pack("=HBBI", *ins) for ins in fixed)


def block_new_processes() -> str:
    """Install `seccomp_program()` on this process (no new processes, no exec)."""
    raw = seccomp_program(block_exec=True)
    if raw is None:
        return "seccomp: unsupported machine"
    libc, ctypes = _libc()
    buf = ctypes.create_string_buffer(raw, len(raw))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        return "seccomp: no_new_privs refused"
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        return f"seccomp: refused ({os.strerror(ctypes.get_errno())})"
    return "seccomp: new processes blocked"




def install_guard(policy: dict) -> None:
    """Install the audit hook. Written so that pure-Python tricks find nothing to change in it:
    it calls no Python function (only C functions captured now), keeps its tables in immutable
    containers, and turns any path it cannot read safely into a refusal (fail closed). Events it
    cannot see (a symlink swapped between its check and the open, say) are what the OS layer
    (confine_filesystem, block_new_processes) is for."""
    import pathlib
    import posix
    import types as _types
    from _stat import S_ISLNK, S_ISREG

    import sysconfig

    norm = os.path.realpath
    deny = tuple(norm(p) for p in policy.get("deny", []))
    # Where installed native code lives (site-packages: torchvision's operators, torch's CUDA libraries;
    # the standard library; the system's): read-only in bubblewrap's file system, and never the scratch.
    installed = {sysconfig.get_paths(vars=v)[k] for v in (None, {"base": sys.base_prefix, "platbase": sys.base_prefix})
                 for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    library_roots = tuple(sorted({norm(p) for p in (*installed, *SYSTEM_LIBRARIES) if os.path.isdir(p)}))
    allow_read = tuple(norm(p) for p in policy.get("allow_read", []))
    allow_write = tuple(norm(p) for p in policy.get("allow_write", [])) + ("/dev/null",)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    own_proc = f"/proc/{os.getpid()}"
    forbidden = _types.MappingProxyType({
        "os.fork": "starting processes", "os.forkpty": "starting processes", "os.system": "starting processes",
        "os.exec": "starting processes", "os.posix_spawn": "starting processes", "os.spawn": "starting processes",
        "subprocess.Popen": "starting processes", "os.kill": "sending signals", "os.killpg": "sending signals",
        "signal.pthread_kill": "sending signals", "socket.connect": "network access",
        "socket.bind": "network access", "socket.getaddrinfo": "network access", "socket.sendto": "network access",
        "ctypes.dlsym": "loading native code",
        "ctypes.cdata": "raw memory access", "ctypes.call_function": "calling native code",
        "sys.addaudithook": "changing the sandbox", "sys.setprofile": "changing the sandbox",
        "sys.settrace": "changing the sandbox", "os.setuid": "changing the sandbox", "os.chroot": "changing the sandbox",
        "gc.get_objects": "inspecting the sandbox", "gc.get_referrers": "inspecting the sandbox",
        "gc.get_referents": "inspecting the sandbox", "sys._current_frames": "inspecting the sandbox",
    })
    path_events = frozenset({"os.remove", "os.rename", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "os.link",
                             "os.symlink", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.utime", "os.mkdir",
                             "os.listdir", "os.scandir"})
    safe_path_types = (pathlib.PosixPath, pathlib.PurePosixPath)
    lstat, readlink, getcwd, fspath = posix.lstat, posix.readlink, posix.getcwd, posix.fspath

    # builtins the hook uses, captured: a submission may rebind the names in `builtins`, not these cells
    _type, _isinstance, _len, _bool, _int, _bytes, _str = type, isinstance, len, bool, int, bytes, str
    _PermissionError, _OSError = PermissionError, OSError

    def hook(event, args):
        library = False  # a dlopen: allowed only for an installed library (checked below, path resolved)
        if event == "open":
            raws, mode, flags = (args[0],), args[1], args[2]
            writing = _bool((flags or 0) & write_flags) or (_type(mode) is _str and (
                "w" in mode or "a" in mode or "x" in mode or "+" in mode))
        elif event in path_events:
            raws, writing = args[:2], event not in ("os.listdir", "os.scandir")
        elif event == "object.__setattr__" and _len(args) > 1 and args[1] == "__code__":
            raise _PermissionError("labcheck sandbox: replacing a function's code is not allowed")
        elif event == "object.__setattr__" and _type(args[0]) is _type and args[0] in safe_path_types:
            raise _PermissionError("labcheck sandbox: changing pathlib is not allowed")
        elif event == "ctypes.dlopen":
            name = args[0]
            if not ((_type(name) is _str and "/" in name) or (_type(name) is _bytes and b"/" in name)):
                raise _PermissionError("labcheck sandbox: loading native code is not allowed (ctypes.dlopen of "
                                       "a name or of the process itself; only installed libraries, by path)")
            raws, writing, library = (name,), False, True
        elif event in forbidden:
            raise _PermissionError(f"labcheck sandbox: {forbidden[event]} is not allowed ({event})")
        else:
            return
        for raw in raws:
            if raw is None or _type(raw) is _int:
                continue
            if _type(raw) in safe_path_types:
                raw = fspath(raw)
            if _isinstance(raw, _bytes):
                path = b"".join((raw,)).decode("utf-8", "surrogateescape")
            elif _isinstance(raw, _str):
                path = "".join((raw,))  # an exact str, whatever the subclass's methods say
            else:
                if event in path_events:
                    continue  # e.g. shutil's own objects; the C-level call audits the real path again
                raise _PermissionError("labcheck sandbox: paths must be str, bytes or pathlib paths")
            # resolve symlinks with C functions only (posixpath's helpers could be monkeypatched)
            if not path.startswith("/"):
                path = getcwd() + "/" + path
            todo = [p for p in path.split("/") if p and p != "."]
            done = []
            hops = 0
            while todo:
                part = todo.pop(0)
                if part == "..":
                    if done:
                        done.pop()
                    continue
                here = "/" + "/".join(done + [part])
                try:
                    link = S_ISLNK(lstat(here).st_mode)
                except _OSError:
                    link = False
                if not link:
                    done.append(part)
                    continue
                hops += 1
                if hops > 40:
                    raise _PermissionError("labcheck sandbox: too many symbolic links")
                target = readlink(here)
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p and p != "."] + todo
            path = "/" + "/".join(done)
            denied = readable = writable = False
            for root in deny:
                if path == root or path.startswith(root + "/"):
                    denied = True
            for root in allow_read:
                if path == root or path.startswith(root + "/"):
                    readable = True
            for root in allow_write:
                if path == root or path.startswith(root + "/"):
                    writable = True
            parts = path.split("/")
            if _len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and not (
                    path == own_proc or path.startswith(own_proc + "/")):
                denied = True
            if denied and not readable:
                raise _PermissionError(f"labcheck sandbox: access to {path} is not allowed")
            if library:
                installed_here = False
                for root in library_roots:
                    if path.startswith(root + "/"):
                        installed_here = True
                try:
                    regular = S_ISREG(lstat(path).st_mode)
                except _OSError:
                    regular = False
                if writable or not installed_here or not regular:
                    raise _PermissionError(f"labcheck sandbox: loading native code from {path} is not allowed "
                                           "(only libraries installed in the grading environment)")
            if writing and not writable:
                raise _PermissionError(f"labcheck sandbox: writing {path} is not allowed (only the scratch folder)")

    sys.addaudithook(hook)
