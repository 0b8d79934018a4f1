"""The container image, built from the real Dockerfile and run: the relay as `docker run` would start it.

buildah builds the Dockerfile without a daemon (tests/image_build.py says what stands in for the base images and
what is cached). Each run starts the image's own ENTRYPOINT and CMD as the image's USER with `buildah run
--isolation chroot`, which shares the host's network: the relay is told to listen on free loopback ports by flags,
as an operator's `docker run IMAGE --port ...` would, while the image's own environment stays as built (so the
HEALTHCHECK has to find the port from the running relay, not from RELAY_PORT).

What chroot isolation cannot show (a read-only root, dropped capabilities, Docker running the HEALTHCHECK on its
schedule, the relay on 0.0.0.0 inside its own network namespace) is checked statically in test_deploy_files.py and
listed in the README.

Needs root (buildah's storage and chroot): under CI (root) a missing tool or a failing build fails the test; as
another user the tests are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from relay.fake.server import FakeRealtimeServer
from tests.conftest import TEST_API_KEY, scanned
from tests.harness import REPO, free_port
from tests.image_build import (
    Build,
    Buildah,
    Container,
    ImageToolMissing,
    base_image,
    build_relay_image,
    changed_paths,
    exclusive_use,
    filesystem_state,
    kill_tree,
    relay_pid_in,
    uv_image,
)
from tests.test_relay_sdk import collect_until, voiced_turn

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

#: The only place the image lets the relay write (a tmpfs in compose and Kubernetes).
WRITABLE = "/tmp"
#: Written by `buildah run` itself (podman's and buildah's "inside a container" marker), not by the relay.
RUNTIME_FILES = {"/run", "/run/.containerenv"}
DRAIN_SECONDS = 3
README = REPO / "README.md"


@dataclass
class BuiltImage:
    buildah: Buildah
    build: Build
    python_image: str


@pytest.fixture(scope="module")
def image() -> Iterator[BuiltImage]:
    """The image, built once for this module (seconds when buildah's layer cache is warm)."""
    with exclusive_use():
        try:
            buildah = Buildah.create()
            python_image = base_image(buildah)
            build = build_relay_image(buildah, python_image, uv_image(buildah))
        except (ImageToolMissing, AssertionError, PermissionError, subprocess.CalledProcessError) as exc:
            if os.geteuid() != 0:
                pytest.skip(
                    f"the image test needs root for buildah and mmdebstrap (./run-tests as root): {exc}"
                )
            raise
        try:
            yield BuiltImage(buildah, build, python_image)
        finally:
            buildah.close()


@dataclass
class RunningRelay:
    container: Container
    process: subprocess.Popen[bytes]
    pid: int
    port: int
    metrics_port: int
    log: Path
    #: The container's root filesystem on the host, and its state before the relay started.
    root: Path
    before: dict[str, tuple[int, int, float]]

    def written_outside_the_declared_places(self) -> list[str]:
        """Paths the relay created, changed or removed anywhere but /tmp since it started."""
        changed = changed_paths(self.before, filesystem_state(self.root)) - RUNTIME_FILES
        return sorted(p for p in changed if p != WRITABLE and not p.startswith(WRITABLE + "/"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float) -> int:
        """SIGTERM to the relay (what `docker stop` sends), then its exit status as `buildah run` reports it."""
        os.kill(self.pid, signal.SIGTERM)
        return self.process.wait(timeout)


@asynccontextmanager
async def run_image(
    image: BuiltImage, name: str, tmp_path: Path, args: list[str], env: dict[str, str]
) -> AsyncIterator[RunningRelay]:
    """Start the image's command with `args` (replacing CMD) and `env` (added to the image's); stop it after."""
    container = Container.create(image.buildah, image.build.tag, f"{name}-{os.getpid()}")
    port, metrics_port = free_port(), free_port()
    listen = ["--host", "127.0.0.1", "--port", str(port), "--metrics-host", "127.0.0.1"]
    listen += ["--metrics-port", str(metrics_port)]
    log = tmp_path / f"{name}.log"
    with container.mounted() as root:
        before = filesystem_state(root)
        process = container.start([*args, *listen], env, log)
        try:
            pid = relay_pid_in(process, container.user)
            running = RunningRelay(container, process, pid, port, metrics_port, log, root, before)
            await _wait_healthy(running)
            yield running
        finally:
            kill_tree(process)
    container.remove()


async def _wait_healthy(relay: RunningRelay, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if relay.process.poll() is not None:
                raise AssertionError(f"the relay exited ({relay.process.returncode}):\n{relay.log_text()}")
            try:
                if (await http.get(f"{relay.base_url}/healthz", timeout=2)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"the relay did not answer /healthz within {timeout} s:\n{relay.log_text()}")


async def sdk_voice_turn(base_url: str, api_key: str) -> list[Any]:
    """One spoken turn through the official SDK, as in test_relay_sdk; the events up to response.done."""
    client = AsyncOpenAI(api_key=api_key, base_url=f"{base_url}/v1")
    audio = voiced_turn()
    async with client.realtime.connect(model="gpt-realtime") as connection:
        for start in range(0, len(audio), 960):
            await connection.input_audio_buffer.append(
                audio=base64.b64encode(audio[start : start + 960]).decode()
            )
        return await collect_until(connection, "response.done", timeout=30)


def assert_turn_completed(events: list[Any]) -> None:
    types = [e.type for e in events]
    assert types[0] == "session.created"
    assert "response.output_audio.delta" in types
    assert events[-1].response.status == "completed"


# ----------------------------------------------------------------------------------------------------


def test_image_is_the_dockerfile_built_as_it_is(
    image: BuiltImage, record_property: Callable[[str, object], None]
) -> None:
    config = image.buildah.inspect(image.build.tag)["Docker"]["config"]
    record_property("image_build_seconds", round(image.build.seconds, 1))
    # One line per tag of the same image: the first is enough.
    size = image.buildah.run("images", "--format", "{{.Size}}", image.build.tag).splitlines()[0].strip()
    record_property("image_size", size)
    # The README states the size; it must still be what the build makes (within 10 %).
    stated = re.search(r"^Size: (\d+) MB as built in CI", README.read_text(encoding="utf-8"), re.MULTILINE)
    assert stated, "the README does not state the image size"
    value, unit = size.split()
    assert unit == "MB" and abs(float(value) - int(stated[1])) <= 0.1 * int(stated[1]), (size, stated[1])
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["realtime-relay"]
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "relay.healthcheck"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "realtime-relay"
    # The stand-in came in by build argument, which is the only thing the build changed.
    assert labels["org.opencontainers.image.base.name"] == image.python_image
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["RELAY_PORT"] == "8080" and env["RELAY_HOST"] == "0.0.0.0"


def test_image_code_is_not_writable_by_its_user(image: BuiltImage) -> None:
    container = Container.create(image.buildah, image.build.tag, f"relay-ci-perms-{os.getpid()}")
    try:
        probe = container.exec(
            "python",
            "-c",
            "import os, sys; print(os.getuid(), os.access('/app/.venv', os.W_OK), "
            "os.access(sys.modules['os'].__file__, os.W_OK), os.access('/tmp', os.W_OK))",
        )
    finally:
        container.remove()
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["10001", "False", "False", "True"]


async def test_demo_image_serves_everything_and_drains_on_sigterm(image: BuiltImage, tmp_path: Path) -> None:
    async with run_image(
        image, "relay-ci-demo", tmp_path, ["--demo"], {"RELAY_DRAIN_SECONDS": str(DRAIN_SECONDS)}
    ) as relay:
        async with httpx.AsyncClient(base_url=relay.base_url, timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            page = await http.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert "<script" in page.text
            # /metrics lives on its own listener only.
            assert (await http.get("/metrics")).status_code == 404

        events = await sdk_voice_turn(relay.base_url, "any-key-in-demo-mode")
        assert_turn_completed(events)

        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"http://127.0.0.1:{relay.metrics_port}/metrics")).text
        first_audio = re.search(r"^relay_response_first_audio_seconds_count\S* (\S+)$", metrics, re.MULTILINE)
        assert first_audio is not None and float(first_audio[1]) >= 1
        assert re.search(r"^relay_sessions_active 0\.0$", metrics, re.MULTILINE)

        # The image's HEALTHCHECK, run in the container: the relay listens on --port, not on RELAY_PORT.
        health = relay.container.exec("python", "-m", "relay.healthcheck")
        assert health.returncode == 0, health.stderr

        # SIGTERM with a session open: /readyz turns 503, the session is closed, the process exits 0.
        client = AsyncOpenAI(api_key="demo", base_url=f"{relay.base_url}/v1")
        async with client.realtime.connect(model="gpt-realtime") as connection:
            await collect_until(connection, "session.created")
            started = time.monotonic()
            os.kill(relay.pid, signal.SIGTERM)
            async with httpx.AsyncClient(timeout=2) as http:
                ready = (await http.get(f"{relay.base_url}/readyz")).status_code
            assert ready == 503
            with pytest.raises(Exception) as ended:  # the end of the stream, or the close
                await collect_until(connection, "never-sent", timeout=DRAIN_SECONDS + 15)
            assert not isinstance(ended.value, TimeoutError), "the session stayed open past the drain"
            closed_after = time.monotonic() - started
        status = await asyncio.to_thread(relay.process.wait, 30)
        assert status == 0, relay.log_text()
        # The open session was given the drain time, then closed; the process ended soon after.
        assert DRAIN_SECONDS - 0.5 <= closed_after < DRAIN_SECONDS + 15
        assert time.monotonic() - started < DRAIN_SECONDS + 15
        written = relay.written_outside_the_declared_places()
        assert not written, f"the relay wrote outside {WRITABLE}: {written[:20]}"

        # With the relay gone the health check fails, so the passing one above meant something.
        assert relay.container.exec("python", "-m", "relay.healthcheck").returncode == 1
    log = relay.log_text()
    for event in ("relay_listening", "shutdown_requested", "draining"):
        assert f'"event": "{event}"' in log, f"no {event} line in the log:\n{log}"


async def test_image_with_a_key_relays_to_the_model_on_the_host(
    image: BuiltImage, fake_upstream: FakeRealtimeServer, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(32)
    env = {
        "OPENAI_API_KEY": TEST_API_KEY,
        "RELAY_UPSTREAM_URL": fake_upstream.url,
        "RELAY_ACCESS_TOKENS": token,
        "RELAY_COOKIE_SECRET": secrets.token_urlsafe(32),
    }
    async with run_image(image, "relay-ci-keyed", tmp_path, [], env) as relay:
        # Clients reach it through the scanning proxy: the suite fails if the key ever reaches one.
        proxy = await scanned(relay.port)
        try:
            base_url = f"http://127.0.0.1:{proxy.port}"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    f"ws://127.0.0.1:{proxy.port}/v1/realtime",
                    additional_headers={"Authorization": "Bearer wrong"},
                ):
                    pass
            assert refused.value.response.status_code == 401

            events = await sdk_voice_turn(base_url, token)
            assert_turn_completed(events)
        finally:
            await proxy.stop()
        record = fake_upstream.connections[-1]
        assert record.request_headers["authorization"] == f"Bearer {TEST_API_KEY}"
        assert token not in str(dict(record.request_headers))
        assert relay.terminate(timeout=30) == 0
        written = relay.written_outside_the_declared_places()
        assert not written, f"the relay wrote outside {WRITABLE}: {written[:20]}"
    log = relay.log_text()
    assert TEST_API_KEY not in log and token not in log
    assert f"OpenAI at {fake_upstream.url}" in log


def test_the_filesystem_comparison_sees_every_kind_of_write(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "code.py").write_text("x = 1\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "gone").write_text("")
    before = filesystem_state(tmp_path)
    (tmp_path / "app" / "code.py").write_text("x = 22\n")
    (tmp_path / "etc" / "gone").unlink()
    (tmp_path / "new").write_text("")
    assert changed_paths(before, filesystem_state(tmp_path)) >= {"/app/code.py", "/etc/gone", "/new"}
    assert changed_paths(before, before) == set()
