"""The EC2 side of the test hypervisor: moto in server mode whose instances run salt-minions.

``MotoCloud`` starts moto's server on 127.0.0.1 (a free port) in this process
and a watcher thread that polls it: an instance that reaches ``running`` with
cloud-config user-data gets a real salt-minion (``fakevm``), a stopped one
loses its minion process, a terminated one loses its guest.  The console
output moto serves is the guest's (moto's own is a constant), so the minion key
fingerprint shows there as on AWS.
"""

import os
import threading

# moto reads these at import time
os.environ.setdefault("MOTO_ENABLE_AMI_VALIDATION", "true")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

import boto3  # noqa: E402  pylint: disable=wrong-import-position
from moto.core.responses import ActionResult  # noqa: E402  pylint: disable=wrong-import-position
from moto.core.utils import utcnow  # noqa: E402  pylint: disable=wrong-import-position
from moto.ec2.responses import general  # noqa: E402  pylint: disable=wrong-import-position
from moto.ec2.utils import Base64EncodedString  # noqa: E402  pylint: disable=wrong-import-position
from moto.server import ThreadedMotoServer  # noqa: E402  pylint: disable=wrong-import-position

from . import fakevm  # noqa: E402  pylint: disable=wrong-import-position

REGION = "us-east-1"


def _console_output(self):
    instance_id = self._get_param("InstanceId")
    instance = self.ec2_backend.get_instance(instance_id)
    text = fakevm.console(instance.id) or general.SAMPLE_CONSOLE_OUTPUT
    return ActionResult(
        {
            "InstanceId": instance.id,
            "Timestamp": utcnow(),
            "Output": Base64EncodedString.from_raw_string(text),
        }
    )


class MotoCloud:
    """moto server + guest watcher.  Use as a context manager."""

    def __init__(self, vms_dir, salt_minion, interval=0.3):
        self.vms_dir = vms_dir
        self.salt_minion = salt_minion
        self.interval = interval
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = None
        self._stop = threading.Event()
        self._thread = None
        self._guests = {}  # instance id -> last state seen
        self.errors = []

    def client(self):
        return boto3.client("ec2", region_name=REGION, endpoint_url=self.endpoint_url)

    def __enter__(self):
        fakevm.VMS_DIR = self.vms_dir
        fakevm.SALT_MINION = self.salt_minion
        general.General.get_console_output = _console_output
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint_url = "http://%s:%s" % (host, port)
        self._thread = threading.Thread(target=self._watch, name="ec2-hypervisor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        if not os.environ.get("VMOPS_KEEP"):  # debugging: keep the guests for inspection
            for instance_id in list(self._guests):
                fakevm.destroy(instance_id)
        self.server.stop()

    def _watch(self):
        ec2 = self.client()
        while not self._stop.is_set():
            try:
                self._tick(ec2)
            except Exception as exc:  # pylint: disable=broad-except
                self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    def _tick(self, ec2):
        for page in ec2.get_paginator("describe_instances").paginate():
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    self._sync(ec2, inst)

    def _sync(self, ec2, inst):
        instance_id, state = inst["InstanceId"], inst["State"]["Name"]
        before = self._guests.get(instance_id)
        if state == before:
            return
        if state == "running" and before is None:
            attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
            user_data = (attr.get("UserData") or {}).get("Value")
            name = {t["Key"]: t["Value"] for t in inst.get("Tags") or []}.get("Name")
            fakevm.boot(
                instance_id,
                user_data,
                name=name,
                host=inst.get("Placement", {}).get("AvailabilityZone"),
            )
        elif state == "running":
            fakevm.power_on(instance_id)
        elif state in ("stopping", "stopped"):
            fakevm.power_off(instance_id)
        elif state in ("shutting-down", "terminated"):
            fakevm.destroy(instance_id)
        self._guests[instance_id] = state
