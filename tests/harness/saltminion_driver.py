"""Nova compute driver for the test cloud: Nova's FakeDriver whose guests run salt-minions.

Enable with ``compute_driver = saltminion_driver.SaltMinionDriver`` and this
directory (with ``fakevm.py``) on nova-compute's PYTHONPATH.

* spawn: reads the server's user-data; a cloud-config ``salt_minion`` section
  starts a real salt-minion for the server (see ``fakevm``).
* destroy: stops it and removes the guest's disk; a destroy on the *source* of
  a finished migration (Nova calls it to clean up there) leaves it running.
* live and cold migration: the minion keeps running, its ``compute_host``
  grain names the new host (``saltutil.refresh_grains`` shows it).
* power off/on, reboot: stop/start the minion.
* console output: what cloud-init printed, with the minion key's fingerprint.
* metadata ``fakevm: broken-image``: the guest boots but no minion ever starts
  (a test switch for "the new minion never shows up").
* metadata ``fakevm:migrate`` (test switches for live migration, read when it starts):
  ``fail``: every live migration fails (Nova rolls it back to the source);
  ``fail-once``: the first one fails, the next succeeds;
  ``hang``: it runs until aborted or force-completed (at most 10 minutes), reporting
  the same memory remaining at every poll (no progress);
  ``slow:<seconds>``: it takes that long.
* a restarted nova-compute re-adopts the guests whose directories it finds,
  as a hypervisor still has its domains after the compute service restarts.
"""

import time

import fakevm  # pylint: disable=import-error
from nova.compute import power_state
from nova.virt import fake
from oslo_config import cfg
from oslo_log import log as logging

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class SaltMinionDriver(fake.FakeDriver):
    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._held = {}  # server id -> None (running), "abort" or "complete"
        self._failed_once = set()

    def live_migration(
        self,
        context,
        instance,
        dest,
        post_method,
        recover_method,
        block_migration=False,
        migrate_data=None,
    ):
        mode = str((instance.metadata or {}).get("fakevm:migrate", ""))
        if mode == "fail" or (mode == "fail-once" and instance.uuid not in self._failed_once):
            self._failed_once.add(instance.uuid)
            LOG.info("fakevm: live migration fails on request (%s)", mode, instance=instance)
            recover_method(context, instance, dest, migrate_data)
            return
        if mode == "hang":
            self._hold(
                context, instance, dest, post_method, recover_method, block_migration, migrate_data
            )
            return
        if mode.startswith("slow:"):
            time.sleep(float(mode.split(":", 1)[1]))
        super().live_migration(
            context,
            instance,
            dest,
            post_method,
            recover_method,
            block_migration=block_migration,
            migrate_data=migrate_data,
        )

    def _hold(
        self, context, instance, dest, post_method, recover_method, block_migration, migrate_data
    ):
        self._held[instance.uuid] = None
        migration = getattr(migrate_data, "migration", None)
        deadline = time.time() + 600
        reported = False
        while time.time() < deadline and self._held.get(instance.uuid) is None:
            if migration is not None and not reported:
                # a guest dirtying memory as fast as it is copied: the remainder never shrinks
                migration.memory_total = 1 << 30
                migration.memory_processed = 1 << 29
                migration.memory_remaining = 1 << 29
                migration.disk_total = migration.disk_processed = migration.disk_remaining = 0
                migration.save()
                reported = True
            time.sleep(0.2)
        action = self._held.pop(instance.uuid, None)
        LOG.info("fakevm: held live migration ends: %s", action or "deadline", instance=instance)
        if action == "complete":
            post_method(context, instance, dest, block_migration, migrate_data)
        else:
            recover_method(context, instance, dest, migrate_data, migration_status="cancelled")

    def live_migration_abort(self, instance):
        if instance.uuid in self._held:
            self._held[instance.uuid] = "abort"

    def live_migration_force_complete(self, instance):
        if instance.uuid in self._held:
            self._held[instance.uuid] = "complete"

    def _adopt(self, instance):
        if instance.uuid not in self.instances and fakevm.exists(instance.uuid):
            state = (
                power_state.RUNNING if fakevm.minion_pid(instance.uuid) else power_state.SHUTDOWN
            )
            self.instances[instance.uuid] = fake.FakeInstance(instance.name, state, instance.uuid)

    def spawn(
        self,
        context,
        instance,
        image_meta,
        injected_files,
        admin_password,
        allocations,
        network_info=None,
        block_device_info=None,
        power_on=True,
        accel_info=None,
    ):
        super().spawn(
            context,
            instance,
            image_meta,
            injected_files,
            admin_password,
            allocations,
            network_info=network_info,
            block_device_info=block_device_info,
            power_on=power_on,
            accel_info=accel_info,
        )
        if not power_on:
            return
        if (instance.metadata or {}).get("fakevm") == "broken-image":
            # a test switch: an image whose cloud-init never runs (no minion shows up)
            LOG.info("fakevm: broken image, no guest minion", instance=instance)
            return
        try:
            result = fakevm.boot(
                instance.uuid, instance.user_data, name=instance.display_name, host=CONF.host
            )
            LOG.info("fakevm guest %s: %s", instance.uuid, result, instance=instance)
        except Exception:  # a guest that fails to boot still exists, as on real clouds
            LOG.exception("fakevm: could not boot the guest", instance=instance)

    def destroy(
        self,
        context,
        instance,
        network_info,
        block_device_info=None,
        destroy_disks=True,
        destroy_secrets=True,
    ):
        super().destroy(
            context,
            instance,
            network_info,
            block_device_info=block_device_info,
            destroy_disks=destroy_disks,
            destroy_secrets=destroy_secrets,
        )
        if instance.host and instance.host != CONF.host:
            # clean-up on the source of a migration: the guest lives on elsewhere
            LOG.info(
                "fakevm: guest now on %s, leaving it running", instance.host, instance=instance
            )
            return
        fakevm.destroy(instance.uuid)

    def post_live_migration_at_destination(
        self, context, instance, network_info, block_migration=False, block_device_info=None
    ):
        super().post_live_migration_at_destination(
            context,
            instance,
            network_info,
            block_migration=block_migration,
            block_device_info=block_device_info,
        )
        fakevm.set_host(instance.uuid, CONF.host)

    def finish_migration(
        self,
        context,
        migration,
        instance,
        disk_info,
        network_info,
        image_meta,
        resize_instance,
        allocations,
        block_device_info=None,
        power_on=True,
    ):
        super().finish_migration(
            context,
            migration,
            instance,
            disk_info,
            network_info,
            image_meta,
            resize_instance,
            allocations,
            block_device_info=block_device_info,
            power_on=power_on,
        )
        fakevm.set_host(instance.uuid, CONF.host)

    def finish_revert_migration(
        self, context, instance, network_info, migration, block_device_info=None, power_on=True
    ):
        super().finish_revert_migration(
            context,
            instance,
            network_info,
            migration,
            block_device_info=block_device_info,
            power_on=power_on,
        )
        fakevm.set_host(instance.uuid, CONF.host)

    def power_off(self, instance, timeout=0, retry_interval=0):
        self._adopt(instance)
        super().power_off(instance, timeout=timeout, retry_interval=retry_interval)
        fakevm.power_off(instance.uuid)

    def power_on(self, context, instance, network_info, block_device_info=None, accel_info=None):
        self._adopt(instance)
        super().power_on(
            context,
            instance,
            network_info,
            block_device_info=block_device_info,
            accel_info=accel_info,
        )
        fakevm.power_on(instance.uuid)

    def reboot(
        self,
        context,
        instance,
        network_info,
        reboot_type,
        block_device_info=None,
        bad_volumes_callback=None,
        accel_info=None,
    ):
        self._adopt(instance)
        fakevm.power_off(instance.uuid)
        super().reboot(
            context,
            instance,
            network_info,
            reboot_type,
            block_device_info=block_device_info,
            bad_volumes_callback=bad_volumes_callback,
            accel_info=accel_info,
        )

    def get_info(self, instance, use_cache=True):
        self._adopt(instance)
        return super().get_info(instance, use_cache=use_cache)

    def get_console_output(self, context, instance):
        return fakevm.console(instance.uuid) or super().get_console_output(context, instance)
