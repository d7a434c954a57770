"""Build the lab's tiny guest image: Debian's kernel + a busybox initramfs.

Called by `vmha lab image build`, the lab, the libvirt driver's tests and
the demo. The guest (see `vmha.lab.guest.init.sh` and docs/lab.md "Guest
image") feeds an i6300esb watchdog, serves `/health` on port 8080 (its
application, restarted by `/etc/init.d/app restart`: `APP_COMMAND`), runs
qemu-ga when the host has it (with a `/sbin/shutdown` for its
guest-shutdown), and fails on command (`/cgi-bin/fail`).

Inputs come from the host's Debian packages: `linux-image-amd64` (kernel and
modules), `busybox-static`, optionally `qemu-guest-agent` (qemu-ga and the
libraries `ldd` lists). The output directory holds `vmlinuz` (Debian's
bzImage), `vmlinux` (the same kernel uncompressed, booted by QEMU through its
PVH entry: under TCG this skips ~7 s of xz decompression per boot, for ~45 MiB
more QEMU RSS), `initrd.img` (newc cpio, gzip) and `image.json`, all
world-readable (QEMU runs as libvirt-qemu). A build is cached by a key over
its inputs; files are written to temporary names and renamed, so a crash
never leaves a half image.
This module must not start guests or talk to libvirt.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vmha.config import default_data_dir
from vmha.errors import ConfigError

__all__ = ["APP_COMMAND", "GuestImage", "build_image", "default_image_dir", "ensure_image",
           "image_info"]

FORMAT = 2  # bump when the image layout changes: every cached image is rebuilt
#: Modules the guest loads (their dependencies come along, loaded first).
WANTED_MODULES = ("virtio_pci", "virtio_net", "virtio_console", "pvpanic_mmio", "i6300esb")
#: Restarts the guest's application (also start, stop, status); see guest/app.sh.
APP_COMMAND = "/etc/init.d/app"
BUSYBOX = Path("/bin/busybox")
QEMU_GA = Path("/usr/sbin/qemu-ga")
BOOT = Path("/boot")
MODULES = Path("/lib/modules")


@dataclass(frozen=True)
class GuestImage:
    """A built guest image: pass `kernel`/`initrd` to `DomainSpec`.

    `kernel` is `vmlinux` (PVH boot) when the kernel supports it, else `vmlinuz`.
    """

    kernel: Path
    initrd: Path
    key: str


@dataclass(frozen=True)
class _Inputs:
    kernel_version: str
    vmlinuz: Path
    pvh: bool  # CONFIG_PVH=y: QEMU can boot the uncompressed ELF directly
    modules: list[tuple[str, Path]]  # load order, dependencies first
    busybox: Path
    qemu_ga: Path | None
    libs: list[Path]  # qemu-ga's shared libraries and the dynamic loader
    init: bytes
    cgi: bytes
    app: bytes  # /etc/init.d/app: start|stop|restart|status of the application
    shutdown: bytes  # /sbin/shutdown, what qemu-ga's guest-shutdown runs


def default_image_dir() -> Path:
    """`/var/lib/vmha/guest-image` for root (beside, not inside, the lab dir)."""
    return default_data_dir() / "guest-image"


def build_image(out_dir: Path, force: bool = False) -> GuestImage:
    """Build the image into `out_dir` (or return the cached one at once)."""
    return ensure_image(out_dir, force)[0]


def ensure_image(out_dir: Path, force: bool = False) -> tuple[GuestImage, bool]:
    """Like `build_image`; the flag says whether it was built (False: cached)."""
    inputs = _discover()
    key = _key(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir.chmod(0o755)
    kernel = out_dir / ("vmlinux" if inputs.pvh else "vmlinuz")
    image = GuestImage(kernel, out_dir / "initrd.img", key)
    with _locked(out_dir):
        if not force and _cached(out_dir, image):
            return image, False
        _write(out_dir, inputs, image)
    return image, True


def image_info(out_dir: Path) -> dict[str, object]:
    """The `image.json` of a built image (key, kernel version, sizes...)."""
    try:
        info: dict[str, object] = json.loads((out_dir / "image.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no guest image in {out_dir}: run `vmha lab image build "
                          f"--dir {out_dir}`") from exc
    return info


# --- discovery ---------------------------------------------------------------------------


def _discover() -> _Inputs:
    version, modules = _pick_kernel()
    busybox = _busybox()
    qemu_ga, libs = _qemu_ga()
    guest = resources.files("vmha.lab.guest")
    pvh = _has_pvh(version)
    return _Inputs(version, BOOT / f"vmlinuz-{version}", pvh, modules, busybox, qemu_ga, libs,
                   *(guest.joinpath(n).read_bytes()
                     for n in ("init.sh", "fail.cgi", "app.sh", "shutdown.sh")))


def _has_pvh(version: str) -> bool:
    try:
        config = (BOOT / f"config-{version}").read_text()
    except OSError:
        return False
    return "\nCONFIG_PVH=y\n" in config


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+~]", version)]


def _pick_kernel() -> tuple[str, list[tuple[str, Path]]]:
    """The newest installed kernel whose modules dir has every wanted module."""
    versions = sorted((p.name.removeprefix("vmlinuz-") for p in BOOT.glob("vmlinuz-*")),
                      key=_version_key, reverse=True)
    for version in versions:
        modules = _resolve_modules(MODULES / version)
        if modules is not None:
            return version, modules
    found = ", ".join(versions) or "none"
    raise ConfigError(
        f"no kernel in {BOOT} with the guest's modules ({', '.join(WANTED_MODULES)}); "
        f"kernels found: {found}. Install Debian's linux-image-amd64 (not the cloud flavour, "
        "it lacks i6300esb): apt-get install linux-image-amd64")


def _modname(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.(xz|zst|gz))?$", "", name).replace("-", "_")


def _resolve_modules(moddir: Path) -> list[tuple[str, Path]] | None:
    """WANTED_MODULES and their dependencies in load order, or None if one lacks."""
    try:
        lines = (moddir / "modules.dep").read_text().splitlines()
    except OSError:
        return None
    deps: dict[str, tuple[Path, list[str]]] = {}
    for line in lines:
        target, _, rest = line.partition(":")
        deps[_modname(target)] = (moddir / target, [_modname(d) for d in rest.split()])
    order: list[tuple[str, Path]] = []

    def visit(name: str) -> bool:
        if name not in deps:
            return False
        if any(n == name for n, _ in order):
            return True
        path, needs = deps[name]
        # modules.dep lists every (transitive) dependency; load the deepest first.
        ok = all(visit(d) for d in reversed(needs))
        order.append((name, path))
        return ok

    return order if all(visit(m) for m in WANTED_MODULES) else None


def _busybox() -> Path:
    if not BUSYBOX.is_file():
        raise ConfigError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    if _ldd(BUSYBOX):
        raise ConfigError(f"{BUSYBOX} is linked dynamically (package busybox); the guest "
                          "needs a static one: apt-get install busybox-static")
    return BUSYBOX


def _qemu_ga() -> tuple[Path | None, list[Path]]:
    """qemu-ga and its libraries, or (None, []) when qemu-guest-agent is not installed."""
    if not QEMU_GA.is_file():
        return None, []
    libs = _ldd(QEMU_GA)
    if not libs:
        raise ConfigError(f"ldd found no libraries for {QEMU_GA}; reinstall "
                          "qemu-guest-agent or remove it (the image works without it)")
    return QEMU_GA, libs


def _ldd(binary: Path) -> list[Path]:
    """Absolute library paths `ldd` lists ([] for a static binary)."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run ldd on {binary}: {exc}; apt-get install libc-bin") \
            from exc
    return [Path(m) for m in re.findall(r"(/\S+) \(0x", out)]


# --- cache and output ----------------------------------------------------------------------


def _stat_id(path: Path) -> list[object]:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _key(inputs: _Inputs) -> str:
    ident = {
        "format": FORMAT,
        "kernel": [inputs.kernel_version, inputs.pvh, *_stat_id(inputs.vmlinuz)],
        "modules": [[name, *_stat_id(p)] for name, p in inputs.modules],
        "busybox": hashlib.sha256(inputs.busybox.read_bytes()).hexdigest(),
        "qemu_ga": (hashlib.sha256(inputs.qemu_ga.read_bytes()).hexdigest()
                    if inputs.qemu_ga else None),
        "libs": [_stat_id(p) for p in inputs.libs],
        "init": hashlib.sha256(inputs.init).hexdigest(),
        "cgi": hashlib.sha256(inputs.cgi).hexdigest(),
        "app": hashlib.sha256(inputs.app).hexdigest(),
        "shutdown": hashlib.sha256(inputs.shutdown).hexdigest(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One build per directory at a time (other processes wait)."""
    with open(out_dir / ".build.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _cached(out_dir: Path, image: GuestImage) -> bool:
    try:
        info = json.loads((out_dir / "image.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(info.get("key") == image.key and image.kernel.is_file()
                and image.initrd.is_file())


def _write(out_dir: Path, inputs: _Inputs, image: GuestImage) -> None:
    initrd = _initramfs(inputs)
    # image.json goes first and comes back last: a crash in between leaves no valid key.
    (out_dir / "image.json").unlink(missing_ok=True)
    _atomic(out_dir / "vmlinuz", inputs.vmlinuz.read_bytes())
    if inputs.pvh:
        _write_vmlinux(out_dir, inputs)
    _atomic(image.initrd, initrd)
    info = {
        "key": image.key, "format": FORMAT, "kernel_version": inputs.kernel_version,
        "kernel": str(image.kernel), "initrd": str(image.initrd), "pvh": inputs.pvh,
        "kernel_bytes": image.kernel.stat().st_size, "initrd_bytes": len(initrd),
        "modules": [name for name, _ in inputs.modules],
        "qemu_ga": inputs.qemu_ga is not None,
    }
    _atomic(out_dir / "image.json", (json.dumps(info, indent=2) + "\n").encode())


def _write_vmlinux(out_dir: Path, inputs: _Inputs) -> None:
    """Uncompress the bzImage's payload once per kernel (1.3 s; reused otherwise)."""
    ident = json.dumps([inputs.kernel_version, *_stat_id(inputs.vmlinuz)]).encode()
    marker = out_dir / ".vmlinux.id"
    if (out_dir / "vmlinux").is_file() and marker.is_file() and marker.read_bytes() == ident:
        return
    marker.unlink(missing_ok=True)
    _atomic(out_dir / "vmlinux", _uncompress_kernel(inputs.vmlinuz))
    _atomic(marker, ident)


def _uncompress_kernel(bzimage: Path) -> bytes:
    """The ELF vmlinux inside a bzImage (xz or gzip payload, as Debian builds them)."""
    data = bzimage.read_bytes()
    for magic, unpack in ((b"\xfd7zXZ\x00", lzma.LZMADecompressor),
                          (b"\x1f\x8b\x08\x00", _GzipStream)):
        at = data.find(magic)
        if at < 0:
            continue
        try:
            out: bytes = unpack().decompress(data[at:])
        except (lzma.LZMAError, OSError, EOFError, zlib.error):
            continue
        if out.startswith(b"\x7fELF"):
            return out
    raise ConfigError(f"cannot find the compressed kernel inside {bzimage}; reinstall "
                      "linux-image-amd64 (apt-get install --reinstall linux-image-amd64)")


class _GzipStream:
    def __init__(self) -> None:
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def decompress(self, data: bytes) -> bytes:
        return self._z.decompress(data)


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- the initramfs ------------------------------------------------------------------------


def _initramfs(inputs: _Inputs) -> bytes:
    cpio = _Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib", "lib/modules", "lib64",
              "etc", "etc/vmha", "etc/init.d", "proc", "sys", "dev", "run", "tmp", "root", "www",
              "www/cgi-bin"):
        cpio.directory(d)
    cpio.node("dev/console", 0o600, 5, 1)
    cpio.file("init", inputs.init, 0o755)
    cpio.file("www/cgi-bin/fail", inputs.cgi, 0o755)
    cpio.file(APP_COMMAND.lstrip("/"), inputs.app, 0o755)
    cpio.file("sbin/shutdown", inputs.shutdown, 0o755)
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    cpio.file("etc/group", b"root:x:0:\n", 0o644)
    cpio.file("bin/busybox", inputs.busybox.read_bytes(), 0o755)
    for applet in _applets(inputs.busybox):
        if applet != "bin/busybox":
            cpio.symlink(applet, "/bin/busybox")
    for name, path in inputs.modules:
        cpio.file(f"lib/modules/{name}.ko", _module_bytes(path), 0o644)
    cpio.file("etc/vmha/modules", "".join(f"{n}\n" for n, _ in inputs.modules).encode(), 0o644)
    if inputs.qemu_ga is not None:
        cpio.file("usr/sbin/qemu-ga", inputs.qemu_ga.read_bytes(), 0o755)
        for lib in inputs.libs:
            cpio.parents(str(lib).lstrip("/"))
            cpio.file(str(lib).lstrip("/"), lib.read_bytes(), 0o755)
    return gzip.compress(cpio.finish(), compresslevel=1, mtime=0)


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                         timeout=10, check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _module_bytes(path: Path) -> bytes:
    """The module uncompressed (busybox insmod loads plain .ko files)."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        if not shutil.which("zstd"):
            raise ConfigError(f"{path} is zstd-compressed and zstd is missing: "
                              "apt-get install zstd")
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True,
                              timeout=30).stdout
    return data


class _Cpio:
    """A newc ("070701") archive in memory, deterministic (mtime 0, uid/gid 0)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._seen: set[str] = set()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        self._seen.add(name)
        self._ino += 1
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        header = b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
        self._parts.append(_pad(header + name.encode() + b"\0"))
        self._parts.append(_pad(data))

    def directory(self, name: str) -> None:
        if name not in self._seen:
            self._entry(name, 0o040755, nlink=2)

    def parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.directory("/".join(parts[:i]))

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        if name not in self._seen:
            self.parents(name)
            self._entry(name, 0o120777, target.encode())

    def node(self, name: str, mode: int, major: int, minor: int) -> None:
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, nlink=1)
        return b"".join(self._parts)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)
