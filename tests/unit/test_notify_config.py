"""The notification flags: parsed into the settings, and refused at start-up with the flag named."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from scheduledbot.api.notify import SigningKeyError
from scheduledbot.runtime import config
from scheduledbot.runtime.notify import default_signing_key

KEY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_flags_reach_the_settings(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    settings = config.load(
        [
            "--default-notify-url=https://hooks.example.com/all",
            f"--default-notify-signing-key-file={key_file}",
            "--extra-notify-hosts=127.0.0.1:9000, receiver.local",
            "--notify-denied-networks=100.64.0.0/10,2001:db8::/32",
            "--notify-concurrency=4",
            "--notify-max-retry-seconds=3600",
        ]
    )
    assert settings.default_notify_url == "https://hooks.example.com/all"
    assert settings.extra_notify_hosts == {"127.0.0.1:9000", "receiver.local"}
    assert settings.notify_denied_networks == (
        ipaddress.ip_network("100.64.0.0/10"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert (settings.notify_concurrency, settings.notify_max_retry_seconds) == (4, 3600.0)
    key = default_signing_key(settings)
    assert key is not None and key.secret == KEY


def test_the_defaults_send_nothing_and_bound_the_retries() -> None:
    settings = config.load([])
    assert settings.default_notify_url is None and default_signing_key(settings) is None
    assert settings.notify_concurrency == 16 and settings.notify_max_retry_seconds == 86400


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["--notify-denied-networks=10.0.0.0/33"], "--notify-denied-networks", id="a bad CIDR"),
        pytest.param(["--notify-concurrency=0"], "--notify-concurrency: must be at least 1", id="no slots"),
        pytest.param(["--notify-max-retry-seconds=0"], "--notify-max-retry-seconds: must be positive", id="no window"),
        pytest.param(
            ["--default-notify-url=https://hooks.example.com/x"], "come together", id="a default sink without its key"
        ),
    ],
)
def test_a_bad_flag_stops_the_operator_naming_it(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        config.load(argv)
    assert expected in capsys.readouterr().err


def test_a_bad_default_key_file_is_refused_naming_the_flag_not_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("whsec_not-base64!")
    settings = config.load(
        ["--default-notify-url=https://hooks.example.com/x", f"--default-notify-signing-key-file={key_file}"]
    )
    with pytest.raises(SigningKeyError, match="--default-notify-signing-key-file") as refused:
        default_signing_key(settings)
    assert "not-base64" not in str(refused.value)
    missing = config.load(
        ["--default-notify-url=https://h.example.com/x", f"--default-notify-signing-key-file={tmp_path}/no"]
    )
    with pytest.raises(SigningKeyError, match="cannot read it"):
        default_signing_key(missing)
