"""The config loader: defaults, environment overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from headend.config import Config, ConfigError, env_var_name, load_config
from headend.meters.secrets import SecretsError

REPO = Path(__file__).resolve().parents[1]
KEY_HEX = "11" * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "headend.toml"
    path.write_text(text)
    return path


def test_empty_file_gives_every_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), {})
    assert config.database.url == "sqlite+aiosqlite:///headend.db"
    assert config.mqtt.host is None and config.mqtt.embedded
    assert config.mqtt.port == 1883
    assert config.mqtt.client_id == "headend-1"
    assert (config.mqtt.billing_prefix, config.mqtt.headend_prefix) == ("billing", "headend")
    assert config.mqtt.tls.active is False
    assert config.polling.interval_s == 900
    assert config.polling.concurrency == 1000
    assert config.polling.obis == (
        "1.0.1.8.0.255",
        "1.0.2.8.0.255",
        "1.0.32.7.0.255",
        "0.0.96.3.10.255",
    )
    assert config.relay.overdue_after_s == 1800
    assert config.relay.retry_max_backoff_s == 300
    assert config.notifications.warning_threshold == Decimal("20.00")
    assert config.logging.level == "INFO"
    assert config.source == tmp_path / "headend.toml"
    # No file at all runs the same.
    assert load_config(None, {}) == config


def test_example_config_loads_and_matches_design(tmp_path: Path) -> None:
    config = load_config(REPO / "config" / "headend.example.toml", {})
    assert config.mqtt.host == "127.0.0.1"
    assert config.polling.timeout_s == 10
    assert config.notifications.warning_threshold == Decimal("20.00")


def test_file_values_are_typed(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [database]
            url = "postgresql+asyncpg://headend@db.example/headend"
            [mqtt]
            host = "broker.example"
            port = 8883
            username = "he"
            password = "pw-in-file"
            [mqtt.tls]
            insecure = true
            enabled = true
            [polling]
            interval_s = 60
            obis = ["1-0:1.8.0*255", "0.0.96.3.10.255"]
            load_profile = false
            [notifications]
            warning_threshold = 15.5
            [logging]
            level = "debug"
            """,
        ),
        {},
    )
    assert config.database.dialect == "postgresql"
    assert config.mqtt.port == 8883 and config.mqtt.tls.insecure and config.mqtt.tls.active
    assert config.mqtt.password is not None and config.mqtt.password.reveal() == "pw-in-file"
    assert config.polling.interval_s == 60.0 and isinstance(config.polling.interval_s, float)
    assert config.polling.obis == ("1.0.1.8.0.255", "0.0.96.3.10.255")  # canonical spelling
    assert config.polling.load_profile is False
    assert config.notifications.warning_threshold == Decimal("15.5")
    assert config.logging.level == "DEBUG"


def test_environment_overrides_the_file_with_typed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "[polling]\ninterval_s = 60\nconcurrency = 5\n")
    config = load_config(
        path,
        {
            "HEADEND_POLLING_INTERVAL_S": "120.5",
            "HEADEND_POLLING_CONCURRENCY": "42",
            "HEADEND_POLLING_OBIS": "1.0.1.8.0.255, 1.0.2.8.0.255",
            "HEADEND_POLLING_LOAD_PROFILE": "no",
            "HEADEND_MQTT_HOST": "mqtt.example",
            "HEADEND_MQTT_USERNAME": "svc",
            "HEADEND_MQTT_PASSWORD": "s3cret",
            "HEADEND_MQTT_TLS_INSECURE": "true",
            "HEADEND_NOTIFICATIONS_WARNING_THRESHOLD": "7.25",
            "HEADEND_DATABASE_URL": "sqlite+aiosqlite:///other.db",
            "HEADEND_TEST_POSTGRES_URL": "ignored: not a config section",
        },
    )
    assert config.polling.interval_s == 120.5
    assert config.polling.concurrency == 42
    assert config.polling.obis == ("1.0.1.8.0.255", "1.0.2.8.0.255")
    assert config.polling.load_profile is False
    assert config.mqtt.host == "mqtt.example"
    assert config.mqtt.tls.insecure is True
    assert config.notifications.warning_threshold == Decimal("7.25")
    assert config.database.url == "sqlite+aiosqlite:///other.db"
    # Lists may also be JSON; an empty host means the embedded broker.
    config = load_config(
        None, {"HEADEND_POLLING_OBIS": '["0.0.96.3.10.255"]', "HEADEND_MQTT_HOST": ""}
    )
    assert config.polling.obis == ("0.0.96.3.10.255",)
    assert config.mqtt.embedded


def test_env_var_names() -> None:
    assert env_var_name("polling.interval_s") == "HEADEND_POLLING_INTERVAL_S"
    assert env_var_name("mqtt.tls.ca_file") == "HEADEND_MQTT_TLS_CA_FILE"


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        ("[polling]\ninterval_s = -5", "polling.interval_s", "must be > 0, got -5"),
        ("[polling]\ninterval_s = 'often'", "polling.interval_s", "must be a number"),
        ("[polling]\nconcurrency = 0", "polling.concurrency", "must be >= 1"),
        ("[polling]\nconcurrency = 2.5", "polling.concurrency", "must be an integer"),
        ("[polling]\nobis = ['1.0.1.8.0.255', 'x']", "polling.obis[1]", "not an OBIS code"),
        ("[polling]\nobis = []", "polling.obis", "at least one"),
        ("[polling]\nload_profile = 1", "polling.load_profile", "true or false"),
        ("[mqtt]\nport = 70000", "mqtt.port", "between 1 and 65535"),
        ("[mqtt]\nheadend_prefix = 'a/#'", "mqtt.headend_prefix", "must not contain"),
        ("[mqtt]\nbilling_prefix = '/billing'", "mqtt.billing_prefix", "topic prefix"),
        ("[mqtt.tls]\nca_file = '/nonexistent/ca.pem'", "mqtt.tls.ca_file", "file not found"),
        ("[mqtt]\npassword = 'x'", "mqtt.password", "username"),
        ("[database]\nurl = 'mysql://x/y'", "database.url", "sqlite+aiosqlite"),
        ("[database]\nurl = 'sqlite:///plain.db'", "database.url", "scheme must be"),
        ("[database]\nurl = 'postgresql+asyncpg://h'", "database.url", "database name"),
        ("[relay]\nretry_base_s = 500", "relay.retry_base_s", "must not exceed"),
        ("[relay]\noverdue_after_s = 0", "relay.overdue_after_s", "must be > 0"),
        (
            "[notifications]\nwarning_threshold = 'twenty'",
            "notifications.warning_threshold",
            "decimal",
        ),
        ("[notifications]\nwarning_threshold = '-1'", "notifications.warning_threshold", ">= 0"),
        ("[logging]\nlevel = 'LOUD'", "logging.level", "must be one of"),
        ("[security]\nmaster_key = 'x'", "security.master_key", "HEADEND_MASTER_KEY"),
        (
            "[security]\nmaster_key_file = '/nonexistent/key'",
            "security.master_key_file",
            "not found",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, toml), {})
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert fragment in str(caught.value)


def test_message_example_from_the_brief(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^polling\.interval_s: must be > 0, got -5$"):
        load_config(write(tmp_path, "[polling]\ninterval_s = -5\n"), {})


def test_bad_environment_value_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"HEADEND_POLLING_TIMEOUT_S": "soon"})
    assert caught.value.key == "polling.timeout_s"
    assert "HEADEND_POLLING_TIMEOUT_S" in str(caught.value)
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.insecure: must be true or false"):
        load_config(None, {"HEADEND_MQTT_TLS_INSECURE": "maybe"})
    with pytest.raises(ConfigError, match=r"^polling\.obis: must be a JSON list"):
        load_config(None, {"HEADEND_POLLING_OBIS": "[1.0.1"})


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[pollin]\ninterval_s = 5", "pollin"),
        ("[polling]\ninterval = 5", "polling.interval"),
        ("[mqtt.tls]\nca = 'x'", "mqtt.tls.ca"),
        ("top_level = 1", "top_level"),
    ],
)
def test_unknown_sections_and_keys_are_refused(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, toml), {})
    assert caught.value.key == key
    assert "unknown" in str(caught.value)


def test_unknown_environment_setting_in_a_known_section_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"HEADEND_POLLING_INTERVAL": "5"})
    assert caught.value.key == "HEADEND_POLLING_INTERVAL"


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[polling\n"), {})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml", {})


def test_secrets_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    config = load_config(
        None,
        {
            "HEADEND_MQTT_USERNAME": "u",
            "HEADEND_MQTT_PASSWORD": "hunter2-password",
            "HEADEND_MASTER_KEY": KEY_HEX,
        },
    )
    assert config.mqtt.password is not None
    assert str(config.mqtt.password) == "***" and f"{config.mqtt.password}" == "***"
    text = repr(config) + str(config) + repr(config.mqtt) + repr(config.security)
    text += repr(dataclasses.asdict(config))  # asdict deep-copies: the Secret stays a Secret
    assert "hunter2" not in text and KEY_HEX not in text
    # A malformed master key is refused without echoing it.
    bad = "zz" * 32
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"HEADEND_MASTER_KEY": bad})
    assert caught.value.key == "HEADEND_MASTER_KEY"
    assert bad not in str(caught.value)


DB_SECRET = "s3cret-Pw"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+asyncpg://headend:{DB_SECRET}@db.example:port/headend",  # port not a number
        f"://headend:{DB_SECRET}@db.example/headend",  # no scheme
        f"postgresql+asyncpg://headend:{DB_SECRET}@x@db.example:port/headend",  # '@' in it
        f"mysql://headend:{DB_SECRET}@db.example/headend",
        f"postgresql+asyncpg://headend:{DB_SECRET}@db.example",  # no database name
    ],
)
def test_database_password_is_masked_in_every_message(tmp_path: Path, url: str) -> None:
    for path, environ in (
        (write(tmp_path, f"[database]\nurl = '{url}'\n"), {}),
        (write(tmp_path, f"[database]\nurl = ['{url}']\n"), {}),  # not a string: echoed
        (None, {"HEADEND_DATABASE_URL": url}),
    ):
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ)
        assert caught.value.key == "database.url"
        assert DB_SECRET not in str(caught.value) and DB_SECRET not in caught.value.message
        if "headend:" in str(caught.value):  # where the URL is shown, it is shown masked
            assert "headend:***@" in str(caught.value)


def test_database_password_stays_out_of_repr() -> None:
    url = f"postgresql+asyncpg://headend:{DB_SECRET}@db.example/headend"
    config = load_config(None, {"HEADEND_DATABASE_URL": url})
    assert config.database.url == url  # the real one, for the engine
    assert config.database.display_url == "postgresql+asyncpg://headend:***@db.example/headend"
    assert DB_SECRET not in repr(config) + str(config) + repr(config.database)


def test_mqtt_password_and_master_key_never_echoed(tmp_path: Path) -> None:
    password = "hunter2-Pw"
    cases: list[tuple[str | None, dict[str, str], str]] = [
        (f"[mqtt]\npassword = ['{password}']\n", {}, "mqtt.password"),
        (None, {"HEADEND_MQTT_PASSWORD": password}, "mqtt.password"),  # no username
        (f"[security]\nmaster_key = '{password}'\n", {}, "security.master_key"),
        (None, {"HEADEND_SECURITY_MASTER_KEY": password}, "HEADEND_MASTER_KEY"),
        (None, {"HEADEND_MASTER_KEY": password}, "HEADEND_MASTER_KEY"),
    ]
    for toml, environ, key in cases:
        with pytest.raises(ConfigError) as caught:
            load_config(None if toml is None else write(tmp_path, toml), environ)
        assert caught.value.key == key
        assert password not in str(caught.value)


def test_embedded_broker_listens_on_loopback_unless_configured(tmp_path: Path) -> None:
    assert load_config(None, {}).mqtt.embedded_host == "127.0.0.1"
    config = load_config(write(tmp_path, "[mqtt]\nembedded_host = '0.0.0.0'\n"), {})
    assert config.mqtt.embedded_host == "0.0.0.0"
    assert load_config(None, {"HEADEND_MQTT_EMBEDDED_HOST": "::"}).mqtt.embedded_host == "::"
    with pytest.raises(ConfigError, match=r"^mqtt\.embedded_host: must not be empty"):
        load_config(write(tmp_path, "[mqtt]\nembedded_host = ' '\n"), {})


def test_a_password_without_tls_is_flagged(tmp_path: Path) -> None:
    clear = load_config(None, {"HEADEND_MQTT_USERNAME": "u", "HEADEND_MQTT_PASSWORD": "p"})
    assert clear.mqtt.password_in_clear
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    with_tls = load_config(
        None,
        {
            "HEADEND_MQTT_USERNAME": "u",
            "HEADEND_MQTT_PASSWORD": "p",
            "HEADEND_MQTT_TLS_CA_FILE": str(ca),
        },
    )
    assert not with_tls.mqtt.password_in_clear
    assert not load_config(None, {}).mqtt.password_in_clear  # no password, nothing to warn


def test_master_key_from_environment_file_or_generated(tmp_path: Path) -> None:
    from_env = load_config(None, {"HEADEND_MASTER_KEY": KEY_HEX}).open_master_key(environ={})
    assert from_env.source == "HEADEND_MASTER_KEY"

    key_file = tmp_path / "master.key"
    key_file.write_text(KEY_HEX + "\n")
    key_file.chmod(0o600)
    toml = f"[security]\nmaster_key_file = '{key_file}'\n"
    from_file = load_config(write(tmp_path, toml), {}).open_master_key(environ={})
    assert from_file.fingerprint == from_env.fingerprint  # same key, two sources

    db_url = f"sqlite+aiosqlite:///{tmp_path}/data/headend.db"
    generated = load_config(None, {"HEADEND_DATABASE_URL": db_url}).open_master_key(environ={})
    generated_file = tmp_path / "data" / "headend.db.key"
    assert generated_file.is_file()
    assert generated_file.stat().st_mode & 0o777 == 0o600
    again = load_config(None, {"HEADEND_DATABASE_URL": db_url}).open_master_key(environ={})
    assert again.fingerprint == generated.fingerprint  # generated once, then reused

    pg = load_config(None, {"HEADEND_DATABASE_URL": "postgresql+asyncpg://u@h/db"})
    with pytest.raises(SecretsError, match="HEADEND_MASTER_KEY"):
        pg.open_master_key(environ={})


def test_config_is_immutable() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.polling.interval_s = 1  # type: ignore[misc]
