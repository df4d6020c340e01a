"""The table of source kinds (xds/source_kinds.py; issue 13 section 1): the CLI, the environment and the
app find every registry through it, in its order."""

from __future__ import annotations

import pytest

from xds import cli
from xds.app import _sources_from
from xds.settings import Settings, from_environment
from xds.source_kinds import KINDS, kind
from xds.sources.consul import ConsulConfig, ConsulSource


def test_every_kind_is_named_once_and_found_by_name() -> None:
    names = [k.name for k in KINDS]
    assert names[:2] == ["consul", "kubernetes"] and len(set(names)) == len(names)
    assert kind("consul").name == "consul"
    with pytest.raises(KeyError, match="unknown source kind 'nope'"):
        kind("nope")


def test_the_cli_builds_each_kind_from_its_own_flags_and_variables() -> None:
    env = from_environment({"XDS_CONSUL_ADDRESS": "http://127.0.0.1:8500", "XDS_CONSUL_RESYNC_GRACE_S": "4"})
    args = cli.build_parser(env).parse_args(["serve"])
    configs = {k.name: k.config(args, env) for k in KINDS}
    assert isinstance(configs["consul"], ConsulConfig) and configs["consul"].resync_grace_s == 4.0
    assert configs["kubernetes"] is None  # not asked for


def test_settings_registries_build_sources_in_table_order_and_register_their_secrets() -> None:
    config = ConsulConfig("http://127.0.0.1:8500", token="kinds-test-token")
    settings = Settings(registries={"consul": config})
    assert settings.registry_config("consul") is config
    assert settings.registry_config("kubernetes") is None
    sources = _sources_from(settings)
    assert [type(s) for s in sources] == [ConsulSource]
    assert kind("consul").secrets(config) == ("kinds-test-token",)
