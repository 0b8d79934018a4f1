"""Behind a TLS-terminating ingress, as deploy/k8s runs the relay: trusted by configuration, limited per real client.

The ingress is played by connections from 127.0.0.2 (any address other than the relay's default trusted 127.0.0.1
would do) carrying what ingress-nginx sends: the client's `Host`, `X-Forwarded-Proto: https` and
`X-Forwarded-For`. Without trusting it the relay refuses web sign-in (it takes its own origin to be http://) and
counts every user's failed sign-ins under the ingress's address; with RELAY_FORWARDED_ALLOW_IPS naming the ingress,
as deployment.yaml does, both work as they should.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml
from websockets.asyncio.client import connect

from relay.access import TrustedProxies
from relay.auth import COOKIE_NAME, LOGIN_BURST
from relay.config import load_config

TOKEN = "ingress-" + "7f3a9c2e5b1d8046a2c4e6f8"
SECRET = "ingress-cookie-" + "0a1b2c3d4e5f60718293a4b5"
INGRESS = "127.0.0.2"
PUBLIC = "relay.example.com"
ORIGIN = f"https://{PUBLIC}"
K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


def through_ingress(port: int) -> httpx.AsyncClient:
    """An HTTP client whose connections come from the ingress's address, as the ingress's would."""
    transport = httpx.AsyncHTTPTransport(local_address=INGRESS)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", transport=transport, timeout=5)


def forwarded_for(client: str) -> dict[str, str]:
    # ingress-nginx keeps the client's Host and appends the address it saw to what the client sent.
    return {"Host": PUBLIC, "X-Forwarded-Proto": "https", "X-Forwarded-For": client, "Origin": ORIGIN}


async def login(http: httpx.AsyncClient, token: str, client: str) -> httpx.Response:
    return await http.post("/auth/login", json={"token": token}, headers=forwarded_for(client))


async def test_an_untrusted_ingress_breaks_sign_in(relay_factory: Any) -> None:
    # What the review found, reproduced: the relay's default trust is 127.0.0.1 only.
    relay = await relay_factory(access_tokens=TOKEN, cookie_secret=SECRET)
    async with through_ingress(relay.inner.port) as http:
        refused = await login(http, TOKEN, "198.51.100.7")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert f"http://{PUBLIC}" in refused.json()["error"]["message"]


async def test_a_trusted_ingress_signs_in_over_https_and_opens_sockets(relay_factory: Any) -> None:
    relay = await relay_factory(access_tokens=TOKEN, cookie_secret=SECRET, forwarded_allow_ips=INGRESS)
    async with through_ingress(relay.inner.port) as http:
        answer = await login(http, TOKEN, "198.51.100.7")
    assert answer.status_code == 204, answer.text
    cookie = answer.cookies[COOKIE_NAME]
    assert "secure" in answer.headers["set-cookie"].lower()
    headers = {**forwarded_for("198.51.100.7"), "Cookie": f"{COOKIE_NAME}={cookie}"}
    for name in ("Origin", "Host"):  # sent by the client library from the URL and `origin`
        headers.pop(name)
    async with connect(
        f"ws://{PUBLIC}/v1/realtime",
        additional_headers=headers,
        origin=ORIGIN,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=relay.inner.port,
        local_addr=(INGRESS, 0),
    ) as ws:
        assert '"session.created"' in str(await ws.recv())


async def test_failed_sign_ins_count_per_real_client_behind_the_ingress(relay_factory: Any) -> None:
    relay = await relay_factory(access_tokens=TOKEN, cookie_secret=SECRET, forwarded_allow_ips=INGRESS)
    async with through_ingress(relay.inner.port) as http:
        # The guesser also sends a forged X-Forwarded-For first; the ingress appends the address it really saw.
        guesses = [await login(http, f"wrong-{n}", "203.0.113.66, 198.51.100.7") for n in range(LOGIN_BURST)]
        assert [g.status_code for g in guesses] == [401] * LOGIN_BURST
        assert (await login(http, TOKEN, "198.51.100.7")).status_code == 429
        assert (await login(http, TOKEN, "203.0.113.66")).status_code == 204, "the forged address was counted"
        assert (await login(http, TOKEN, "192.0.2.10")).status_code == 204


async def test_the_same_guesses_lock_everyone_out_behind_an_untrusted_proxy(relay_factory: Any) -> None:
    # The other half of the finding: with the ingress untrusted, all users share its address.
    relay = await relay_factory(access_tokens=TOKEN, cookie_secret=SECRET)
    async with through_ingress(relay.inner.port) as http:
        plain = {"Host": "127.0.0.1", "X-Forwarded-For": "198.51.100.7"}
        for n in range(LOGIN_BURST):
            await http.post("/auth/login", json={"token": f"wrong-{n}"}, headers=plain)
        other = {"Host": "127.0.0.1", "X-Forwarded-For": "192.0.2.10"}
        locked = await http.post("/auth/login", json={"token": TOKEN}, headers=other)
    assert locked.status_code == 429


def _container_env() -> dict[str, str]:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text(encoding="utf-8"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_deployment_trusts_the_pod_network_and_the_policy_admits_only_the_ingress() -> None:
    env = _container_env()
    env.pop("RELAY_ACCESS_TOKENS_FILE")  # a path in the pod
    config = load_config(env)  # the relay's own parser accepts the value
    trusted = TrustedProxies(config.forwarded_allow_ips)
    assert "10.42.0.17" in trusted  # an ingress pod on a common pod network
    assert "127.0.0.1" not in trusted and "203.0.113.5" not in trusted

    policy = yaml.safe_load((K8S / "networkpolicy.yaml").read_text(encoding="utf-8"))
    rules = policy["spec"]["ingress"]
    public = [r for r in rules if any(p["port"] == config.port for p in r["ports"])]
    assert len(public) == 1 and public[0]["from"], "port 8080 must be open to the ingress controller only"
    (peer,) = public[0]["from"]
    assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
    ingress = yaml.safe_load((K8S / "ingress.yaml").read_text(encoding="utf-8"))
    assert (
        ingress["spec"]["ingressClassName"]
        in peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    )
