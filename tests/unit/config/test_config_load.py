"""Loading: file errors, TOML syntax errors, and reporting every problem at once."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from expressgateway.config import ConfigError, Problem, load_config, parse_config
from tests.unit.config.helpers import H1


def test_missing_config_file_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config file: No such file or directory"
    assert info.value.source == str(path)


def test_directory_as_config_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "cannot read config file" in str(info.value)


def test_non_utf8_config_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_bytes(b"# caf\xe9\n[[listeners]]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not UTF-8 (invalid byte at offset 5)"


def test_toml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[[listeners]]\naddress = "127.0.0.1:80"\nprotocol = h1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.key == str(path)
    assert problem.reason == "invalid TOML at line 3, column 12: Invalid value"


def test_duplicate_toml_key_is_a_syntax_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[runtime]\nworkers = 1\nworkers = 2\n")
    assert str(info.value).startswith("<string>: invalid TOML at line 3")


def test_every_problem_is_reported_at_once() -> None:
    text = """
[[listeners]]
address = "::1:80"
protocol = "h2"

[[listeners.backends]]
address = "127.0.0.1:3000"
wieght = 2

[[listeners]]
address = "127.0.0.1:81"
protocol = "h1"
drain_timeout_ms = 50

[listeners.grpc]

[runtime]
xdp_enabled = true
workers = "4"

[pool]
per_peer_max = 1000
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert [p.key for p in info.value.problems] == [
        "listeners[0].address",
        "listeners[0].protocol",
        "listeners[0].backends[0].wieght",
        "listeners[1].drain_timeout_ms",
        "runtime.workers",
        "listeners[1].grpc",
        "runtime.xdp_interface",
        "pool.per_peer_max",
    ]


def test_error_string_is_one_line_per_problem() -> None:
    text = H1 + "wieght = 3\nprotocol = 7\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert str(info.value).splitlines() == [
        "listeners[0].backends[0].wieght = 3: unknown key (did you mean 'weight'?)",
        'listeners[0].backends[0].protocol = 7: expected string, got integer (quote it: "7")',
    ]


def test_problem_renders_value_as_toml() -> None:
    assert str(Problem("a.b", "x", "bad")) == 'a.b = "x": bad'
    assert str(Problem("a.b", True, "bad")) == "a.b = true: bad"
    assert str(Problem("a.b", [1, "x"], "bad", "fix it")) == 'a.b = [1, "x"]: bad (fix it)'
    assert str(Problem("a.b", None, "missing required key")) == "a.b: missing required key"


def test_problem_truncates_long_values() -> None:
    text = str(Problem("k", "x" * 500, "too long"))
    assert len(text) < 120
    assert text.endswith("...: too long")


def test_config_error_is_an_exception_carrying_problems() -> None:
    err = ConfigError([Problem("a", 1, "r")], source="gw.toml")
    assert isinstance(err, Exception)
    assert err.problems == [Problem("a", 1, "r")]
    assert err.source == "gw.toml"
    assert str(err) == "a = 1: r"


def test_valid_config_records_written_keys() -> None:
    cfg = parse_config(H1 + "weight = 2\n")
    assert "listeners[0].backends[0].weight" in cfg.explicit_keys
    assert "listeners[0].backends[0].protocol" not in cfg.explicit_keys


def test_config_error_survives_pickling_with_its_problems() -> None:
    err = ConfigError([Problem("a.b", 3, "bad", "hint")], source="/etc/gw.toml")
    copy = pickle.loads(pickle.dumps(err))
    assert copy.problems == err.problems
    assert copy.source == "/etc/gw.toml"
    assert str(copy) == str(err)


def test_loaded_config_survives_pickling() -> None:
    cfg = parse_config(H1)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
