"""The test world's compute hosts: ``system.reboot`` emulated (their minions only).

A real ``system.reboot`` would take the whole test machine down.  Here a detached helper
(tests/harness/hostreboot.py) does what a reboot does to a compute host: the minion
stops, nova-compute stops, a pause, a new boot id, nova-compute starts, the minion starts
and reconnects.  Configured by the minion option ``vmops_test_reboot``
(helper, cloud_sh, python, delay), set by the compute_minions fixture.
"""

import os
import subprocess

__virtualname__ = "system"


def __virtual__():
    if __opts__.get("vmops_test_reboot"):
        return __virtualname__
    return (False, "not a test-world compute host")


def reboot(at_time=None, only_on_pending_reboot=False):  # pylint: disable=unused-argument
    conf = __opts__["vmops_test_reboot"]
    cmd = [
        conf["python"],
        conf["helper"],
        "--host",
        __opts__["id"],
        "--pid",
        str(os.getppid()),  # this job's parent: the minion's main process
        "--run-dir",
        os.path.join(__opts__["root_dir"], os.path.dirname(__opts__["pidfile"])),
        "--config-dir",
        os.path.dirname(__opts__["conf_file"]),
        "--boot-id-file",
        __opts__["vmops"]["boot_id_file"],
        "--cloud-sh",
        conf["cloud_sh"],
        "--salt-minion",
        conf["salt_minion"],
        "--delay",
        str(conf.get("delay", 3)),
    ]
    log = open(os.path.join(os.path.dirname(__opts__["conf_file"]), "reboot.log"), "ab")  # noqa: SIM115
    subprocess.Popen(  # pylint: disable=consider-using-with
        cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
    )
    return True
