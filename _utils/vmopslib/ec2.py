"""EC2 driver (boto3): the same provider interface on AWS.

Profile keys: ``region_name``; optional ``endpoint_url`` (e.g. a moto server),
``aws_access_key_id``/``aws_secret_access_key`` (else boto3's usual chain),
``termination_protection`` (default true: new instances get
DisableApiTermination, as the Copr runbook does; the pack lifts it only to
delete an instance it was asked to delete).
"""

import base64
import datetime
import logging
import re

from .errors import Ambiguous, CloudError, InvalidInput, NotFound, NotSupported
from .provider import Provider, shared_session, short_reason

try:
    import boto3
    import botocore.exceptions

    HAS_BOTO3 = True
except ImportError:  # pragma: no cover - reported by the loader modules' __virtual__
    HAS_BOTO3 = False

log = logging.getLogger(__name__)

_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")
_DEVICES = ["/dev/sd%s" % c for c in "fghijklmnop"]
_STATUS = {
    "pending": "BUILD",
    "running": "ACTIVE",
    "stopping": "SHUTOFF",
    "stopped": "SHUTOFF",
    "shutting-down": "DELETED",
    "terminated": "DELETED",
}
_LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def _client(profile):
    if not HAS_BOTO3:
        raise NotSupported("boto3 is not installed")
    kwargs = {
        k: profile[k]
        for k in (
            "region_name",
            "endpoint_url",
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
        )
        if profile.get(k)
    }
    return boto3.client("ec2", **kwargs)


def _created(server):
    """When the instance was made.  ``LaunchTime`` is reset by every stop/start, so an old
    instance restarted would look new: the primary network interface's attach time is set
    at launch and kept across stops (falls back to ``LaunchTime``)."""
    primary = [
        eni.get("Attachment", {}).get("AttachTime")
        for eni in server.get("NetworkInterfaces") or []
        if eni.get("Attachment", {}).get("DeviceIndex", 0) == 0
    ]
    when = next((t for t in primary if t), None) or server.get("LaunchTime")
    if isinstance(when, datetime.datetime):
        when = when.isoformat()
    return when


def _mapped(server):
    return {
        m["DeviceName"]: m["Ebs"]["VolumeId"]
        for m in server.get("BlockDeviceMappings") or []
        if "Ebs" in m and m.get("DeviceName")
    }


def _root_device(server):
    """The device the instance's root volume is attached at: ``RootDeviceName``; an
    emulator (moto) may attach the root at /dev/sda1 whatever the AMI names, so when
    nothing is mapped there, the usual root device that is mapped."""
    mapped = _mapped(server)
    root = server.get("RootDeviceName")
    if root in mapped or not mapped:
        return root
    return next((d for d in ("/dev/sda1", "/dev/xvda") if d in mapped), root)


def _error_code(exc):
    return exc.response.get("Error", {}).get("Code", "")


def decode_console(out):
    """EC2's console output: base64 on AWS; some emulators return the text itself.

    Only a string that is base64 through and through is decoded (a lenient decode of
    plain text that happens to have a multiple of 4 alphabet characters is garbage).
    """
    compact = "".join(out.split())
    try:
        return base64.b64decode(compact, validate=True).decode("utf-8", "replace")
    except (ValueError, TypeError):
        return out


class EC2Provider(Provider):
    driver = "ec2"
    # the Copr runbook's way: <vm>-new until the cut-over, then <vm>-old and <vm>
    DEFAULT_NAMING = "suffix"
    USER_DATA_MAX = 16384  # EC2's limit, on the raw text

    def translate_error(self, exc, operation):
        """botocore exceptions as the pack's errors (see Provider)."""
        if not HAS_BOTO3:
            return None
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error") or {}
            code = error.get("Code") or "Unknown"
            words = short_reason(error.get("Message") or exc)
            if code.endswith(".NotFound") or code.endswith("NotFound"):
                return NotFound(
                    "cloud %s: %s: not found (%s: %s)" % (self.name, operation, code, words)
                )
            status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return CloudError(
                "cloud %s: %s failed: %s%s: %s"
                % (self.name, operation, code, " (HTTP %s)" % status if status else "", words)
            )
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return CloudError(
                "cloud %s: %s failed: %s: %s"
                % (self.name, operation, type(exc).__name__, short_reason(exc))
            )
        return None

    def __init__(self, profile, client=None):
        super().__init__(profile)
        self._ec2 = client

    @property
    def ec2(self):
        if self._ec2 is None:
            self._ec2 = shared_session(self.profile, _client)
        return self._ec2

    def _instances(self, **kwargs):
        out = []
        for page in self.ec2.get_paginator("describe_instances").paginate(**kwargs):
            for reservation in page["Reservations"]:
                out.extend(reservation["Instances"])
        return out

    # ------------------------------------------------------------------ servers

    def _looks_like_id(self, value):
        return bool(_INSTANCE_ID.match(value))

    def _get_server(self, server_id):
        try:
            found = self._instances(InstanceIds=[server_id])
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc).startswith("InvalidInstanceID"):
                return None
            raise CloudError("EC2 describe_instances failed: %s" % exc) from exc
        if not found or found[0]["State"]["Name"] == "terminated":
            return None
        return found[0]

    def _servers_named(self, name):
        return self._instances(
            Filters=[
                {"Name": "tag:Name", "Values": [name]},
                {"Name": "instance-state-name", "Values": _LIVE_STATES},
            ]
        )

    def _status(self, server):
        state = server["State"]["Name"]
        reason = (server.get("StateReason") or {}).get("Message")
        return _STATUS.get(state, state.upper()), reason

    def _describe(self, server):
        tags = {t["Key"]: t["Value"] for t in server.get("Tags") or []}
        networks, fixed = {}, []
        for eni in server.get("NetworkInterfaces") or []:
            for addr in eni.get("PrivateIpAddresses") or []:
                networks.setdefault(eni.get("SubnetId"), []).append(addr["PrivateIpAddress"])
                fixed.append(addr["PrivateIpAddress"])
        if not fixed and server.get("PrivateIpAddress"):
            fixed.append(server["PrivateIpAddress"])
            networks[server.get("SubnetId")] = [server["PrivateIpAddress"]]
        launched = _created(server)
        status, fault = self._status(server)
        return {
            "id": server["InstanceId"],
            "name": tags.get("Name"),
            "status": status,
            "host": None,
            "flavor": server.get("InstanceType"),
            "image": server.get("ImageId"),
            "key_name": server.get("KeyName"),
            # by id: an instance in a VPC is booted with group ids (names fail there)
            "security_groups": sorted(g["GroupId"] for g in server.get("SecurityGroups") or []),
            "networks": networks,
            "fixed_ips": fixed,
            "floating_ips": [],
            "volumes": [
                m["Ebs"]["VolumeId"] for m in server.get("BlockDeviceMappings") or [] if "Ebs" in m
            ],
            "metadata": {k: v for k, v in tags.items() if k != "Name"},
            "availability_zone": (server.get("Placement") or {}).get("AvailabilityZone"),
            "created": launched,
            "fault": fault,
        }

    def describe(self, server):
        desc = super().describe(server)
        # the address list is the authority on Elastic IPs (an instance's own
        # PublicIpAddress can lag behind a re-association)
        addrs = self.ec2.describe_addresses(
            Filters=[{"Name": "instance-id", "Values": [desc["id"]]}]
        )["Addresses"]
        desc["floating_ips"] = sorted(a["PublicIp"] for a in addrs)
        return desc

    def headroom(self):
        """The account's ``max-instances`` less its instances that are not terminated (EC2's
        vCPU limits live in Service Quotas, which this driver does not read: None)."""
        attrs = self.ec2.describe_account_attributes(AttributeNames=["max-instances"])
        most = None
        for attr in attrs.get("AccountAttributes") or []:
            if attr.get("AttributeName") != "max-instances":
                continue  # (moto answers every attribute whatever was asked)
            for value in attr.get("AttributeValues") or []:
                if str(value.get("AttributeValue", "")).isdigit():
                    most = int(value["AttributeValue"])
        running = self._instances(
            Filters=[
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                }
            ]
        )
        return {
            "instances": None if most is None else most - len(running),
            "cores": None,
            "ram_mb": None,
        }

    def flavor_size(self, flavor):
        try:
            found = self.ec2.describe_instance_types(InstanceTypes=[flavor])["InstanceTypes"]
        except botocore.exceptions.ClientError as exc:
            raise NotFound(
                "no instance type %s on cloud %s (%s)" % (flavor, self.name, exc)
            ) from exc
        if not found:
            raise NotFound("no instance type %s on cloud %s" % (flavor, self.name))
        return {
            "vcpus": found[0].get("VCpuInfo", {}).get("DefaultVCpus"),
            "ram_mb": found[0].get("MemoryInfo", {}).get("SizeInMiB"),
        }

    def _extras(self, server_id):
        """Root volume (size, type, encryption, KMS key), IAM instance profile, IPv6, and
        termination protection: what a copy of the instance needs beyond the spec."""
        server = self._get_server(server_id) or {}
        root_name = _root_device(server)
        root = _mapped(server).get(root_name)
        extras = {
            "termination_protection": self._protected(server_id),
            "ipv6": any(eni.get("Ipv6Addresses") for eni in server.get("NetworkInterfaces") or []),
        }
        profile = (server.get("IamInstanceProfile") or {}).get("Arn")
        if profile:
            extras["iam_profile"] = profile
        if root:
            vol = self._volumes(VolumeIds=[root])[0]
            extras["root_volume"] = {
                "device": root_name,
                "size": vol["Size"],
                "type": vol.get("VolumeType"),
                "encrypted": bool(vol.get("Encrypted")),
            }
            if vol.get("KmsKeyId"):
                extras["root_volume"]["kms_key_id"] = vol["KmsKeyId"]
        return extras

    def _check_spec(self, spec):
        try:
            images = self.ec2.describe_images(ImageIds=[spec["image"]])["Images"]
        except botocore.exceptions.ClientError as exc:
            images = []
            if not _error_code(exc).startswith("InvalidAMIID"):
                raise CloudError("EC2 describe_images failed: %s" % exc) from exc
        if not images:
            raise NotFound("image %r does not exist in EC2 region %s" % (spec["image"], self.name))
        if spec.get("availability_zone") and len(spec.get("networks") or []) > 1:
            raise InvalidInput("an EC2 instance is booted into one subnet: give one network")

    def _create_server(self, spec):
        tags = [{"Key": "Name", "Value": spec["name"]}]
        tags += [{"Key": str(k), "Value": str(v)} for k, v in (spec.get("metadata") or {}).items()]
        kwargs = {
            "ImageId": spec["image"],
            "InstanceType": spec["flavor"],
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
            "DisableApiTermination": bool(self.profile.get("termination_protection", True)),
        }
        extras = spec.get("extras") or {}
        if "termination_protection" in extras:
            kwargs["DisableApiTermination"] = bool(extras["termination_protection"])
        if extras.get("iam_profile"):
            kwargs["IamInstanceProfile"] = {"Arn": extras["iam_profile"]}
        root = extras.get("root_volume")
        if root:
            ebs = {"VolumeSize": int(root["size"]), "DeleteOnTermination": True}
            if root.get("type"):
                ebs["VolumeType"] = root["type"]
            if root.get("encrypted"):
                ebs["Encrypted"] = True  # the account's default KMS key unless one is named
                if root.get("kms_key_id"):
                    ebs["KmsKeyId"] = root["kms_key_id"]
            kwargs["BlockDeviceMappings"] = [
                {"DeviceName": root.get("device") or "/dev/xvda", "Ebs": ebs}
            ]
        if spec.get("key_name"):
            kwargs["KeyName"] = spec["key_name"]
        if extras.get("ipv6") and spec.get("networks"):
            kwargs["Ipv6AddressCount"] = 1
        if spec.get("networks"):
            kwargs["SubnetId"] = spec["networks"][0]
        if spec.get("security_groups"):
            kwargs["SecurityGroupIds"] = list(spec["security_groups"])
        if spec.get("availability_zone"):
            kwargs["Placement"] = {"AvailabilityZone": spec["availability_zone"]}
        if spec.get("user_data"):
            kwargs["UserData"] = spec["user_data"].decode()  # boto3 base64-encodes it
        if spec.get("volumes"):
            free = iter(d for d in _DEVICES if d not in {v.get("device") for v in spec["volumes"]})
            kwargs.setdefault("BlockDeviceMappings", [])
            kwargs["BlockDeviceMappings"] += [
                {
                    "DeviceName": vol.get("device") or next(free),
                    "Ebs": dict(
                        {
                            "VolumeSize": vol["size"],
                            "DeleteOnTermination": vol["delete_on_termination"],
                        },
                        **({"VolumeType": vol["type"]} if vol.get("type") else {}),
                    ),
                }
                for vol in spec["volumes"]
            ]
        try:
            server_id = self.ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"]
        except botocore.exceptions.ClientError as exc:
            raise CloudError("EC2 refused to boot %s: %s" % (spec["name"], exc)) from exc
        if kwargs["DisableApiTermination"] and not self._protected(server_id):
            # read back: an endpoint that ignores the flag at launch (moto does) gets it set
            log.warning("vmops: %s: termination protection set after launch", server_id)
            self.set_protection(server_id, True)
        return server_id

    def _protected(self, server_id):
        return bool(
            self.ec2.describe_instance_attribute(
                InstanceId=server_id, Attribute="disableApiTermination"
            )["DisableApiTermination"]["Value"]
        )

    def _delete_server(self, server_id):
        # termination protection guards against accidents; a delete the pack was
        # asked for lifts it first
        self.ec2.modify_instance_attribute(
            InstanceId=server_id, DisableApiTermination={"Value": False}
        )
        self.ec2.terminate_instances(InstanceIds=[server_id])

    def _stop_server(self, server_id):
        self.ec2.stop_instances(InstanceIds=[server_id])

    def set_protection(self, server_id, protected):
        """Termination protection on (``True``) or off."""
        self.ec2.modify_instance_attribute(
            InstanceId=server_id, DisableApiTermination={"Value": bool(protected)}
        )

    def _rename_server(self, server_id, new_name):
        self.ec2.create_tags(Resources=[server_id], Tags=[{"Key": "Name", "Value": new_name}])

    def console_output(self, name_or_id):
        server = self.find_server(name_or_id)
        out = self.ec2.get_console_output(InstanceId=server["InstanceId"]).get("Output") or ""
        return decode_console(out)

    # ------------------------------------------------------------------ Elastic IPs

    IP_WORD = "Elastic IP"

    def _ip_find(self, address):
        found = self.ec2.describe_addresses(Filters=[{"Name": "public-ip", "Values": [address]}])
        if not found["Addresses"]:
            raise NotFound("Elastic IP %s is not allocated in region %s" % (address, self.name))
        eip = found["Addresses"][0]
        return {
            "address": address,
            "server_id": eip.get("InstanceId"),
            "fixed_ip": eip.get("PrivateIpAddress"),
            "native": eip,
        }

    def _ip_target(self, ip, server, fixed_ip=None):
        target = self.describe(self.find_server(server))
        if fixed_ip is not None and fixed_ip not in target["fixed_ips"]:
            raise InvalidInput(
                "server %s has no private IP %s; nothing was changed" % (target["name"], fixed_ip)
            )
        asked = fixed_ip is not None
        if not asked:  # already on this instance: where it is (else the primary IP)
            here = ip["server_id"] == target["id"] and ip["fixed_ip"] in target["fixed_ips"]
            fixed_ip = ip["fixed_ip"] if here else target["fixed_ips"][0]
        return {
            "server_id": target["id"],
            "name": target["name"],
            "fixed_ip": fixed_ip,
            "asked": asked,  # EC2 picks the primary private IP itself unless told
            "native": target,
        }

    def _ip_associate(self, ip, target):
        kwargs = {"InstanceId": target["server_id"], "AllowReassociation": True}
        if target["asked"]:
            kwargs["PrivateIpAddress"] = target["fixed_ip"]
        if ip["native"].get("AllocationId"):
            kwargs["AllocationId"] = ip["native"]["AllocationId"]
        else:
            kwargs["PublicIp"] = ip["address"]
        self.ec2.associate_address(**kwargs)

    # ------------------------------------------------------------------ volumes (EBS)

    def _call(self, what, fn, **kwargs):
        try:
            return fn(**kwargs)
        except botocore.exceptions.ClientError as exc:
            raise CloudError("EC2 refused to %s: %s" % (what, exc)) from exc

    @staticmethod
    def _volume_dict(vol):
        tags = {t["Key"]: t["Value"] for t in vol.get("Tags") or []}
        return {
            "id": vol["VolumeId"],
            "name": tags.get("Name"),
            "size": vol["Size"],
            "type": vol.get("VolumeType"),
            "status": vol["State"],
            "bootable": False,
            "multiattach": bool(vol.get("MultiAttachEnabled")),
            "encrypted": bool(vol.get("Encrypted")),
            "tags": {k: v for k, v in tags.items() if k != "Name"},
            "availability_zone": vol.get("AvailabilityZone"),
            "attachments": [
                {"server_id": a["InstanceId"], "device": a.get("Device")}
                for a in vol.get("Attachments") or []
                if a.get("State") in ("attaching", "attached", "busy", "detaching")
            ],
        }

    def _volumes(self, **kwargs):
        out = []
        for page in self.ec2.get_paginator("describe_volumes").paginate(**kwargs):
            out.extend(page["Volumes"])
        return out

    def _volume_get(self, volume_id):
        try:
            found = self._volumes(VolumeIds=[volume_id])
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc).startswith("InvalidVolume"):
                return None
            raise CloudError("EC2 describe_volumes failed: %s" % exc) from exc
        return self._volume_dict(found[0]) if found else None

    def _volume_find(self, name_or_id):
        if _VOLUME_ID.match(name_or_id):
            return self._volume_get(name_or_id)
        found = self._volumes(Filters=[{"Name": "tag:Name", "Values": [name_or_id]}])
        found = [v for v in found if v["State"] not in ("deleting", "deleted")]
        if len(found) > 1:
            raise Ambiguous(
                "%d volumes are named %r in EC2 region %s (%s): give the id"
                % (len(found), name_or_id, self.name, ", ".join(v["VolumeId"] for v in found))
            )
        return self._volume_dict(found[0]) if found else None

    def _server_volumes(self, server_id):
        server = self._get_server(server_id) or {}
        root = _root_device(server)
        out = []
        for vol in self._volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [server_id]}]
        ):
            desc = self._volume_dict(vol)
            dev = next(
                (a["device"] for a in desc["attachments"] if a["server_id"] == server_id), None
            )
            desc["root"] = desc["bootable"] = bool(root) and dev == root
            out.append(desc)
        return out

    def _volume_create(self, name, size, volume_type=None, availability_zone=None):
        zone = availability_zone or self.profile.get("availability_zone")
        if not zone:
            zones = self.ec2.describe_availability_zones()["AvailabilityZones"]
            zone = sorted(z["ZoneName"] for z in zones)[0]
        kwargs = {
            "Size": size,
            "AvailabilityZone": zone,
            "TagSpecifications": [
                {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": name}]}
            ],
        }
        if volume_type:
            kwargs["VolumeType"] = volume_type
        return self._call("create volume %s" % name, self.ec2.create_volume, **kwargs)["VolumeId"]

    def _volume_zone_ok(self, server, volume):
        zone = (server.get("Placement") or {}).get("AvailabilityZone")
        if zone and volume["availability_zone"] and zone != volume["availability_zone"]:
            return (
                "volume %s is in availability zone %s and instance %s in %s: EBS volumes "
                "attach only within their zone"
                % (volume["id"], volume["availability_zone"], server["InstanceId"], zone)
            )
        return None

    def _volume_attach(self, server_id, volume_id, device=None):
        if not device:
            server = self._get_server(server_id) or {}
            used = {m.get("DeviceName") for m in server.get("BlockDeviceMappings") or []}
            device = next((d for d in _DEVICES if d not in used), None)
            if device is None:
                raise InvalidInput(
                    "instance %s has no free device name left; give device=" % server_id
                )
        self._call(
            "attach volume %s to %s" % (volume_id, server_id),
            self.ec2.attach_volume,
            VolumeId=volume_id,
            InstanceId=server_id,
            Device=device,
        )

    def _volume_detach(self, server_id, volume_id):
        self._call(
            "detach volume %s from %s" % (volume_id, server_id),
            self.ec2.detach_volume,
            VolumeId=volume_id,
            InstanceId=server_id,
        )

    def _volume_delete(self, volume_id):
        self._call("delete volume %s" % volume_id, self.ec2.delete_volume, VolumeId=volume_id)
