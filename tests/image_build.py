"""Build the real Dockerfile with buildah and run the image, on a machine without a Docker engine or registry.

Stand-ins, passed to the Dockerfile by build argument only (the file itself is built as it is):

- `PYTHON_IMAGE`: a Debian bookworm root filesystem made by `mmdebstrap` from Debian's own packages (Python 3.11),
  imported `FROM scratch`. It carries this machine's CA bundle as `SSL_CERT_FILE`, because the build downloads the
  locked wheels from PyPI and this network may intercept TLS with its own authority.
- `UV_IMAGE`: an image holding only `/uv` and `/uvx`, from the PyPI `uv` wheel of the version the Dockerfile pins.

Cached between runs on the same machine in buildah's storage under `CACHE_ROOT`: the base image (tagged by a key of
what it is made from, renewed weekly for Debian's security updates), the uv image (tagged by version), and the
build's layers, which make an unchanged build take seconds. Layers the latest build did not use are removed.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import REPO

DOCKERFILE = REPO / "Dockerfile"
CACHE_ROOT = Path(
    os.environ.get(
        "REALTIME_RELAY_CI_CACHE",
        "/var/cache/realtime-relay-ci"
        if os.geteuid() == 0
        else str(Path.home() / ".cache/realtime-relay-ci"),
    )
)
#: What `PYTHON_IMAGE` stands for: Debian's Python 3.11 (bookworm), plus what the runtime stage runs (useradd).
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "passwd")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: One tag for every run: runs take turns (`exclusive_use`), and the tagged image keeps its layers in the cache.
RELAY_TAG = "localhost/realtime-relay:ci"
#: overlay works for root on ext4 here and is ~10x cheaper than vfs, which copies every layer in full.
STORAGE_DRIVER = os.environ.get("STORAGE_DRIVER", "overlay")


class ImageToolMissing(RuntimeError):
    """buildah or mmdebstrap is not installed."""


@contextlib.contextmanager
def exclusive_use() -> Iterator[None]:
    """Hold the machine's image-test lock: one run at a time builds, prunes and runs containers.

    Two runs at once would prune each other's fresh layers, and the health check (which finds the relay by its
    uid in the shared process table) could find the other run's relay.
    """
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def dockerfile_default(name: str) -> str:
    """The default value of a global `ARG name=value` of the Dockerfile."""
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert match, f"the Dockerfile has no ARG {name}=..."
    return match[1]


def uv_version() -> str:
    """The uv version of the Dockerfile's `UV_IMAGE` (ghcr.io/astral-sh/uv:<version>@sha256:...)."""
    match = re.fullmatch(r"[^:]+/uv:(\d+\.\d+\.\d+)(@sha256:[0-9a-f]{64})?", dockerfile_default("UV_IMAGE"))
    assert match, "UV_IMAGE must name ghcr.io/astral-sh/uv:<version>"
    return match[1]


@dataclass
class Buildah:
    """buildah with its storage in the cache folder (and its run state in a temporary one)."""

    root: Path
    runroot: Path

    @classmethod
    def create(cls) -> Buildah:
        """Raises `ImageToolMissing` when buildah is not installed."""
        if shutil.which("buildah") is None:
            raise ImageToolMissing("buildah is not installed (Debian package `buildah`)")
        root = CACHE_ROOT / "containers" / STORAGE_DRIVER
        root.mkdir(parents=True, exist_ok=True)
        runroot = Path(tempfile.mkdtemp(prefix="relay-buildah-run-"))
        return cls(root, runroot)

    def command(self, *args: str) -> list[str]:
        """The argument list of one buildah command."""
        return [
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            STORAGE_DRIVER,
            *args,
        ]

    def run(self, *args: str, timeout: float = 600) -> str:
        """Run a buildah command; its stdout, or AssertionError with its output."""
        result = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, (
            f"buildah {' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def has_image(self, tag: str) -> bool:
        """True when `tag` is in the local storage."""
        result = subprocess.run(
            self.command("inspect", "--type", "image", tag), capture_output=True, timeout=60, check=False
        )
        return result.returncode == 0

    def inspect(self, tag: str) -> dict[str, Any]:
        """buildah's description of an image."""
        return dict(json.loads(self.run("inspect", "--type", "image", tag)))

    def close(self) -> None:
        """Remove the run state (the storage stays: it is the cache)."""
        shutil.rmtree(self.runroot, ignore_errors=True)


def _fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def base_image(buildah: Buildah) -> str:
    """The tag of the local stand-in for `PYTHON_IMAGE`, made (about 20-80 s) unless cached."""
    if shutil.which("mmdebstrap") is None:
        raise ImageToolMissing("mmdebstrap is not installed (Debian package `mmdebstrap`)")
    year, week, _ = datetime.datetime.now(datetime.UTC).isocalendar()
    ca = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    key = _fingerprint(BASE_SUITE, *BASE_PACKAGES, ca, f"{year}-W{week}")
    tag = f"localhost/relay-ci/python:3.11-{BASE_SUITE}-{key}"
    if buildah.has_image(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="relay-base-") as tmp:
        context = Path(tmp)
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=apt",
                "--include=" + ",".join(BASE_PACKAGES),
                BASE_SUITE,
                str(context / "rootfs.tar"),
            ],
            check=True,
            timeout=900,
        )
        lines = ["FROM scratch", "ADD rootfs.tar /", 'CMD ["python3"]']
        if ca:
            (context / "ca-certificates.crt").write_bytes(ca)
            lines[2:2] = [
                "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
                "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            ]
        (context / "Containerfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
        buildah.run("bud", "--isolation", "chroot", "--quiet", "-t", tag, str(context))
    _remove_other_tags(buildah, "localhost/relay-ci/python", tag)
    return tag


def uv_image(buildah: Buildah) -> str:
    """The tag of the local stand-in for `UV_IMAGE`: the binaries of the PyPI `uv` wheel of the pinned version."""
    version = uv_version()
    tag = f"localhost/relay-ci/uv:{version}"
    if buildah.has_image(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="relay-uv-") as tmp:
        context = Path(tmp)
        wheel = context / "wheel"
        # uv installs its own PyPI wheel into a plain folder: the binaries land in bin/, as the wheel ships them.
        subprocess.run(
            [
                *(_uv(), "pip", "install", "--quiet", "--no-deps", "--only-binary", ":all:"),
                *("--target", str(wheel), f"uv=={version}"),
            ],
            check=True,
            timeout=300,
        )
        for name in ("uv", "uvx"):
            shutil.copy2(wheel / "bin" / name, context / name)
        (context / "Containerfile").write_text("FROM scratch\nCOPY uv uvx /\n", encoding="utf-8")
        buildah.run("bud", "--isolation", "chroot", "--quiet", "-t", tag, str(context))
    _remove_other_tags(buildah, "localhost/relay-ci/uv", tag)
    return tag


def _uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    assert Path(found).is_file(), "uv is not installed (./run-tests installs it into .tools/)"
    return found


def _remove_other_tags(buildah: Buildah, repository: str, keep: str) -> None:
    listed = buildah.run("images", "--format", "{{.Name}}:{{.Tag}}")
    for name in listed.split():
        if name.startswith(repository + ":") and name != keep:
            buildah.run("rmi", name)


@dataclass(frozen=True)
class Build:
    """A finished build: its tag, how long it took, and buildah's output."""

    tag: str
    seconds: float
    log: str


def build_relay_image(buildah: Buildah, python_image: str, uv: str) -> Build:
    """`buildah bud` of the real Dockerfile with the stand-ins given by build argument; stale layers removed."""
    tag = RELAY_TAG
    started = time.monotonic()
    log = buildah.run(
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        # The docker format keeps the HEALTHCHECK (the OCI image format has no field for it).
        "--format",
        "docker",
        "--build-arg",
        f"PYTHON_IMAGE={python_image}",
        "--build-arg",
        f"UV_IMAGE={uv}",
        "-f",
        str(DOCKERFILE),
        "-t",
        tag,
        str(REPO),
        timeout=1200,
    )
    seconds = time.monotonic() - started
    _prune_layers_not_in(buildah, log)
    return Build(tag, seconds, log)


def _prune_layers_not_in(buildah: Buildah, log: str) -> None:
    """Remove cached intermediate images that this build did not use: each source change leaves some behind."""
    used = set(re.findall(r"^--> (?:Using cache )?([0-9a-f]{11,64})$", log, flags=re.MULTILINE))
    dangling = buildah.run("images", "--all", "--filter", "dangling=true", "--format", "{{.ID}}").split()
    for image_id in dangling:
        if not any(image_id.startswith(u[:12]) or u.startswith(image_id[:12]) for u in used):
            subprocess.run(buildah.command("rmi", image_id), capture_output=True, timeout=120, check=False)


@dataclass
class Container:
    """A working container of the image; `start` runs the image's own entrypoint and command as its user."""

    buildah: Buildah
    name: str
    config: dict[str, Any]

    @classmethod
    def create(cls, buildah: Buildah, tag: str, name: str) -> Container:
        """A fresh working container of `tag` (any leftover of the same name removed first)."""
        subprocess.run(buildah.command("rm", name), capture_output=True, timeout=60, check=False)
        buildah.run("from", "--name", name, tag)
        config = buildah.inspect(tag)["Docker"]["config"]
        return cls(buildah, name, dict(config))

    @property
    def user(self) -> str:
        """The image's USER."""
        return str(self.config["User"])

    def command_line(self, extra_args: Sequence[str]) -> list[str]:
        """ENTRYPOINT + CMD of the image, then `extra_args` (as `docker run IMAGE ARGS...` replaces CMD)."""
        entrypoint = list(self.config.get("Entrypoint") or [])
        cmd = list(extra_args) if extra_args else list(self.config.get("Cmd") or [])
        return entrypoint + cmd

    def start(self, extra_args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Run the image's command in the container (chroot isolation: the host's network and pid space)."""
        env_flags = [flag for name, value in env.items() for flag in ("--env", f"{name}={value}")]
        argv = self.buildah.command(
            "run",
            "--isolation",
            "chroot",
            "--user",
            self.user,
            "--workingdir",
            str(self.config.get("WorkingDir") or "/"),
            *env_flags,
            self.name,
            "--",
            *self.command_line(extra_args),
        )
        with log.open("wb") as sink:
            return subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)

    def exec(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run another command in the same container as the image's user."""
        return subprocess.run(
            self.buildah.command("run", "--isolation", "chroot", "--user", self.user, self.name, "--", *argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @contextlib.contextmanager
    def mounted(self) -> Iterator[Path]:
        """The container's root filesystem on the host."""
        path = Path(self.buildah.run("mount", self.name).strip())
        try:
            yield path
        finally:
            subprocess.run(
                self.buildah.command("umount", self.name), capture_output=True, timeout=60, check=False
            )

    def remove(self) -> None:
        """Delete the working container."""
        subprocess.run(self.buildah.command("rm", self.name), capture_output=True, timeout=60, check=False)


def filesystem_state(root: Path) -> dict[str, tuple[int, int, float]]:
    """Every path under `root` (not crossing into other mounts) with its mode, size and modification time."""
    state: dict[str, tuple[int, int, float]] = {}
    device = root.stat().st_dev
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        subdirs[:] = [d for d in subdirs if (here / d).lstat().st_dev == device]
        for name in [*subdirs, *files]:
            path = here / name
            info = path.lstat()
            state["/" + str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime)
    return state


def changed_paths(
    before: dict[str, tuple[int, int, float]], after: dict[str, tuple[int, int, float]]
) -> set[str]:
    """Paths added, removed or modified between two `filesystem_state`s."""
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def relay_pid_in(container_process: subprocess.Popen[bytes], user: str, timeout: float = 10) -> int:
    """The pid of the relay process that `buildah run` started (the descendant running as the image's user)."""
    uid = int(user.split(":")[0])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _descendants(container_process.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            owner = re.search(r"^Uid:\s+(\d+)", status, flags=re.MULTILINE)
            is_python = any(
                Path(part.decode(errors="replace")).name.startswith("python") for part in cmdline[:1]
            )
            if owner and int(owner[1]) == uid and is_python:
                return pid
        time.sleep(0.1)
    raise AssertionError("the relay process did not appear in the container")


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL `buildah run` and everything it started: the relay outlives a killed buildah otherwise."""
    for pid in reversed(_descendants(process.pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    process.wait(30)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found
