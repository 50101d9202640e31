"""OpenStack volumes (Cinder): the driver's volume primitives (the shared volume logic is
in ``provider.py``).  A mixin of ``openstack.OpenStackProvider``.
"""

import logging
import re

from .errors import Ambiguous, CloudError, NotSupported

try:
    import openstack
    import openstack.exceptions
except ImportError:  # pragma: no cover - reported by the loader modules' __virtual__
    openstack = None

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class VolumeOperations:
    """Needs ``self.conn`` and ``self.name``."""

    # ------------------------------------------------------------------ volumes (Cinder)

    def _volume_service(self):
        if not any(self.conn.has_service(t) for t in ("block-storage", "volumev3", "volume")):
            raise NotSupported(
                "cloud %s has no volume service (no block-storage endpoint in its catalog): "
                "volumes cannot be listed, attached or detached there" % self.name
            )

    @staticmethod
    def _volume_dict(vol):
        return {
            "id": vol.id,
            "name": vol.name,
            "size": vol.size,
            "type": vol.volume_type,
            "status": vol.status,
            "bootable": bool(vol.is_bootable),
            "multiattach": bool(vol.is_multiattach),
            "encrypted": bool(vol.is_encrypted),
            "tags": dict(vol.metadata or {}),
            "availability_zone": vol.availability_zone,
            "attachments": [
                {"server_id": a.get("server_id"), "device": a.get("device")}
                for a in vol.attachments or []
            ],
        }

    def _volume_find(self, name_or_id):
        self._volume_service()
        if _UUID.match(name_or_id):
            found = self._volume_get(name_or_id)
            if found is not None:
                return found
        vols = [
            v
            for v in self.conn.block_storage.volumes(
                all_projects=self.all_projects, name=name_or_id
            )
            if v.name == name_or_id
        ]
        if len(vols) > 1:
            raise Ambiguous(
                "%d volumes are named %r on cloud %s (%s): give the id"
                % (len(vols), name_or_id, self.name, ", ".join(v.id for v in vols))
            )
        return self._volume_dict(vols[0]) if vols else None

    def _volume_get(self, volume_id):
        try:
            return self._volume_dict(self.conn.block_storage.get_volume(volume_id))
        except openstack.exceptions.NotFoundException:
            return None

    def _server_volumes(self, server_id):
        self._volume_service()
        server = self._get_server(server_id)
        root = server.root_device_name if server is not None else None
        out = []
        for att in self.conn.compute.volume_attachments(server_id):
            vol = self._volume_get(att.volume_id)
            if vol is not None:
                vol["root"] = bool(root) and att.device == root
                out.append(vol)
        return out

    def _volume_create(self, name, size, volume_type=None, availability_zone=None):
        self._volume_service()
        kwargs = {"name": name, "size": size}
        if volume_type:
            kwargs["volume_type"] = volume_type
        if availability_zone:
            kwargs["availability_zone"] = availability_zone
        try:
            return self.conn.block_storage.create_volume(**kwargs).id
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to create volume %s: %s" % (self.name, name, exc)
            ) from exc

    def _volume_attach(self, server_id, volume_id, device=None):
        kwargs = {"device": device} if device else {}
        try:
            self.conn.compute.create_volume_attachment(server_id, volume=volume_id, **kwargs)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to attach volume %s to %s: %s"
                % (self.name, volume_id, server_id, exc)
            ) from exc

    def _volume_detach(self, server_id, volume_id):
        try:
            self.conn.compute.delete_volume_attachment(server_id, volume_id, ignore_missing=False)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to detach volume %s from %s: %s"
                % (self.name, volume_id, server_id, exc)
            ) from exc

    def _volume_delete(self, volume_id):
        try:
            self.conn.block_storage.delete_volume(volume_id, ignore_missing=True)
        except openstack.exceptions.HttpException as exc:
            raise CloudError(
                "cloud %s refused to delete volume %s: %s" % (self.name, volume_id, exc)
            ) from exc
