"""Which confinement this machine gives a student's worker, and the commands that set it up: the levels
(LEVELS, weakest first), bubblewrap's command line (the whitelist file system, private device nodes,
size-limited writable places), the `unshare` fallback, what a worker may never read (default_deny) and whom a
worker started as root becomes without bubblewrap (unprivileged_ids). labcheck.sandbox starts workers with it;
where the trust boundary lies is written in labcheck.untrusted.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from labcheck import paths
from labcheck.untrusted.confine import SYSTEM_LIBRARIES


# Ordered confinement levels, weakest first.
LEVELS = ("none", "hook-only", "no-network", "whitelist-fs")


LEVEL_HELP = {
    "none": "no confinement of the worker at all",
    "hook-only": "seccomp and the audit hook only: the worker shares the host's network and file system",
    "no-network": "a private network namespace (unshare); files hidden only where the grader runs as root",
    "whitelist-fs": "bubblewrap: user/PID/network/IPC namespaces and a whitelist file system",
}


DEFAULT_MIN_ISOLATION = "whitelist-fs"


BWRAP_ENV = "LABCHECK_BWRAP"  # path of bwrap to use; empty (or "none") means: do not use bubblewrap


def isolation_level(text: str) -> str:
    if text not in LEVELS:
        raise ValueError(f"unknown isolation level {text!r}; one of {', '.join(LEVELS)}")
    return text


def how_to_reach(level: str) -> str:
    """What to do on this machine to reach `level` (the text of a refusal)."""
    steps = []
    if LEVELS.index(level) >= LEVELS.index("no-network"):
        steps.append("install bubblewrap (`apt-get install bubblewrap`, which `scripts/run` does) so that `bwrap` "
                     "is on PATH")
        steps.append("allow unprivileged user namespaces: `sysctl -w kernel.unprivileged_userns_clone=1` "
                     "(Debian kernels), and on Ubuntu 23.10+ `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` "
                     "or an AppArmor profile for bwrap; in a container, run it with user namespaces allowed "
                     "(e.g. Docker's default seccomp profile blocks them: `--security-opt seccomp=unconfined`)")
        steps.append("check with `bwrap --unshare-all --ro-bind / / true`")
    return "; ".join(steps) or "nothing to do"


@functools.lru_cache(maxsize=1)
def isolation_prefix() -> tuple[str, ...]:
    """The strongest `unshare` this machine allows: network + PID namespaces, else network only, else none."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for flags in (("-n", "-p", "-f", "--kill-child", "--mount-proc"), ("-n",)):
        try:
            if subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10).returncode == 0:
                return (exe, *flags)
        except (OSError, subprocess.SubprocessError):
            continue
    return ()


def _can_unshare_network() -> bool:
    return "-n" in isolation_prefix()


def bwrap_path() -> str | None:
    """The bwrap to use: $LABCHECK_BWRAP if set (empty or "none": none), else `bwrap` on PATH."""
    value = os.environ.get(BWRAP_ENV)
    if value is not None:
        return None if value.strip() in ("", "none") else value
    return shutil.which("bwrap")


def _outermost(paths_: set[str]) -> list[str]:
    """The paths none of whose ancestors is also in the set."""
    ordered = sorted(paths_)
    return [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]


@functools.lru_cache(maxsize=1)
def environment_paths() -> tuple[str, ...]:
    """What the worker's Python needs to read, and nothing more: the interpreter's prefix, the virtual
    environment, the labcheck package (not the repository around it), and torch/numpy where they live
    outside those. Symlinked paths are bound under both names."""
    import importlib.util

    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              str(Path(__file__).parent), os.path.dirname(sys.executable)}
    # found without importing them: `labcheck grade`'s own process never loads torch
    wanted |= {str(Path(importlib.util.find_spec(m).origin).parent) for m in ("torch", "numpy")}
    found = set()
    for p in wanted:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if os.path.exists(q):
                found.add(q)
    return tuple(_outermost(found))


DEVICES = ("null", "zero", "full", "random", "urandom", "tty")  # the nodes bubblewrap's --dev binds from the host


# Everything a sandboxed worker can write is a size-limited in-memory file system (issue #22: 3 GB written into
# an unlimited /tmp, 2 GB onto the host's disk): the scratch (its cwd and HOME; the zygote's home and every
# child's scratch in it), /tmp and /dev/shm. memfd_create is refused by the seccomp filter (confine).
SCRATCH_MB, TMP_MB, SHM_MB = 256, 64, 16


def private_devices(folder: str) -> list[str]:
    """bwrap arguments that put private copies of /dev's nodes over the host's, made in `folder` (root only).

    Run as root, the sandbox's user is root outside it too (no capabilities, but the owner of every
    root-owned file it can reach): with --dev's bind of the host's own /dev/null, a submission's
    `os.chmod('/dev/null', 0)` changed the *host's* /dev/null. Over a private node it changes only its
    own copy (the zygote puts modes back; a fresh worker's copy is thrown away). Where nodes cannot be
    made or opened (no CAP_MKNOD, a nodev file system), nothing: a non-root sandbox owns no host node."""
    if os.geteuid() != 0:
        return []
    import stat

    args = []
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
        for name in DEVICES:
            host, node = f"/dev/{name}", os.path.join(folder, name)
            if not os.path.exists(node):
                os.mknod(node, stat.S_IFCHR | 0o666, os.stat(host).st_rdev)
            os.chmod(node, 0o666)  # (mknod applies the umask; an earlier worker may have changed it)
            if name != "tty":  # (no controlling terminal is fine; a node that cannot be opened is not)
                os.close(os.open(node, os.O_RDONLY))
            args += ["--dev-bind", node, host]
    except OSError:
        return []
    return args


def bwrap_command(exe: str, writable: str, readonly: list[str], seccomp_fd: int | None,
                  devices: str | None = None) -> list[str]:
    """bwrap's arguments (before the command): namespaces, then a file system made only of the system's
    shared libraries, `readonly` and the writable scratch `writable` (all at their host paths; what can be
    written is in size-limited memory: SCRATCH_MB, TMP_MB, SHM_MB); as root, /dev's nodes are private copies
    made in `devices` (private_devices), a folder outside `writable`."""
    cmd = [exe, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session",
           "--cap-drop", "ALL",  # run as root, bwrap would otherwise keep every capability in the sandbox
           "--proc", "/proc", "--dev", "/dev", *(private_devices(devices) if devices else ()),
           "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm", "--size", str(TMP_MB << 20), "--tmpfs", "/tmp"]
    for lib in SYSTEM_LIBRARIES:
        if os.path.islink(lib):
            cmd += ["--symlink", os.readlink(lib), lib]
        elif os.path.isdir(lib):
            cmd += ["--ro-bind", lib, lib]
    for path in _outermost(set(readonly) | set(environment_paths())):
        cmd += ["--ro-bind", path, path]
    cmd += ["--size", str(SCRATCH_MB << 20), "--tmpfs", writable, "--chdir", writable]  # (nothing on the host's disk)
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd + ["--"]


def _seccomp_pipe() -> int | None:
    """A pipe's read end holding the seccomp program for bwrap (no new processes; exec stays allowed,
    since bwrap installs the filter right before it executes the worker)."""
    from labcheck.untrusted.confine import seccomp_program

    program = seccomp_program(block_exec=False)
    if program is None:
        return None
    r, w = os.pipe()
    os.write(w, program)  # a few hundred bytes: fits the pipe's buffer
    os.close(w)
    return r


@functools.lru_cache(maxsize=8)
def _bwrap_check(exe: str | None, euid: int) -> str | None:
    """None when bubblewrap starts this Python here, else why not."""
    if exe is None:
        return "bubblewrap (bwrap) is not installed or disabled ($LABCHECK_BWRAP)"
    with tempfile.TemporaryDirectory(prefix="labcheck-bwrap-check-") as scratch:
        fd = _seccomp_pipe()
        try:
            work = os.path.join(scratch, "work")
            os.mkdir(work)
            cmd = bwrap_command(exe, work, [], fd, os.path.join(scratch, "dev")) + [
                sys.executable, "-S", "-c", "import os; os.listdir('/'); open('/dev/null', 'w').write('-')"]
            proc = subprocess.run(cmd, capture_output=True, timeout=30, pass_fds=() if fd is None else (fd,))
        except (OSError, subprocess.SubprocessError) as e:
            return f"bwrap could not run: {e}"
        finally:
            if fd is not None:
                os.close(fd)
    if proc.returncode != 0:
        return f"bwrap failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace').strip()[:300]}"
    return None


def achievable_isolation() -> dict:
    """The strongest level this machine gives a worker now, and why not a stronger one."""
    why_not = _bwrap_check(bwrap_path(), os.geteuid())
    if why_not is None:
        return {"level": "whitelist-fs", "launcher": "bwrap", "why_not_higher": ""}
    prefix = isolation_prefix()
    if "-n" in prefix:
        return {"level": "no-network", "launcher": "unshare " + " ".join(prefix[1:]), "why_not_higher": why_not}
    return {"level": "hook-only", "launcher": "none", "why_not_higher": f"{why_not}; `unshare -n` is refused too"}


def check_min_isolation(minimum: str) -> dict:
    """achievable_isolation(), or a RuntimeError that says what is missing and how to get it."""
    reached = achievable_isolation()
    if LEVELS.index(reached["level"]) < LEVELS.index(minimum):
        raise RuntimeError(
            f"labcheck refuses to grade: the worker's isolation here is {reached['level']!r} "
            f"({LEVEL_HELP[reached['level']]}), below the required {minimum!r} ({LEVEL_HELP[minimum]}). "
            f"Why: {reached['why_not_higher']}. To get there: {how_to_reach(minimum)}. "
            f"Or lower the requirement (--min-isolation / --labcheck-min-isolation, one of {', '.join(LEVELS)}).")
    return reached


def default_deny() -> list[str]:
    """What no submission may read: every exercise folder (references, bands, tests, examples; a worker reads
    only its exercise's calls.py, allowed by name), labcheck's tests, the git history."""
    from labcheck.exercises import exercise_roots

    return [*(str(Path(r).resolve()) for r in exercise_roots()), str(paths.tests_dir()), str(paths.repo_root() / ".git")]


def calls_path(exercise: str) -> str:
    """The exercise's calls.py: the one file of its folder a worker loads (read-only, by name)."""
    from labcheck.exercises import get

    return str(get(exercise).calls_path.resolve())


UNPRIVILEGED_USER = "nobody"  # whom a worker run as root without bubblewrap becomes before any student line


def unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) a worker started as root without bubblewrap drops to, or None where it cannot: not root, no
    such user, or an interpreter or library that user cannot read (pyenv under a 0700 /root). Without
    bubblewrap nothing hides the grader's files from a worker that is root: torch.from_file read the
    reference past the audit hook (issue #26); as that user, the files only root may read stay closed."""
    if os.geteuid() != 0:
        return None
    import importlib.util
    import pwd
    import stat

    try:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return None
    needed = {os.path.realpath(sys.executable), *environment_paths(),
              *(os.path.dirname(importlib.util.find_spec(m).origin) for m in ("torch", "numpy", "encodings"))}
    for path in needed:  # every folder on the way traversable by others, the place itself readable
        parts = Path(path).parts
        for i in range(1, len(parts) + 1):
            try:
                mode = os.stat(Path(*parts[:i])).st_mode
            except OSError:
                return None
            last = i == len(parts)
            if (stat.S_ISDIR(mode) and not mode & stat.S_IXOTH) or (last and not mode & stat.S_IROTH):
                return None
    return user.pw_uid, user.pw_gid
