"""Fixtures shared by every tier: where things live, and the local cloud.

Everything stays on 127.0.0.1 and under VMOPS_HOME (default /var/tmp/vmops);
fixtures start what they need, reuse what already runs, and stop only the
processes they started.
"""

import logging
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
HARNESS = REPO / "tests" / "harness"
VMOPS_HOME = pathlib.Path(os.environ.get("VMOPS_HOME", "/var/tmp/vmops"))
CLOUDS_YAML = VMOPS_HOME / "cloud" / "clouds.yaml"

sys.path.insert(0, str(REPO / "_utils"))

TIMINGS = {}


def record(key, seconds):
    TIMINGS[key] = round(seconds, 2)


@pytest.fixture(autouse=True)
def _fresh_cloud_sessions():
    """Each test makes its own cloud sessions (the pack reuses one per thread and profile
    across a run's steps): a mocked connection never leaks into the next test."""
    from vmopslib import provider  # pylint: disable=import-outside-toplevel

    provider.forget_sessions()
    yield
    provider.forget_sessions()


def _cloud_answers():
    try:
        urllib.request.urlopen("http://127.0.0.1:5000/v3", timeout=2).read()  # noqa: S310
        return CLOUDS_YAML.exists()
    except OSError:
        return False


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def local_cloud():
    """The local OpenStack: reused when it answers, else started by tests/harness/cloud.sh."""
    if not _cloud_answers():
        t0 = time.monotonic()
        subprocess.run(["bash", str(HARNESS / "cloud.sh"), "up"], check=True)
        record("local cloud start", time.monotonic() - t0)
    else:
        # make sure the computes run the current test hypervisor
        subprocess.run(
            ["bash", str(HARNESS / "cloud.sh"), "up"], check=True, stdout=subprocess.DEVNULL
        )
    return {"clouds_yaml": str(CLOUDS_YAML), "cloud": "local-admin"}


@pytest.fixture(scope="session")
def os_conn(local_cloud):
    from vmopslib import openstack as vos  # pylint: disable=import-outside-toplevel

    return vos.connect(
        {
            "name": "local",
            "cloud": local_cloud["cloud"],
            "client_config_file": local_cloud["clouds_yaml"],
        }
    )


FAULTY_SERVICES = ("compute", "network", "image", "placement", "block-storage")


@pytest.fixture(scope="session")
def fault_proxy(local_cloud, os_conn, tmp_path_factory):
    """The fault injector (tests/harness/faultproxy.py) in front of every API of the local
    cloud, on 127.0.0.1; ``fault_proxy.clouds_yaml`` holds the cloud ``faulty`` that goes
    through it.  Tests inject faults and clear them; nothing else uses it."""
    import yaml  # pylint: disable=import-outside-toplevel

    sys.path.insert(0, str(HARNESS))
    import faultproxy  # pylint: disable=import-outside-toplevel,import-error

    with open(local_cloud["clouds_yaml"], encoding="utf-8") as fh:
        base = yaml.safe_load(fh)["clouds"][local_cloud["cloud"]]
    upstreams = {"identity": base["auth"]["auth_url"]}
    for service in FAULTY_SERVICES:
        upstreams[service] = os_conn.endpoint_for(service)
    proxy = faultproxy.FaultProxy(upstreams).start()
    path = tmp_path_factory.mktemp("faulty") / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": {"faulty": proxy.clouds_profile(base)}}))
    proxy.clouds_yaml = str(path)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def moto_cloud():
    """moto in server mode on 127.0.0.1, with the test hypervisor for its instances."""
    from tests.harness.ec2_hypervisor import MotoCloud  # pylint: disable=import-outside-toplevel

    with MotoCloud(str(VMOPS_HOME / "vms"), str(VMOPS_HOME / "bin" / "salt-minion")) as cloud:
        yield cloud


@pytest.fixture(scope="session")
def ec2_image(moto_cloud):
    images = moto_cloud.client().describe_images(
        Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}]
    )["Images"]
    return images[0]["ImageId"]


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("vmops timings (s)")
        for key, value in TIMINGS.items():
            terminalreporter.write_line("%-60s %s" % (key, value))


def pytest_unconfigure(config):  # pylint: disable=unused-argument
    # salt's deferred log handler flushes into pytest's closed capture stream at exit
    logging.raiseExceptions = False
