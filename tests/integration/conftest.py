"""Real salt-master (pytest-salt-factories) + the local OpenStack + moto, all on 127.0.0.1.

The master's state tree is the repo (so ``orch/``, ``reactor/`` and the
``_modules``/``_runners``/``_states`` the pack ships are found) plus a small test
tree with a top file.  The pack is loaded the way users load it: synced from
the state tree with ``salt-run saltutil.sync_all``.  The harness never accepts
a minion key: the pack's own logic must.
"""

import os
import time
import uuid

import pytest
import yaml
from pytestshellutils.utils import ports

from tests.conftest import REPO, record

FILES = REPO / "tests" / "integration" / "files"


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    # a short private root: it holds unix sockets (AF_UNIX paths: ~107 bytes)
    return {"root_dir": str(tmp_path_factory.mktemp("sf"))}


@pytest.fixture(scope="session")
def event_listener():
    from saltfactories.plugins.event_listener import EventListener  # pylint: disable=import-outside-toplevel

    listener = EventListener()
    listener.host = "127.0.0.1"
    listener.address = "tcp://%s:%s" % (listener.host, listener.port)
    with listener:
        yield listener


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionstart(session):
    log_server = session.config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = "127.0.0.1"
    yield


def _never_accept(master_factory, event_data):  # pylint: disable=unused-argument
    """salt-factories accepts every pending key unless told otherwise; we tell it otherwise."""


@pytest.fixture(scope="session")
def master_ports():
    return {
        "ret_port": ports.get_unused_localhost_port(),
        "publish_port": ports.get_unused_localhost_port(),
    }


@pytest.fixture(scope="session")
def vmops_config(local_cloud, moto_cloud, ec2_image, master_ports):
    return {
        "default_cloud": "local",
        "clouds": {
            "local": {
                "driver": "openstack",
                "cloud": local_cloud["cloud"],
                "client_config_file": local_cloud["clouds_yaml"],
            },
            "aws": {
                "driver": "ec2",
                "region_name": "us-east-1",
                "endpoint_url": moto_cloud.endpoint_url,
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
                "defaults": {"image": ec2_image, "flavor": "t3.micro", "networks": []},
            },
        },
        "master": {"address": "127.0.0.1", "port": master_ports["ret_port"]},
        "defaults": {
            "image": "fake-image",
            "flavor": "m1.fake",
            "networks": ["private"],
            # a pending minion retries every acceptance_wait_time (default 10 s)
            "minion_config": {
                "acceptance_wait_time": 1,
                "acceptance_wait_time_max": 2,
                "log_level_logfile": "info",
            },
        },
        "vms": {},
    }


@pytest.fixture(scope="session")
def pillar_tree(tmp_path_factory, vmops_config):
    """Pillar: the pack's configuration for every minion (the test VMs hold credentials)."""
    tree = tmp_path_factory.mktemp("pillar")
    (tree / "top.sls").write_text(
        "base:\n  '*':\n    - vmops\n  'it-hsfail-*':\n    - fail_highstate\n"
        "  'it-slowhs-*':\n    - slow_highstate\n"
    )
    (tree / "fail_highstate.sls").write_text("vmops_test_fail_highstate: true\n")
    (tree / "slow_highstate.sls").write_text("vmops_test_slow_highstate: 8\n")
    (tree / "vmops.sls").write_text(yaml.safe_dump({"vmops": vmops_config}))
    return tree


@pytest.fixture(scope="session")
def salt_master(salt_factories, vmops_config, master_ports, pillar_tree):
    overrides = {
        "interface": "127.0.0.1",
        "ret_port": master_ports["ret_port"],
        "publish_port": master_ports["publish_port"],
        "file_roots": {"base": [str(REPO), str(FILES / "state")]},
        "pillar_roots": {"base": [str(pillar_tree)]},
        "timeout": 30,
        # the master rotates its AES key (the cut-off of a handed-over id's old session)
        # in its maintenance loop: every loop_interval seconds (default 60)
        "loop_interval": 2,
        "vmops": vmops_config,
    }
    factory = salt_factories.salt_master_daemon(
        "vmops-master", overrides=overrides, on_auth_event_callback=_never_accept
    )
    t0 = time.monotonic()
    with factory.started():
        record("salt-master start", time.monotonic() - t0)
        yield factory


@pytest.fixture(scope="session")
def salt_run_cli(salt_master):
    return salt_master.salt_run_cli(timeout=600)


@pytest.fixture(scope="session")
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=120)


@pytest.fixture(scope="session")
def salt_key_cli(salt_master):
    return salt_master.salt_key_cli()


@pytest.fixture(scope="session")
def synced(salt_run_cli):
    """The pack, synced from the state tree into the master's extension modules."""
    t0 = time.monotonic()
    ret = salt_run_cli.run("saltutil.sync_all")
    assert ret.returncode == 0, ret
    assert "runners.vmops" in ret.data["runners"], ret.data
    assert "modules.vmops" in ret.data["modules"], ret.data
    assert any(u.startswith("utils.vmopslib") for u in ret.data["utils"]), ret.data
    record("salt-run saltutil.sync_all", time.monotonic() - t0)
    return ret.data


def read_journal(salt_master, kind, key):
    """A journal ("replace", "evacuate") read the way any Salt process reads the master's cache."""
    import salt.cache  # pylint: disable=import-outside-toplevel

    try:
        return salt.cache.factory(salt_master.config).fetch("vmops/" + kind, key) or None
    except Exception:  # pylint: disable=broad-except
        return None  # caught mid-write by a poller: the next poll sees it


def wait_until(probe, timeout, interval=0.5, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


class Keys:
    def __init__(self, cli):
        self.cli = cli

    def listing(self):
        ret = self.cli.run("-L")
        assert ret.returncode == 0, ret
        return ret.data

    def state(self, minion_id):
        data = self.listing()
        for state in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
            if minion_id in data.get(state, []):
                return state
        return None

    def delete(self, minion_id):
        self.cli.run("-d", minion_id, "-y")


@pytest.fixture(scope="session")
def keys(salt_key_cli):
    return Keys(salt_key_cli)


@pytest.fixture
def vm_name():
    """A fresh minion id per test (leftovers of a crashed run never collide)."""
    return "it-%s" % uuid.uuid4().hex[:6]


@pytest.fixture
def cleanup(os_conn, moto_cloud, keys):
    """Servers (OpenStack and EC2) and keys a test registers here are removed afterwards."""
    names = []
    yield names
    if os.environ.get("VMOPS_KEEP"):  # debugging: leave the servers for inspection
        return
    ec2 = moto_cloud.client()
    for name in names:
        for server in os_conn.compute.servers(name="^%s$" % name):
            os_conn.compute.delete_server(server)
        reservations = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])[
            "Reservations"
        ]
        for inst in [i for r in reservations for i in r["Instances"]]:
            ec2.modify_instance_attribute(
                InstanceId=inst["InstanceId"], DisableApiTermination={"Value": False}
            )
            ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
        keys.delete(name)


@pytest.fixture
def vm_minion(synced, salt_run_cli, salt_cli, keys, vm_name, cleanup, event_listener, salt_master):
    """A VM on the local cloud whose minion the pack accepted, with the pack synced to it."""
    del synced  # the master's runners first (a test file run alone has not synced them)
    cleanup.append(vm_name)
    ret = salt_run_cli.run("vmops.create", vm_name)
    assert ret.returncode == 0, ret
    t0 = time.time()
    ret = salt_run_cli.run("vmops.accept_minion", vm_name, "wait=60")
    assert ret.returncode == 0 and ret.data["accepted"], ret
    started = event_listener.wait_for_events(
        [(salt_master.id, "salt/minion/%s/start" % vm_name)], after_time=t0, timeout=60
    )
    assert started.found_all_events
    ret = salt_cli.run("saltutil.sync_all", minion_tgt=vm_name)
    assert ret.returncode == 0, ret
    ret = salt_cli.run("sys.list_functions", "vmops", minion_tgt=vm_name)
    assert "vmops.server_show" in ret.data, ret
    return vm_name


def orch_states(ret):
    """The states of a ``salt-run state.orch`` JSON return."""
    return next(iter(ret.data["data"].values()))


def orch_failures(ret):
    """The steps of an orchestration that did not succeed, with why (for assertion messages)."""
    out = {}
    for key, state in orch_states(ret).items():
        if state.get("result") is not True:
            out[key.split("_|-")[1]] = (
                state.get("comment"),
                (state.get("changes") or {}).get("return"),
            )
    return out


@pytest.fixture
def old_vm(salt_run_cli, salt_cli, event_listener, salt_master, os_conn, cleanup, request):
    """An app VM in service: minion accepted, a floating IP on it."""
    prefix = getattr(request, "param", "it-app")
    name = "%s-%s" % (prefix, uuid.uuid4().hex[:5])
    cleanup.append(name)
    cleanup.append(name + "-old")
    cleanup.append(name + "-failed")
    ret = salt_run_cli.run("vmops.create", name, "level=staging")
    assert ret.returncode == 0, ret
    t0 = time.time()
    ret = salt_run_cli.run("vmops.accept_minion", name, "wait=60")
    assert ret.returncode == 0, ret
    assert event_listener.wait_for_events(
        [(salt_master.id, "salt/minion/%s/start" % name)], after_time=t0, timeout=60
    ).found_all_events
    public = os_conn.network.find_network("public")
    fip = os_conn.network.create_ip(floating_network_id=public.id)
    ret = salt_run_cli.run("vmops.flip_floating_ip", fip.floating_ip_address, name)
    assert ret.returncode == 0, ret
    desc = salt_run_cli.run("vmops.show", name).data
    yield {
        "name": name,
        "id": desc["id"],
        "address": fip.floating_ip_address,
        "fip": fip.id,
        "flavor": desc["flavor"],
    }
    os_conn.network.delete_ip(fip.id, ignore_missing=True)


@pytest.fixture
def nodes_enabled(os_conn):
    yield
    for svc in os_conn.compute.services(binary="nova-compute"):
        if svc.status == "disabled":
            os_conn.compute.enable_service(svc, host=svc.host, binary="nova-compute")


@pytest.fixture
def plain_server(os_conn, cleanup):
    """A server without a minion on a given host."""
    image = os_conn.image.find_image("fake-image")
    flavor = os_conn.compute.find_flavor("m1.fake")
    net = os_conn.network.find_network("private")

    def _boot(name, host="cmp1", metadata=None):
        cleanup.append(name)
        server = os_conn.compute.create_server(
            name=name,
            image_id=image.id,
            flavor_id=flavor.id,
            networks=[{"uuid": net.id}],
            availability_zone="nova:%s" % host,
            metadata=metadata or {},
        )
        return os_conn.compute.wait_for_server(server, wait=120)

    return _boot
