"""``tsl-exchange rotate-key`` rotates the key actually in use.

The vault reads its key from ``TSL_EXCHANGE_KEY`` first, then from the file named by
``TSL_EXCHANGE_KEY_FILE``, then from ``credentials.key`` in the data directory. Rotating any
other key than the one in use would leave the passwords under the old key while the
administrator believes them re-encrypted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tsl_exchange_plugin.cli import commands as cli
from tsl_exchange_plugin.credentials import KEY_ENV, KEY_FILE_ENV, KEY_FILE_NAME


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch) -> Path:
    """A key file outside the data directory, named by TSL_EXCHANGE_KEY_FILE (before the firm starts)."""
    path = tmp_path / "schluessel" / "exchange.key"
    path.parent.mkdir()
    path.write_bytes(Fernet.generate_key() + b"\n")
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    return path


@pytest.fixture
def env_key(monkeypatch) -> str:
    """The key in TSL_EXCHANGE_KEY (before the firm starts)."""
    key = Fernet.generate_key().decode()
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(KEY_ENV, key)
    return key


def _connection_ok(k, user) -> bool:
    return cli.main(["test-connection", user.email, "--data", str(k.host.root)]) == 0


def test_rotate_key_rewrites_the_file_named_by_the_environment(key_file, kanzlei, capsys):
    k = kanzlei
    alice = k.lawyers[0]
    old_key = key_file.read_bytes().strip()
    before = k.runtime.accounts.load(alice.id).password_token

    assert cli.main(["rotate-key", "--data", str(k.host.root)]) == 0
    out = capsys.readouterr().out
    assert "neu verschlüsselt" in out and str(key_file) in out

    keys = key_file.read_bytes().split()
    assert len(keys) == 2 and keys[1] == old_key and keys[0] != old_key  # new in front, old behind
    assert not (Path(k.runtime.data_dir) / KEY_FILE_NAME).exists()  # no stray key file beside it
    token = k.runtime.accounts.load(alice.id).password_token
    assert token != before
    # Re-encrypted under the NEW key: the new key alone opens it, the old key alone does not.
    assert Fernet(keys[0]).decrypt(token.encode())
    with pytest.raises(Exception):  # noqa: B017 - InvalidToken
        Fernet(old_key).decrypt(token.encode())
    assert _connection_ok(k, alice)
    capsys.readouterr()


def test_rotate_key_with_the_key_in_the_environment_prints_the_new_value_once(
    env_key, kanzlei, capsys, monkeypatch
):
    k = kanzlei
    alice = k.lawyers[0]
    data_key_file = Path(k.runtime.data_dir) / KEY_FILE_NAME
    assert not data_key_file.exists()

    assert cli.main(["rotate-key", "--data", str(k.host.root)]) == 0
    out = capsys.readouterr().out
    assert KEY_ENV in out and "neu starten" in out and "Worker" in out
    values = [line.strip() for line in out.splitlines() if line.strip().endswith("," + env_key)]
    assert len(values) == 1, "the new value of the variable is printed exactly once"
    value = values[0]
    new_key = value.split(",")[0]
    assert new_key != env_key
    assert out.count(new_key) == 1
    assert not data_key_file.exists()  # nothing written that nobody reads

    token = k.runtime.accounts.load(alice.id).password_token
    assert Fernet(new_key.encode()).decrypt(token.encode())
    # The old key alone no longer opens the passwords: the connection test fails with it ...
    assert not _connection_ok(k, alice)
    capsys.readouterr()
    # ... and works once the administrator sets the printed value.
    monkeypatch.setenv(KEY_ENV, value)
    assert _connection_ok(k, alice)
    capsys.readouterr()
