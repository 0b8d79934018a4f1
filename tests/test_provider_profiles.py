"""Upstream profiles: the file format and its refusals, choosing a profile by `?provider=` or `?model=`, refusals
before the upgrade, and `/api/config` (names and models for signed-in users only)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from relay.access import clip
from relay.config import ConfigError, load_config
from relay.providers.openers import session_defaults_for
from relay.providers.profiles import (
    GEMINI_URL,
    Choice,
    ProviderSet,
    Unavailable,
    load_profiles,
    read_profiles_file,
)
from tests.conftest import TEST_API_KEY, ProxiedRelay
from tests.harness import InProcessRelay, start_process
from tests.provider_fixtures import Upstreams

TOML = """
[[provider]]
name = "openai"
kind = "openai"
url = "wss://api.openai.com/v1/realtime"
models = ["gpt-realtime", "gpt-realtime-mini"]

[[provider]]
name = "azure-eu"
kind = "azure"
url = "wss://my-resource.openai.azure.com/openai/v1/realtime"
models = ["my-deployment"]

[[provider]]
name = "gemini"
kind = "gemini"
models = ["gemini-live-2.5-flash-preview"]
voice = "Kore"
"""
ENV = {"OPENAI_API_KEY": "k1", "AZURE_OPENAI_API_KEY": "k2", "GEMINI_API_KEY": "k3"}


def test_a_toml_file_describes_several_providers(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(TOML)
    openai, azure, gemini = read_profiles_file(path, ENV)
    assert (openai.kind, azure.kind, gemini.kind) == ("openai", "azure", "gemini")
    assert [p.credential for p in (openai, azure, gemini)] == ["k1", "k2", "k3"]
    assert gemini.url == GEMINI_URL and gemini.voice == "Kore" and "Puck" in gemini.voices
    assert openai.default_model == "gpt-realtime"
    # The credential never shows in a repr (log lines, tracebacks).
    assert "k2" not in repr(azure) and "<set>" in repr(azure)
    assert "k3" not in json.dumps(ProviderSet([openai, azure, gemini]).public())


def test_the_same_in_json(tmp_path: Path) -> None:
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"provider": [{"name": "g", "kind": "gemini"}]}))
    (gemini,) = read_profiles_file(path, {"GEMINI_API_KEY": "k"})
    assert gemini.models == ("gemini-live-2.5-flash-preview",)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('name = "x"\nkind = "bedrock"', "kind must be one of openai, azure, gemini"),
        (
            'name = "x"\nkind = "azure"\nurl = "wss://r.openai.azure.com/openai/v1/realtime?api-version=2025-04-01"\n'
            'models = ["d"]',
            "takes no api-version",
        ),
        ('name = "x"\nurl = "https://api.openai.com"\nmodels = ["m"]', "ws:// or wss://"),
        ('name = "x"\nurl = "wss://a/b"\nmodels = ["m"]\ndefault_model = "n"', "default_model 'n' is not in"),
        ('name = "x"\nkind = "gemini"\nvoice = "marin"', "voice 'marin' is not one of"),
        (
            'name = "x"\nurl = "wss://a/b"\nmodels = ["m"]\ntoken_file = "/t"',
            "for Azure Entra ID tokens only",
        ),
        ('name = "x"\nurl = "wss://a/b"\nmodels = ["m"]\napi_key = "sk-..."', "unknown key 'api_key'"),
        ('name = "bad name"', "name must be"),
    ],
)
def test_file_mistakes_are_one_line_naming_the_problem(tmp_path: Path, table: str, words: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[[provider]]\n" + table + "\n")
    with pytest.raises(ConfigError, match="provider 1") as info:
        read_profiles_file(path, {})
    assert words in str(info.value)


def test_duplicate_names_and_empty_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[provider]]\nname = "g"\nkind = "gemini"\n[[provider]]\nname = "g"\nkind = "gemini"\n')
    with pytest.raises(ConfigError, match="unique"):
        read_profiles_file(path, {})
    path.write_text("")
    with pytest.raises(ConfigError, match="non-empty list"):
        read_profiles_file(path, {})


def test_the_environment_alone_makes_one_profile_of_any_kind() -> None:
    (openai,) = load_profiles(load_config(env={"OPENAI_API_KEY": "k"}), {"OPENAI_API_KEY": "k"})
    assert (openai.kind, openai.models, openai.credential) == ("openai", ("gpt-realtime",), "k")
    env = {"RELAY_UPSTREAM_KIND": "gemini", "GEMINI_API_KEY": "g", "RELAY_VOICE": "Kore"}
    (gemini,) = load_profiles(load_config(env=env), env)
    assert (gemini.url, gemini.credential, gemini.voice) == (GEMINI_URL, "g", "Kore")
    env = {
        "RELAY_UPSTREAM_KIND": "azure",
        "RELAY_UPSTREAM_URL": "wss://r.openai.azure.com/openai/v1/realtime",
        "RELAY_MODEL": "dep",
        "RELAY_UPSTREAM_TOKEN_COMMAND": "az account get-access-token",
    }
    (azure,) = load_profiles(load_config(env=env), env)
    assert (azure.models, azure.token_command, azure.has_credential()) == (
        ("dep",),
        env["RELAY_UPSTREAM_TOKEN_COMMAND"],
        True,
    )


def test_choosing_by_provider_or_model(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(TOML)
    providers = ProviderSet(read_profiles_file(path, ENV))
    pick = providers.choose
    assert pick(None, None, clip) == Choice(providers.profiles[0], "gpt-realtime")
    assert pick("gemini", None, clip) == Choice(providers.profiles[2], "gemini-live-2.5-flash-preview")
    assert pick(None, "my-deployment", clip) == Choice(providers.profiles[1], "my-deployment")
    assert pick("openai", "gpt-realtime-mini", clip) == Choice(providers.profiles[0], "gpt-realtime-mini")
    refused = pick("gemini", "gpt-realtime", clip)
    assert isinstance(refused, Unavailable) and refused.status == 403
    assert (
        "not offered by provider 'gemini'" in refused.message
        and "gemini-live-2.5-flash-preview" in refused.message
    )
    unknown = pick("bedrock", None, clip)
    assert isinstance(unknown, Unavailable) and "use one of: openai, azure-eu, gemini" in unknown.message


def test_each_kind_adjusts_the_operators_defaults(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(TOML)
    openai, azure, gemini = read_profiles_file(path, ENV)
    operator = {"instructions": "Be kind.", "audio": {"output": {"voice": "marin"}}}
    assert session_defaults_for(openai, operator) == operator
    assert session_defaults_for(azure, operator)["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
    # An OpenAI voice means nothing to Gemini: the profile's own voice replaces it.
    assert session_defaults_for(gemini, operator) == {
        "instructions": "Be kind.",
        "audio": {"output": {"voice": "Kore"}},
    }
    assert operator == {"instructions": "Be kind.", "audio": {"output": {"voice": "marin"}}}


async def test_refusals_come_before_the_upgrade_with_a_json_body(both: ProxiedRelay[InProcessRelay]) -> None:
    for query, status, words in [
        ("provider=bedrock", 403, "Provider 'bedrock' is not offered"),
        ("provider=gemini&model=gpt-realtime", 403, "not offered by provider 'gemini'"),
        ("model=gpt-4o", 403, "Model 'gpt-4o' is not offered"),
        ("provider=gemini&provider=openai", 400, "only once"),
    ]:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(f"{both.ws_url}?{query}"):
                pass
        response = info.value.response
        assert response.status_code == status, query
        body = json.loads(response.body)
        assert words in body["error"]["message"], body


async def test_api_config_lists_names_and_models_to_signed_in_users_only(
    upstreams: Upstreams, relay_factory: Callable[..., Awaitable[ProxiedRelay[InProcessRelay]]]
) -> None:
    relay = await relay_factory(providers=upstreams.providers(), access_tokens="letmein")
    async with httpx.AsyncClient(base_url=relay.base_url) as http:
        stranger = (await http.get("/api/config")).json()
        member = (await http.get("/api/config", headers={"Authorization": "Bearer letmein"})).json()
    assert "providers" not in stranger and "model" not in stranger
    assert [p["name"] for p in member["providers"]] == ["openai", "gemini"]
    assert member["providers"][1]["models"] == ["gemini-live-2.5-flash-preview"]
    assert member["providers"][1]["simulated"] is True
    text = json.dumps(member)
    assert TEST_API_KEY not in text and "ws://" not in text and "127.0.0.1" not in text


async def test_a_provider_without_its_credential_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(TOML)
    with pytest.raises(RuntimeError) as info:
        await start_process(tmp_path, env={"RELAY_PROVIDERS_FILE": str(path), "OPENAI_API_KEY": "k1"})
    assert "AZURE_OPENAI_API_KEY (provider 'azure-eu')" in str(info.value)
    assert "GEMINI_API_KEY (provider 'gemini')" in str(info.value)
