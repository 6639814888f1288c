"""Who may call the server, without a server: the bearer check, the key masked in a recorded command line (every
spelling argparse takes), the key from the environment, kept out of the config's repr, and the warning for a server
listening beyond loopback without a key (the real server: ``test_server.py``)."""
import pytest

from kangaroo_dvi.serve import auth
from kangaroo_dvi.serve.config import parse_serve_args

KEY = "sk-abc123"


def test_only_the_bearer_key_is_authorized():
    assert auth.authorized(b"Bearer sk-abc123", KEY) and auth.authorized(b"bearer  sk-abc123 ", KEY)
    for header in (None, b"", b"sk-abc123", b"Basic sk-abc123", b"Bearer sk-abc12", b"Bearer sk-abc1234",
                   b"Bearer \xff"):
        assert not auth.authorized(header, KEY), header
    assert auth.authorized("Bearer ключ".encode(), "ключ") and not auth.authorized(b"Bearer ????", "ключ")
    e = auth.unauthorized()
    assert e.status == 401 and e.body()["error"]["code"] == "invalid_api_key" and KEY not in e.message


@pytest.mark.parametrize("argv", [["--api-key", KEY], [f"--api-key={KEY}"], ["--api-k", KEY], ["--api", KEY],
                                  [f"--api={KEY}"], ["--port", "1", KEY]])
def test_the_key_is_masked_in_a_recorded_command_line(argv):
    out = auth.redact(["--model-id", "m", *argv, "--max-batch", "2"], KEY)
    assert KEY not in " ".join(out) and auth.MASK in " ".join(out)
    assert out[:2] == ["--model-id", "m"] and out[-2:] == ["--max-batch", "2"]


def test_the_key_from_the_flag_or_the_environment_and_never_in_the_repr(tmp_path, monkeypatch):
    flags = ["--model-id", "m", "--state-dir", str(tmp_path)]
    monkeypatch.delenv(auth.ENV, raising=False)
    assert parse_serve_args(flags)[1].api_key == ""
    monkeypatch.setenv(auth.ENV, "sk-env")
    cfg = parse_serve_args(flags)[1]
    assert cfg.api_key == "sk-env" and "sk-env" not in repr(cfg)
    assert parse_serve_args([*flags, "--api-key", KEY])[1].api_key == KEY  # the flag first


def test_a_warning_when_listening_beyond_loopback_without_a_key():
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert "without an API key" in auth.exposure_warning(host, "")
        assert auth.exposure_warning(host, KEY) is None
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert auth.exposure_warning(host, "") is None
