"""The pack installed with pip: Salt loads it through the ``salt.loader`` entry point.

A wheel of this repository is installed into a private directory, and a second
salt-master whose state tree does NOT hold the pack (nothing to sync) gets that
directory on its PYTHONPATH, as if the pack were pip-installed into Salt's Python.
"""

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def installed_pack(tmp_path_factory):
    wheels = tmp_path_factory.mktemp("wheel")
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True,
    )
    wheel = next(wheels.glob("saltext_vmops-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    return target


@pytest.fixture(scope="module")
def pip_master(salt_factories, installed_pack, vmops_config, tmp_path_factory):
    empty_tree = tmp_path_factory.mktemp("tree")
    factory = salt_factories.salt_master_daemon(
        "pip-master",
        overrides={
            "interface": "127.0.0.1",
            "file_roots": {"base": [str(empty_tree)]},
            "vmops": vmops_config,
        },
        on_auth_event_callback=lambda *_: None,
    )
    # a dict of its own: salt-factories shares one environ dict between factories
    factory.environ = dict(factory.environ, PYTHONPATH=str(installed_pack))
    with factory.started():
        yield factory


def test_entry_point_loads_the_runner_without_a_sync(pip_master, installed_pack):
    cli = pip_master.salt_run_cli(timeout=120)
    cli.environ = dict(cli.environ, PYTHONPATH=str(installed_pack))
    # nothing was synced: the extension modules dir has no vmops
    ret = cli.run("saltutil.sync_runners")
    assert ret.returncode == 0
    assert ret.data == [], ret.data
    docs = cli.run("-d", "vmops.flip_floating_ip")
    assert docs.returncode == 0, docs
    assert "CLI Example" in docs.stdout
    ret = cli.run("vmops.show", "no-such-vm")
    assert ret.returncode != 0
    assert ret.data["result"] is False
    assert "no server named 'no-such-vm'" in ret.data["comment"]
