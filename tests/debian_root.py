"""A minimal Debian bookworm root filesystem (debootstrap minbase + python3-venv, systemd, procps), built
once and cached as a tarball outside the repo, for tests that install mcu-updater into a real Debian system.

debootstrap is Debian's own: taken from PATH, or fetched with ``apt-get download`` and unpacked into the
cache (nothing is installed on the host). Building the root needs root privileges and the Debian mirror;
missing either fails the test that asked for it with the reason.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest

from tests.nrfutil import CACHE

SUITE: Final = "bookworm"
MIRROR: Final = os.environ.get("MCU_UPDATER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# procps gives /bin/kill, which the unit's ExecReload= runs (Raspberry Pi OS and a standard Debian have it).
PACKAGES: Final = ("python3-venv", "systemd", "procps")
TARBALL: Final = CACHE / f"debian-{SUITE}-root.tar"
TOOLS: Final = CACHE / "debootstrap"


def _run(command: list[str], what: str, *, timeout: float = 600, cwd: Path | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({shlex.join(command[:4])} …): {(done.stderr or done.stdout)[-2000:]}")


def _debootstrap() -> tuple[list[str], dict[str, str]]:
    """The debootstrap command and its environment."""
    found = shutil.which("debootstrap")
    if found:
        return [found], {}
    script = TOOLS / "usr" / "sbin" / "debootstrap"
    if not script.exists():
        download = TOOLS.with_suffix(".download")
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir(parents=True)
        _run(["apt-get", "download", "debootstrap"], "fetching Debian's debootstrap package", cwd=download)
        (deb,) = download.glob("debootstrap_*.deb")
        _run(["dpkg-deb", "-x", str(deb), str(TOOLS)], "unpacking debootstrap")
        shutil.rmtree(download)
    return [str(script)], {"DEBOOTSTRAP_DIR": str(TOOLS / "usr" / "share" / "debootstrap")}


def debian_root_tarball() -> Path:
    """The cached tarball of the root, built on first use (locked against parallel test processes)."""
    if os.geteuid() != 0:
        pytest.fail("building and entering a Debian root needs root (debootstrap, chroot, mounts)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "debian-root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if TARBALL.exists():
            return TARBALL
        command, env = _debootstrap()
        build = CACHE / f"debian-{SUITE}-root.build"
        shutil.rmtree(build, ignore_errors=True)
        done = subprocess.run(
            [*command, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(build), MIRROR],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env=os.environ | env,
        )
        if done.returncode != 0:
            log = build / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-2000:] if log.exists() else done.stderr[-2000:]
            pytest.fail(f"debootstrap of Debian {SUITE} from {MIRROR} failed: {detail}")
        # The downloaded .debs and package lists are not needed to run anything in the root.
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (build / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = TARBALL.with_suffix(".partial")
        _run(["tar", "-C", str(build), "-cf", str(partial), "."], "archiving the Debian root")
        partial.rename(TARBALL)
        shutil.rmtree(build)
    return TARBALL


def unpack_debian_root(directory: Path) -> Path:
    """A fresh copy of the root in ``directory`` (device nodes and owners preserved)."""
    directory.mkdir(parents=True, exist_ok=True)
    _run(["tar", "-C", str(directory), "-xpf", str(debian_root_tarball())], "unpacking the Debian root")
    return directory


BASE_ENV: Final = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def in_root(
    root: Path,
    command: list[str],
    *,
    binds: dict[Path, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` chrooted into ``root`` with /dev and /proc mounted, as on a booted system, in a
    private mount namespace so nothing stays mounted afterwards. ``binds``: host directory → path inside;
    ``env`` comes on top of a plain PATH and locale (nothing else of the host's environment leaks in)."""
    mounts = [f"mount --rbind /dev {shlex.quote(str(root / 'dev'))}"]
    mounts.append(f"mount -t proc proc {shlex.quote(str(root / 'proc'))}")
    for source, inside in (binds or {}).items():
        target = root / inside.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        mounts.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}")
    script = " && ".join([*mounts, f'exec chroot {shlex.quote(str(root))} "$@"'])
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=BASE_ENV | (env or {}),
    )
