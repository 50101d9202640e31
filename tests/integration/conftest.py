"""Real salt-master (pytest-salt-factories) + the local OpenStack + moto, all on 127.0.0.1.

The master's state tree is the repo (so ``orch/``, ``reactor/`` and the
``_modules``/``_runners``/``_states`` the pack ships are found) plus a small test
tree with a top file.  The pack is loaded the way users load it: synced from
the state tree with ``salt-run saltutil.sync_all``.  The harness never accepts
a minion key: the pack's own logic must.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from pytestshellutils.utils import ports

from tests.conftest import HARNESS, REPO, record

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
def vmops_config(local_cloud, moto_cloud, ec2_image, master_ports, fault_proxy):
    return {
        "default_cloud": "local",
        "clouds": {
            "local": {
                "driver": "openstack",
                "cloud": local_cloud["cloud"],
                "client_config_file": local_cloud["clouds_yaml"],
            },
            # the same cloud through the fault injector (tests that inject faults use it)
            "faulty": {
                "driver": "openstack",
                "cloud": "faulty",
                "client_config_file": fault_proxy.clouds_yaml,
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


def background(salt_run_cli, *args):
    """``salt-run <args>`` started in a session of its own (a test kills it mid-way)."""
    return subprocess.Popen(  # noqa: S603
        salt_run_cli.cmdline(*args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(salt_run_cli.environ),
    )


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


@pytest.fixture(scope="module")
def compute_minions(salt_master, salt_cli, synced, os_conn, tmp_path_factory):
    """A salt-minion per compute host (id = the host's name), as a real compute host has;
    its key accepted the way an operator did when the host was installed.  Its
    ``system.reboot`` is emulated (tests/harness/compute_modules): the minion and the host's
    nova-compute go away, come back after a pause, with a new boot id."""
    import salt.crypt  # pylint: disable=import-outside-toplevel

    hosts = sorted(s.host for s in os_conn.compute.services(binary="nova-compute"))
    boot_dir = tmp_path_factory.mktemp("boot-ids")
    started = []
    try:
        for host in hosts:
            boot_id = boot_dir / host
            boot_id.write_text(str(uuid.uuid4()) + "\n")
            overrides = {
                "module_dirs": [str(HARNESS / "compute_modules")],
                "vmops": {"boot_id_file": str(boot_id)},
                "vmops_test_reboot": {
                    "python": sys.executable,
                    "helper": str(HARNESS / "hostreboot.py"),
                    "cloud_sh": str(HARNESS / "cloud.sh"),
                    "salt_minion": os.path.join(os.path.dirname(sys.executable), "salt-minion"),
                    "delay": 3,
                },
            }
            factory = salt_master.salt_minion_daemon(host, overrides=overrides)
            pki = factory.config["pki_dir"]
            os.makedirs(pki, exist_ok=True)
            if not os.path.exists(os.path.join(pki, "minion.pub")):
                salt.crypt.write_keys(pki, "minion", 2048)
            with open(os.path.join(pki, "minion.pub"), encoding="utf-8") as src:
                pub = src.read()
            accepted = os.path.join(salt_master.config["pki_dir"], "minions", host)
            with open(accepted, "w", encoding="utf-8") as dst:
                dst.write(pub)
            factory.start()
            started.append(factory)
        for host in hosts:
            ret = salt_cli.run("saltutil.sync_all", minion_tgt=host)
            assert ret.returncode == 0, ret
        yield {f.id: f for f in started}
    finally:
        for factory in started:
            factory.terminate()
            _stop_restarted(factory)
        for host in hosts:
            # a host left "powered off" by a test gets its nova-compute back
            subprocess.run(["bash", str(HARNESS / "cloud.sh"), "compute-start", host], check=False)
            try:
                os.unlink(os.path.join(salt_master.config["pki_dir"], "minions", host))
            except FileNotFoundError:
                pass


def _stop_restarted(factory):
    """The minion an emulated reboot started again (its PID in restarted.pid): stopped by PID."""
    path = os.path.join(os.path.dirname(factory.config["conf_file"]), "restarted.pid")
    try:
        with open(path, encoding="utf-8") as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os.unlink(path)
                return
            time.sleep(0.2)


@pytest.fixture
def os_volumes(os_conn):
    """Two Cinder data volumes attached to a server; deleted afterwards."""
    made = []

    def _make(server_id, count=2):
        for i in range(count):
            vol = os_conn.block_storage.create_volume(
                size=1, name="copr-data-%d-%s" % (i, uuid.uuid4().hex[:4])
            )
            os_conn.block_storage.wait_for_status(vol, "available", wait=120)
            made.append(vol.id)
            os_conn.compute.create_volume_attachment(server_id, volume_id=vol.id)
            wait_until(
                lambda v=vol.id: os_conn.block_storage.get_volume(v).status == "in-use",
                120,
                what="volume %s in use" % vol.id,
            )
        return [os_conn.block_storage.get_volume(v) for v in made]

    yield _make
    for vid in made:
        try:
            for att in os_conn.block_storage.get_volume(vid).attachments or []:
                os_conn.compute.delete_volume_attachment(att["server_id"], vid)
            wait_until(
                lambda v=vid: os_conn.block_storage.get_volume(v).status in ("available", "error"),
                120,
                what="volume %s free" % vid,
            )
            os_conn.block_storage.delete_volume(vid, ignore_missing=True)
        except Exception:  # pylint: disable=broad-except
            pass


@pytest.fixture
def faults(fault_proxy):
    """The fault injector, with no fault and a fresh request log before and after."""
    fault_proxy.clear()
    yield fault_proxy
    fault_proxy.clear()
