"""authcache: what is kept between processes, and when it is not reused."""

import json
import os

from vmopslib import authcache


class Auth:
    def __init__(self):
        self.auth_ref = None
        self.fetched = 0

    def get_auth_state(self):
        return json.dumps({"auth_token": "tok", "body": {}}) if self.auth_ref else None

    def set_auth_state(self, data):
        self.auth_ref = None if not data else Ref()

    def get_access(self, session, **kwargs):
        if self.auth_ref is None:
            self.fetched += 1
            self.auth_ref = Ref()
        return self.auth_ref

    def invalidate(self):
        self.auth_ref = None
        return True


class Ref:
    def will_expire_soon(self, seconds):
        return False


class Conn:
    def __init__(self):
        self.session = type("S", (), {})()
        self.session.auth = Auth()
        self.session._discovery_cache = {}
        self.config = type("C", (), {})()
        self.config.config = {"auth": {"auth_url": "http://k", "username": "u", "password": "pw"}}
        self.config.get_region_name = lambda: "RegionOne"


def _disc(url):
    from keystoneauth1 import discover  # pylint: disable=import-outside-toplevel

    disc = discover.Discover.__new__(discover.Discover)
    disc._url, disc._data = url, [{"id": "v2.1"}]  # pylint: disable=protected-access
    return disc


def test_token_and_versions_are_reused_and_stale_versions_fetched_anew(tmp_path, monkeypatch):
    profile = {"name": "local", "token_cache": str(tmp_path / "auth")}
    now = {"t": 1000.0}
    monkeypatch.setattr(authcache.time, "time", lambda: now["t"])
    first = authcache.attach(Conn(), profile)
    first.session._discovery_cache["http://nova"] = _disc("http://nova")
    first.session.auth.get_access(first.session)
    (kept,) = (tmp_path / "auth").iterdir()
    assert oct(os.stat(kept).st_mode & 0o777) == "0o600" and "pw" not in kept.read_text()
    second = authcache.attach(Conn(), profile)
    second.session.auth.get_access(second.session)
    assert second.session.auth.fetched == 0  # the kept token
    assert "http://nova" in second.session._discovery_cache  # the kept versions
    # an hour later the versions are fetched again, and kept with the new time
    now["t"] += authcache.DISCOVERY_TTL + 1
    third = authcache.attach(Conn(), profile)
    assert third.session._discovery_cache == {}
    third.session._discovery_cache["http://nova"] = _disc("http://nova")
    third.session.auth.get_access(third.session)
    assert json.loads(kept.read_text())["discovered_at"] == now["t"]
    # a refused token is forgotten for everyone
    third.session.auth.invalidate()
    assert not kept.exists()
