"""harness/testbin.py lets Go's toolchain directive fetch the Go a wrapper module needs when the local Go is
older (issue 14 item 6): builds run with GOTOOLCHAIN=auto unless the user set GOTOOLCHAIN. A fake `go`
(XDS_TESTBIN_GO) records the environment a real build would get; nothing is downloaded or compiled."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import testbin


def test_auto_unless_the_user_chose() -> None:
    assert testbin.go_toolchain({}) == "auto"
    assert testbin.go_toolchain({"GOTOOLCHAIN": ""}) == "auto"
    assert testbin.go_toolchain({"GOTOOLCHAIN": "local"}) == "local"
    assert testbin.go_toolchain({"GOTOOLCHAIN": "go1.26.8+auto"}) == "go1.26.8+auto"


@pytest.mark.parametrize(("user", "expected"), [(None, "auto"), ("local", "local")])
def test_the_build_runs_go_with_that_toolchain_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: str | None, expected: str) -> None:
    record = tmp_path / "env.txt"
    fake_go = tmp_path / "go"
    # An "old" go: it reports 1.21 and fails the build, after writing down what it was run with.
    fake_go.write_text("#!/bin/sh\n"
                       f"echo \"GOTOOLCHAIN=$GOTOOLCHAIN CGO_ENABLED=$CGO_ENABLED $1\" >> {record}\n"
                       "echo 'go: go.mod requires go >= 1.26.0 (running go 1.21.0)' >&2\nexit 1\n")
    fake_go.chmod(0o755)
    monkeypatch.setenv("XDS_TESTBIN_GO", str(fake_go))
    monkeypatch.setenv("XDS_TESTBIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XDS_TESTBIN_CONSUL", raising=False)
    if user is None:
        monkeypatch.delenv("GOTOOLCHAIN", raising=False)
    else:
        monkeypatch.setenv("GOTOOLCHAIN", user)
    with pytest.raises(testbin.TestbinError) as failed:
        testbin.ensure_binary("consul")
    assert record.read_text().splitlines() == [f"GOTOOLCHAIN={expected} CGO_ENABLED=0 build"]
    # Go's own message reaches the user (through the build log the error quotes).
    assert "requires go >= 1.26.0" in str(failed.value)
