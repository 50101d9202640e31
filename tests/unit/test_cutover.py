"""The Copr flow's decisions, without daemons: which volumes move, what collides, what a
killed run's in-flight request is given, what happens when the old minion is gone.

(End to end on both clouds: tests/integration/test_copr.py and test_copr_faults.py.)
"""

import pytest

from vmopslib import cutover
from vmopslib.errors import InvalidInput


def vol(vid, name, device, root=False, multiattach=False, tags=None):
    return {
        "volume_id": vid,
        "name": name,
        "device": device,
        "size": 10,
        "root": root,
        "multiattach": multiattach,
        "tags": tags or {},
    }


class Cloud:
    name = "fake"

    def __init__(self, vols=(), named=()):
        self.vols, self.named = list(vols), set(named)
        self.states = []  # what volume_settle answers, in turn

    def volumes(self, server_id):  # pylint: disable=unused-argument
        return self.vols

    def servers_named(self, name, brief=False):
        return [{"id": "x-" + name}] if name in self.named else []

    def volume_settle(self, vid, timeout):  # pylint: disable=unused-argument
        return {"attachments": [{"server_id": s} for s in self.states.pop(0)]}


class Keys:
    def __init__(self, present=()):
        self.present = set(present)

    def status(self, minion_id):
        return "accepted" if minion_id in self.present else None


class Journal:
    def __init__(self):
        self.saved = 0

    def save(self, record):  # pylint: disable=unused-argument
        self.saved += 1


class Minion:
    def __init__(self, answers=True):
        self.answer, self.calls = answers, []

    def answers(self, minion_id, timeout):  # pylint: disable=unused-argument
        return self.answer

    def call(self, *args):
        self.calls.append(args)
        return {}


class Rep(cutover.CutoverMixin):
    def __init__(self, cloud=None, keys=None, minion=None):
        self.provider = cloud or Cloud()
        self.keys = keys or Keys()
        self.minion = minion or Minion()
        self.journal = Journal()
        self.heard = []
        self.events = lambda tag, message, **data: self.heard.append((tag, message))


OLD = {"id": "old", "name": "copr-fe"}
VOLS = [
    vol("v0", "root", "/dev/vda", root=True),
    vol("v1", "copr-data", "/dev/vdb", tags={"role": "data"}),
    vol("v2", "copr-cache", "/dev/vdc"),
]


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, "none"),
        ("none", "none"),
        ("move", "move"),
        ("a, b", ["a", "b"]),
        (["a"], ["a"]),
        ({"tag": {"role": "data"}}, {"tag": {"role": "data"}}),
    ],
)
def test_data_volumes_choices(given, expected):
    assert cutover.check_data_volumes(given) == expected


@pytest.mark.parametrize("bad", [42, {"tags": {}}, {"tag": {}}, [1, 2], {"tag": "x"}])
def test_a_bad_data_volumes_choice_is_refused_before_anything(bad):
    with pytest.raises(InvalidInput, match="data_volumes must be"):
        cutover.check_data_volumes(bad)


def test_move_takes_every_data_volume_never_the_root_and_the_plan_lists_each():
    rep = Rep(Cloud(VOLS))
    listing, moves = rep._plan_volumes(OLD, "move")
    assert [m["volume_id"] for m in moves] == ["v1", "v2"]
    assert [v["volume_id"] for v in listing] == ["v1", "v2"]
    assert all("moves" in v["action"] for v in listing)


def test_a_list_or_a_tag_picks_some_the_rest_stays_with_the_old_server():
    rep = Rep(Cloud(VOLS))
    listing, moves = rep._plan_volumes(OLD, ["copr-cache"])
    assert [m["volume_id"] for m in moves] == ["v2"]
    assert {v["volume_id"]: v["action"] for v in listing}["v1"] == "stays with the old server"
    _, moves = rep._plan_volumes(OLD, {"tag": {"role": "data"}})
    assert [m["volume_id"] for m in moves] == ["v1"]


def test_an_unknown_volume_or_the_root_named_is_refused():
    rep = Rep(Cloud(VOLS))
    with pytest.raises(InvalidInput, match="nope is not attached to copr-fe"):
        rep._plan_volumes(OLD, ["copr-data", "nope"])
    with pytest.raises(InvalidInput, match="root is the root disk of copr-fe"):
        rep._plan_volumes(OLD, ["root"])


def test_a_multi_attach_volume_is_refused():
    rep = Rep(Cloud([vol("v9", "shared", "/dev/vdd", multiattach=True)]))
    with pytest.raises(InvalidInput, match="shared is multi-attach"):
        rep._plan_volumes(OLD, "move")


def test_names_and_ids_that_would_collide_are_refused():
    with pytest.raises(InvalidInput, match="a server named copr-fe-new exists"):
        Rep(Cloud(named={"copr-fe-new"}))._plan_naming("copr-fe", "suffix", False)
    with pytest.raises(InvalidInput, match="a key for copr-fe-old exists"):
        Rep(keys=Keys({"copr-fe-old"}))._plan_naming("copr-fe", "same", True)
    Rep(Cloud(named={"copr-fe-new"}))._plan_naming("copr-fe", "same", False)  # no suffix


def test_a_detach_a_killed_run_sent_is_awaited_not_sent_again(monkeypatch):
    monkeypatch.setattr(cutover.time, "sleep", lambda s: None)
    cloud = Cloud()
    cloud.states = [["old"], ["old"], []]  # still on the old server twice, then free
    rep = Rep(cloud)
    now = cutover.time.time()
    assert rep._volume_servers("v1", "detaching", now, "old", "new", 10) == []
    assert cloud.states == []


def test_a_request_that_never_arrived_is_sent_again_after_the_grace():
    cloud = Cloud()
    cloud.states = [["old"]]
    rep = Rep(cloud)
    long_ago = cutover.time.time() - rep.inflight_grace - 1
    assert rep._volume_servers("v1", "detaching", long_ago, "old", "new", 10) == ["old"]


def test_an_old_minion_that_does_not_answer_is_left_and_the_report_says_so():
    minion = Minion(answers=False)
    rep = Rep(minion=minion)
    record = {"vm": "copr-fe"}
    said = rep._move_old_minion(record, 5)
    assert "does not answer" in said and record["old_minion"]["unreachable"]
    assert minion.calls == []  # nothing was asked of it
    assert rep._move_old_minion(record, 5) == said  # idempotent
    assert any(tag.endswith("/old_minion") for tag, _ in rep.heard)
