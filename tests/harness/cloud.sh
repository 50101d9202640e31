#!/bin/bash
# cloud.sh -- the project's local OpenStack (Zed, Debian 12 packages) on 127.0.0.1.
#
#   keystone + placement (uwsgi), glance-api (file store), cinder (api, scheduler, volume
#   with Cinder's FakeLoggingVolumeDriver: volumes are API objects, no disks), neutron-server (ML2 with the
#   agentless "fakebind" driver, L3 router plugin), nova api/conductor/scheduler and
#   N x nova-compute running SaltMinionDriver (Nova's FakeDriver whose guests run real
#   salt-minions from their user-data), on MariaDB + RabbitMQ.
#
# Usage:  tests/harness/cloud.sh up       install packages (once), start, or reuse a running cloud
#         tests/harness/cloud.sh down     stop what this script started (by PID), and the guests
#         tests/harness/cloud.sh status
# Env:    VMOPS_HOME (default /var/tmp/vmops): cloud in $VMOPS_HOME/cloud, guests in $VMOPS_HOME/vms
#         PW (all passwords, default secret)  COMPUTES (default "cmp1 cmp2 cmp3")  WIPE=1
# Needs:  root, Debian bookworm packages.  Adapted from a recipe proven on this kind of machine.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T0=$(date +%s.%N)
VMOPS_HOME=${VMOPS_HOME:-/var/tmp/vmops}
BASE=$VMOPS_HOME/cloud
PW=${PW:-secret}
COMPUTES=${COMPUTES:-"cmp1 cmp2 cmp3"}
ETC=$BASE/etc LOG=$BASE/logs RUN=$BASE/run DATA=$BASE/data BIN=$BASE/bin PYLIB=$BASE/pylib
VMS=$VMOPS_HOME/vms
PY=/usr/bin/python3                      # Debian's python: the OpenStack packages live there
export PATH=/usr/sbin:/usr/bin:/sbin:/bin # keep pyenv/venv pythons away from the services
export LC_ALL=C.UTF-8
KS=http://127.0.0.1:5000
DB="mysql+pymysql://openstack:$PW@127.0.0.1"
RABBIT="rabbit://openstack:$PW@127.0.0.1:5672/"
PKGS="rabbitmq-server mariadb-server python3-pymysql python3-keystone python3-placement
      nova-common neutron-common glance-common python3-openstackclient
      uwsgi-core uwsgi-plugin-python3 curl python3-venv"

el() { echo "$(date +%s.%N) $T0" | awk '{printf "%.1f", $1-$2}'; }
say() { echo "[cloud $(el)s] $*"; echo "$(el) $*" >> "$LOG/setup-phases.txt"; }
die() { echo "FATAL: $*" >&2; exit 1; }
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# --------------------------------------------------------------------------- stop
down() {
  # guests first: their minions were started by nova-compute in sessions of their own
  if [ -d "$VMS" ]; then
    VMOPS_FAKEVM_DIR=$VMS PYTHONPATH=$HERE $PY -c 'import fakevm; fakevm.stop_all()' || true
  fi
  for f in "$RUN"/nova-compute-*.pid "$RUN"/nova-api.pid "$RUN"/nova-scheduler.pid \
           "$RUN"/cinder-volume.pid "$RUN"/cinder-scheduler.pid "$RUN"/cinder-api.pid \
           "$RUN"/nova-conductor.pid "$RUN"/neutron-server.pid "$RUN"/glance-api.pid \
           "$RUN"/placement.pid "$RUN"/keystone.pid; do
    [ -f "$f" ] || continue; p=$(cat "$f")
    kill -TERM -- -"$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; rm -f "$f"
  done
  if [ -f "$RUN/rabbitmq.pid" ]; then
    su rabbitmq -s /bin/sh -c ". $ETC/rabbitmq-env.sh; /usr/lib/rabbitmq/bin/rabbitmqctl -q shutdown" >/dev/null 2>&1 || true
    su rabbitmq -s /bin/sh -c ". $ETC/rabbitmq-env.sh; epmd -kill" >/dev/null 2>&1 || true
    rm -f "$RUN/rabbitmq.pid"
  fi
  if [ -f "$RUN/mysqld.pid" ]; then
    p=$(cat "$RUN/mysqld.pid"); kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    rm -f "$RUN/mysqld.pid"
  fi
  echo "[cloud] stopped"
}

# the guest side of the test hypervisor, kept current in $PYLIB (a change restarts the computes)
install_pylib() {
  mkdir -p "$PYLIB/fakebind_ml2-1.0.dist-info"
  cp "$HERE/fakebind_ml2.py" "$PYLIB/"
  printf 'Metadata-Version: 2.1\nName: fakebind-ml2\nVersion: 1.0\n' > "$PYLIB/fakebind_ml2-1.0.dist-info/METADATA"
  printf '[neutron.ml2.mechanism_drivers]\nfakebind = fakebind_ml2:FakeBindMechanismDriver\n' \
    > "$PYLIB/fakebind_ml2-1.0.dist-info/entry_points.txt"
  echo fakebind_ml2 > "$PYLIB/fakebind_ml2-1.0.dist-info/top_level.txt"
  local changed=0 f
  for f in fakevm.py saltminion_driver.py nova_sitecustomize.py; do
    cmp -s "$HERE/$f" "$PYLIB/$f" || { cp "$HERE/$f" "$PYLIB/$f"; changed=1; }
  done
  cp "$PYLIB/nova_sitecustomize.py" "$PYLIB/sitecustomize.py"
  return $changed
}

start() { # name cmd...   a daemon in its own session; pid file = session leader
  local n=$1; shift
  ( cd "$BASE"; exec setsid "$@" ) >>"$LOG/$n.out" 2>&1 </dev/null &
  echo $! > "$RUN/$n.pid"
}
start_compute() { # host
  start "nova-compute-$1" env PYTHONPATH="$PYLIB" VMOPS_FAKEVM_DIR="$VMS" \
        VMOPS_SALT_MINION="$VMOPS_HOME/bin/salt-minion" \
        "$BIN/nova-compute" --config-file "$ETC/nova/nova.conf" --config-file "$ETC/nova/nova-$1.conf" \
        --log-file "$LOG/nova-compute-$1.log"
}
wait_http() { # url timeout-seconds
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    curl -s -o /dev/null -m 2 "$1" && return 0
    sleep 0.25
  done
  die "timeout waiting for $1"
}
computes_ready() {
# Nova refuses to unset forced_down while 'done' evacuation records of a host remain (its
# nova-compute moves them to 'completed' only for instances it still has): a test that died
# mid-recovery left some; this cloud is the harness's, so they are closed here
mariadb --defaults-file="$ETC/my.cnf" -e "UPDATE nova.migrations SET status='completed'
  WHERE status='done' AND migration_type='evacuation'" >/dev/null 2>&1 || true
$PY - "$PW" "$COMPUTES" <<'PYEOF'
import sys, time
from keystoneauth1.identity import v3
from keystoneauth1 import session
pw, hosts = sys.argv[1], set(sys.argv[2].split())
s = session.Session(auth=v3.Password(auth_url='http://127.0.0.1:5000/v3', username='admin',
    password=pw, project_name='admin', user_domain_id='default', project_domain_id='default'))
deadline = time.time() + 300
up = set()
while time.time() < deadline:
    svcs = s.get('/os-services', endpoint_filter={'service_type': 'compute'},
                 params={'binary': 'nova-compute'},
                 headers={'OpenStack-API-Version': 'compute 2.53'}).json()['services']
    # a host a failed test left forced down or disabled is put back in service (Nova refuses
    # to unset forced_down while 'done' evacuation records remain: asked again next round)
    for x in svcs:
        if x['host'] in hosts and (x.get('forced_down') or x['status'] == 'disabled'):
            s.put('/os-services/%s' % x['id'], endpoint_filter={'service_type': 'compute'},
                  json={'forced_down': False, 'status': 'enabled'}, raise_exc=False,
                  headers={'OpenStack-API-Version': 'compute 2.53'})
    up = {x['host'] for x in svcs if x['state'] == 'up'}
    rps = s.get('/resource_providers', endpoint_filter={'service_type': 'placement'},
                headers={'OpenStack-API-Version': 'placement 1.14'}).json()['resource_providers']
    if hosts <= up and hosts <= {r['name'] for r in rps}:
        break
    time.sleep(1)
else:
    sys.exit('computes not ready: up=%s' % up)
PYEOF
}
resources() {
  OS_CLIENT_CONFIG_FILE=$BASE/clouds.yaml OS_CLOUD=local-admin \
    $PY "$HERE/cloud_resources.py" >"$LOG/bootstrap-resources.log" 2>&1 \
    || { tail -20 "$LOG/bootstrap-resources.log"; die "base resources failed"; }
}

mkshim() { # name module  (console-script shims: the Debian service packages pull in qemu/libvirt)
  printf '#!/usr/bin/python3\nimport sys\nfrom %s import main\nsys.exit(main())\n' "$2" > "$BIN/$1"
  chmod 755 "$BIN/$1"
}
authtoken() { # username
cat <<EOF
[keystone_authtoken]
www_authenticate_uri = $KS
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $PW
EOF
}

# Cinder: api, scheduler and volume (FakeLoggingVolumeDriver), set up and started when not
# running; idempotent, so a cloud started before Cinder was part of it gains it on reuse.
CINDER_PKGS="cinder-common python3-cinder"
cinder_up() {
  alive cinder-api && alive cinder-scheduler && alive cinder-volume && return 0
  local t0; t0=$(date +%s.%N)
  if ! dpkg -s $CINDER_PKGS >/dev/null 2>&1; then
    say "apt: installing cinder"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    fi
    for q in configure_db configure_rabbit configure_ksat; do echo "cinder-common cinder/$q boolean false"; done \
      | debconf-set-selections
    [ -f "$LOG/apt-update.log" ] || apt-get update -q >"$LOG/apt-update.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
       -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $CINDER_PKGS \
       >"$LOG/apt-install-cinder.log" 2>&1 || { tail -30 "$LOG/apt-install-cinder.log"; die "apt (cinder) failed"; }
  fi
  mkdir -p "$ETC/cinder" "$DATA/cinder/lock"
  mkshim cinder-api cinder.cmd.api
  mkshim cinder-scheduler cinder.cmd.scheduler
  mkshim cinder-volume cinder.cmd.volume
  cat > "$ETC/cinder/cinder.conf" <<EOF
[DEFAULT]
transport_url = $RABBIT
auth_strategy = keystone
my_ip = 127.0.0.1
host = vmops-cinder
state_path = $DATA/cinder
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = 8776
osapi_volume_workers = 1
api_paste_config = /usr/share/cinder-common/api-paste.ini
glance_api_servers = http://127.0.0.1:9292
enabled_backends = fake
report_interval = 5
service_down_time = 30
# test cloud: no volume quota (volumes a failed test could not delete must not starve the next
# run); the config's values, not the "default" quota class the db sync writes
use_default_quota_class = false
quota_volumes = -1
quota_snapshots = -1
quota_gigabytes = -1
[database]
connection = $DB/cinder
$(authtoken cinder)
# Nova detaches with a service token (nova.conf [service_user]); since CVE-2023-2088 Cinder
# refuses to delete an in-use attachment without one.  Our service users have the admin role.
service_token_roles = admin
service_token_roles_required = true
[oslo_concurrency]
lock_path = $DATA/cinder/lock
[oslo_messaging_notifications]
driver = noop
[nova]
region_name = RegionOne
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = nova
password = $PW
[fake]
# volumes are API objects only: create, attach, detach, delete log instead of touching disks
volume_driver = cinder.tests.fake_driver.FakeLoggingVolumeDriver
volume_backend_name = fake
EOF
  echo "CREATE DATABASE IF NOT EXISTS cinder;" | mariadb --defaults-file="$ETC/my.cnf"
  cinder-manage --config-file "$ETC/cinder/cinder.conf" db sync >"$LOG/sync-cinder.log" 2>&1 \
    || { tail -20 "$LOG/sync-cinder.log"; die "cinder db sync failed"; }
  $PY "$HERE/keystone_catalog.py" "$PW" cinder 'cinderv3:volumev3:http://127.0.0.1:8776/v3/%(project_id)s' \
    >"$LOG/keystone-catalog-cinder.log" 2>&1 || die "cinder catalog failed, see logs/keystone-catalog-cinder.log"
  local CC="--config-file $ETC/cinder/cinder.conf"
  alive cinder-api || start cinder-api "$BIN/cinder-api" $CC --log-file "$LOG/cinder-api.log"
  alive cinder-scheduler || start cinder-scheduler "$BIN/cinder-scheduler" $CC --log-file "$LOG/cinder-scheduler.log"
  alive cinder-volume || start cinder-volume "$BIN/cinder-volume" $CC --log-file "$LOG/cinder-volume.log"
  wait_http http://127.0.0.1:8776/ 120
  cinder_ready || die "cinder-volume did not come up"
  say "cinder: up in $(echo "$(date +%s.%N) $t0" | awk '{printf "%.1f", $1-$2}')s"
}
cinder_ready() {
$PY - "$PW" <<'PYEOF'
import sys, time
from keystoneauth1.identity import v3
from keystoneauth1 import session
s = session.Session(auth=v3.Password(auth_url='http://127.0.0.1:5000/v3', username='admin',
    password=sys.argv[1], project_name='admin', user_domain_id='default', project_domain_id='default'))
deadline = time.time() + 120
while time.time() < deadline:
    try:
        svcs = s.get('/os-services', endpoint_filter={'service_type': 'volumev3'}).json()['services']
    except Exception:  # the API is still starting
        svcs = []
    if any(x['binary'] == 'cinder-volume' and x['state'] == 'up' for x in svcs):
        sys.exit(0)
    time.sleep(1)
sys.exit('cinder-volume is not up')
PYEOF
}

case "${1:-up}" in
  down) down; exit 0 ;;
  status)
    for f in "$RUN"/*.pid; do [ -f "$f" ] || continue; n=$(basename "$f" .pid)
      if alive "$n"; then echo "$n up"; else echo "$n DOWN"; fi; done; exit 0 ;;
  compute-stop) # host: its nova-compute goes away (a power cut, a reboot); guests are untouched
    [ -n "${2:-}" ] || die "usage: $0 compute-stop <host>"
    p=$(cat "$RUN/nova-compute-$2.pid" 2>/dev/null || true)
    [ -n "$p" ] && { kill -TERM -- -"$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; }
    for _ in $(seq 1 40); do [ -n "$p" ] && kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    rm -f "$RUN/nova-compute-$2.pid"; exit 0 ;;
  compute-kill) # host: a power loss: its nova-compute and its guests' minions die at once
    [ -n "${2:-}" ] || die "usage: $0 compute-kill <host>"
    p=$(cat "$RUN/nova-compute-$2.pid" 2>/dev/null || true)
    [ -n "$p" ] && { kill -KILL -- -"$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; }
    rm -f "$RUN/nova-compute-$2.pid"
    VMOPS_FAKEVM_DIR=$VMS PYTHONPATH=$HERE $PY -c 'import sys, fakevm; print("guests lost:", fakevm.power_loss(sys.argv[1]))' "$2"
    exit 0 ;;
  compute-start) # host: its nova-compute comes back
    [ -n "${2:-}" ] || die "usage: $0 compute-start <host>"
    alive "nova-compute-$2" || start_compute "$2"; exit 0 ;;
  up) ;;
  *) die "usage: $0 up|down|status|compute-stop|compute-kill|compute-start <host>" ;;
esac

mkdir -p "$LOG" "$VMS"
: > "$LOG/setup-phases.txt"

# --------------------------------------------------------------------------- reuse a running cloud
if alive mysqld && curl -s -o /dev/null -m 2 $KS/v3; then
  say "reusing the cloud that already runs in $BASE"
  if ! install_pylib; then
    say "test hypervisor changed: restarting nova-compute"
    for h in $COMPUTES; do
      p=$(cat "$RUN/nova-compute-$h.pid" 2>/dev/null || true)
      [ -n "$p" ] && { kill -TERM -- -"$p" 2>/dev/null || true; }
    done
    sleep 2
    for h in $COMPUTES; do start_compute "$h"; done
  fi
  for h in $COMPUTES; do alive "nova-compute-$h" || start_compute "$h"; done
  cinder_up
  computes_ready || die "computes did not come up"
  resources
  say "READY (clouds.yaml: $BASE/clouds.yaml)"
  exit 0
fi
if alive mysqld || alive rabbitmq; then
  die "a half-running cloud in $BASE: run '$0 down' first"
fi

# --------------------------------------------------------------------------- 1. packages
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  say "apt: installing packages"
  # never let maintainer scripts start daemons (no systemd here anyway)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
  fi
  for q in nova/configure_db nova/configure_rabbit nova/configure_ksat nova/configure_neutron \
           nova/configure_placement neutron/configure_db neutron/configure_rabbit \
           neutron/configure_ksat neutron/configure_nova glance/configure_db \
           glance/configure_rabbit glance/configure_ksat; do
    echo "${q%%/*}-common $q boolean false"
  done | debconf-set-selections
  apt-get update -q >"$LOG/apt-update.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $PKGS \
     >"$LOG/apt-install.log" 2>&1 || { tail -30 "$LOG/apt-install.log"; die "apt failed"; }
  say "apt: done"
fi

# --------------------------------------------------------------------------- 2. layout
[ "${WIPE:-0}" = 1 ] && rm -rf "$DATA"
mkdir -p "$ETC"/{keystone,placement,glance,neutron,nova} "$RUN" "$BIN" "$PYLIB" \
         "$DATA"/{keystone,glance/images,glance/staging,glance/tasks,neutron/lock,nova/lock} \
         "$LOG"/{mysql,rabbitmq} "$DATA"/{mysql,rabbitmq}
chmod 755 "$VMOPS_HOME" "$BASE"
chown mysql:mysql "$DATA/mysql" "$LOG/mysql" "$RUN"
chown -R rabbitmq:rabbitmq "$DATA/rabbitmq" "$LOG/rabbitmq"
install_pylib || true
mkshim nova-api nova.cmd.api
mkshim nova-conductor nova.cmd.conductor
mkshim nova-scheduler nova.cmd.scheduler
mkshim nova-compute nova.cmd.compute
mkshim neutron-server neutron.cmd.eventlet.server
mkshim glance-api glance.cmd.api

# --------------------------------------------------------------------------- 3. configs
cat > "$ETC/my.cnf" <<EOF
[mysqld]
user=mysql
bind-address=127.0.0.1
port=3306
datadir=$DATA/mysql
socket=$RUN/mysqld.sock
pid-file=$RUN/mysqld.mysqlpid
log-error=$LOG/mysql/mysqld.log
skip-name-resolve
max_connections=1000
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
innodb_flush_log_at_trx_commit=2
performance_schema=OFF
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
[client]
socket=$RUN/mysqld.sock
EOF

cat > "$ETC/rabbitmq-env.sh" <<EOF
export RABBITMQ_NODENAME=rabbit@localhost
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=5672
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_DIST_PORT=25672
export RABBITMQ_MNESIA_BASE=$DATA/rabbitmq/mnesia
export RABBITMQ_LOG_BASE=$LOG/rabbitmq
export RABBITMQ_CONFIG_FILE=$ETC/rabbitmq
export RABBITMQ_ENABLED_PLUGINS_FILE=$ETC/rabbitmq-enabled-plugins
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export HOME=/var/lib/rabbitmq
EOF
cat > "$ETC/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:5672
loopback_users.guest = true
vm_memory_high_watermark.absolute = 1GiB
disk_free_limit.absolute = 100MB
EOF
echo "[]." > "$ETC/rabbitmq-enabled-plugins"
chmod 644 "$ETC"/rabbitmq* "$ETC/my.cnf"


cat > "$ETC/keystone/keystone.conf" <<EOF
[DEFAULT]
log_file = $LOG/keystone.log
[database]
connection = $DB/keystone
[token]
provider = fernet
[fernet_tokens]
key_repository = $DATA/keystone/fernet-keys
[fernet_receipts]
key_repository = $DATA/keystone/fernet-keys
[credential]
key_repository = $DATA/keystone/credential-keys
EOF

cat > "$ETC/placement/placement.conf" <<EOF
[DEFAULT]
log_file = $LOG/placement.log
[placement_database]
connection = $DB/placement
[api]
auth_strategy = keystone
$(authtoken placement)
EOF

cp /usr/share/glance-common/glance-api-paste.ini "$ETC/glance/"
cat > "$ETC/glance/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9292
workers = 0
enabled_backends = fs:file
[database]
connection = $DB/glance
$(authtoken glance)
[paste_deploy]
flavor = keystone
config_file = $ETC/glance/glance-api-paste.ini
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $DATA/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $DATA/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $DATA/glance/tasks
[oslo_concurrency]
lock_path = $DATA/glance
EOF

cp /usr/share/neutron-common/api-paste.ini "$ETC/neutron/"
cat > "$ETC/neutron/neutron.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9696
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = $RABBIT
allow_overlapping_ips = true
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
dhcp_agent_notification = false
# 0 = serve the API / state reports in the parent process (saves ~2 x 130 MiB)
api_workers = 0
rpc_workers = 1
rpc_state_report_workers = 0
state_path = $DATA/neutron
api_paste_config = $ETC/neutron/api-paste.ini
[database]
connection = $DB/neutron
$(authtoken neutron)
[nova]
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
region_name = RegionOne
project_name = service
username = nova
password = $PW
[oslo_concurrency]
lock_path = $DATA/neutron/lock
[quotas]
# test cloud: no quota limits (delete for the upstream defaults)
quota_network = -1
quota_subnet = -1
quota_port = -1
quota_router = -1
quota_floatingip = -1
quota_security_group = -1
quota_security_group_rule = -1
EOF
cat > "$ETC/neutron/ml2_conf.ini" <<EOF
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = fakebind
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
[ml2_type_vlan]
network_vlan_ranges = public
[ml2_type_vxlan]
vni_ranges = 1:10000
[ml2_fakebind]
vif_type = ovs
set_port_active = true
EOF

cp /usr/share/nova-common/api-paste.ini "$ETC/nova/"
cat > "$ETC/nova/nova.conf" <<EOF
[DEFAULT]
transport_url = $RABBIT
my_ip = 127.0.0.1
state_path = $DATA/nova
instances_path = $DATA/nova/instances
compute_driver = saltminion_driver.SaltMinionDriver
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
# no real VIFs are ever plugged: do not wait for network-vif-plugged events
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
# fast liveness for tests
report_interval = 5
service_down_time = 30
# the test hypervisor re-adopts its guests; never let the power-state sync stop them
sync_power_state_interval = -1
[wsgi]
api_paste_config = $ETC/nova/api-paste.ini
[api]
auth_strategy = keystone
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 10
[filter_scheduler]
# spread instances over the fake hosts instead of packing them
host_subset_size = 1
build_failure_weight_multiplier = 0
$(authtoken nova)
[service_user]
send_service_user_token = true
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = nova
password = $PW
[placement]
region_name = RegionOne
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = placement
password = $PW
[neutron]
region_name = RegionOne
auth_url = $KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = neutron
password = $PW
default_floating_pool = public
[glance]
region_name = RegionOne
[cinder]
os_region_name = RegionOne
[oslo_concurrency]
lock_path = $DATA/nova/lock
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[quota]
# test cloud: no quota limits (delete this section for the upstream defaults: 10 instances...)
instances = -1
cores = -1
ram = -1
EOF
# DB credentials only for api/conductor/scheduler/nova-manage (nova-compute must not have them)
cat > "$ETC/nova/nova-db.conf" <<EOF
[api_database]
connection = $DB/nova_api
[database]
connection = $DB/nova
EOF
for h in $COMPUTES; do
  mkdir -p "$DATA/nova-$h/instances"
  cat > "$ETC/nova/nova-$h.conf" <<EOF
[DEFAULT]
host = $h
state_path = $DATA/nova-$h
instances_path = $DATA/nova-$h/instances
EOF
done

cat > "$BASE/clouds.yaml" <<EOF
clouds:
  local-admin:
    auth:
      auth_url: $KS/v3
      username: admin
      password: $PW
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  local-demo:
    auth:
      auth_url: $KS/v3
      username: demo
      password: $PW
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
EOF
cat > "$BASE/adminrc" <<EOF
export OS_CLIENT_CONFIG_FILE=$BASE/clouds.yaml
export OS_CLOUD=local-admin
EOF

# --------------------------------------------------------------------------- 4. MariaDB + RabbitMQ
say "mariadb + rabbitmq: starting"
if [ ! -d "$DATA/mysql/mysql" ]; then
  mariadb-install-db --defaults-file="$ETC/my.cnf" --user=mysql \
     --auth-root-authentication-method=socket >"$LOG/mysql-install.log" 2>&1
fi
start mysqld /usr/sbin/mariadbd --defaults-file="$ETC/my.cnf"
start rabbitmq su rabbitmq -s /bin/sh -c ". $ETC/rabbitmq-env.sh; cd /var/lib/rabbitmq; exec /usr/lib/rabbitmq/bin/rabbitmq-server"
rmq() { su rabbitmq -s /bin/sh -c ". $ETC/rabbitmq-env.sh; /usr/lib/rabbitmq/bin/rabbitmqctl -q $*"; }
for i in $(seq 1 120); do mariadb-admin --defaults-file="$ETC/my.cnf" ping >/dev/null 2>&1 && break; sleep 0.5; done
mysql_() { mariadb --defaults-file="$ETC/my.cnf" "$@"; }
for d in keystone placement glance neutron nova_api nova nova_cell0; do
  echo "CREATE DATABASE IF NOT EXISTS $d;"
done | mysql_
mysql_ -e "CREATE USER IF NOT EXISTS 'openstack'@'127.0.0.1' IDENTIFIED BY '$PW';
           CREATE USER IF NOT EXISTS 'openstack'@'localhost' IDENTIFIED BY '$PW';
           GRANT ALL ON *.* TO 'openstack'@'127.0.0.1'; GRANT ALL ON *.* TO 'openstack'@'localhost';
           FLUSH PRIVILEGES;"
for i in $(seq 1 120); do rmq await_startup >/dev/null 2>&1 && break; sleep 1; done
users=$(rmq list_users || true)
grep -q '^openstack' <<<"$users" || rmq add_user openstack "$PW" >/dev/null
rmq set_permissions openstack '".*"' '".*"' '".*"' >/dev/null
say "mariadb + rabbitmq: up"

# --------------------------------------------------------------------------- 5. DB schemas (parallel)
say "db sync: start"
(
  keystone-manage --config-file "$ETC/keystone/keystone.conf" db_sync
  keystone-manage --config-file "$ETC/keystone/keystone.conf" fernet_setup --keystone-user root --keystone-group root
  keystone-manage --config-file "$ETC/keystone/keystone.conf" credential_setup --keystone-user root --keystone-group root
  keystone-manage --config-file "$ETC/keystone/keystone.conf" bootstrap --bootstrap-password "$PW" \
     --bootstrap-admin-url $KS/v3/ --bootstrap-internal-url $KS/v3/ --bootstrap-public-url $KS/v3/ \
     --bootstrap-region-id RegionOne
) >"$LOG/sync-keystone.log" 2>&1 &
P1=$!
( placement-manage --config-dir "$ETC/placement" db sync
  glance-manage --config-file "$ETC/glance/glance-api.conf" db_sync
) >"$LOG/sync-placement-glance.log" 2>&1 &
P2=$!
neutron-db-manage --config-file "$ETC/neutron/neutron.conf" --config-file "$ETC/neutron/ml2_conf.ini" \
   upgrade heads >"$LOG/sync-neutron.log" 2>&1 &
P3=$!
NM="nova-manage --config-file $ETC/nova/nova.conf --config-file $ETC/nova/nova-db.conf"
(
  $NM api_db sync
  cells=$($NM cell_v2 list_cells 2>/dev/null || true)   # (no grep -q in a pipe: pipefail+SIGPIPE)
  grep -q ' cell0 ' <<<"$cells" || $NM cell_v2 map_cell0 --database_connection "$DB/nova_cell0"
  grep -q ' cell1 ' <<<"$cells" || $NM cell_v2 create_cell --name=cell1 --verbose
  $NM db sync
) >"$LOG/sync-nova.log" 2>&1 &
P4=$!
wait $P1 || die "keystone sync failed, see $LOG/sync-keystone.log"
say "db sync: keystone done"

# --------------------------------------------------------------------------- 6. keystone up + catalog
UWSGI="uwsgi --plugin python3 --master --die-on-term --enable-threads --buffer-size 65535 --thunder-lock --add-header Connection:close"
start keystone $UWSGI --procname-prefix keystone- --http-socket 127.0.0.1:5000 --processes 2 --threads 2 \
      --wsgi-file /usr/bin/keystone-wsgi-public --env OS_KEYSTONE_CONFIG_FILES="$ETC/keystone/keystone.conf"
wait_http $KS/v3 120
say "keystone: up"
$PY "$HERE/keystone_catalog.py" "$PW" nova,placement,neutron,glance \
    nova:compute:http://127.0.0.1:8774/v2.1 placement:placement:http://127.0.0.1:8778 \
    neutron:network:http://127.0.0.1:9696 glance:image:http://127.0.0.1:9292 \
    >"$LOG/keystone-catalog.log" 2>&1 || die "catalog bootstrap failed, see logs/keystone-catalog.log"
say "keystone: catalog done"

# --------------------------------------------------------------------------- 7. placement, glance, neutron
wait $P2 || die "placement/glance sync failed, see $LOG/sync-placement-glance.log"
start placement $UWSGI --procname-prefix placement- --http-socket 127.0.0.1:8778 --processes 1 --threads 4 \
      --wsgi-file /usr/bin/placement-api --env OS_PLACEMENT_CONFIG_DIR="$ETC/placement"
start glance-api "$BIN/glance-api" --config-file "$ETC/glance/glance-api.conf" --log-file "$LOG/glance-api.log"
wait $P3 || die "neutron sync failed, see $LOG/sync-neutron.log"
say "db sync: neutron done"
start neutron-server env PYTHONPATH="$PYLIB" "$BIN/neutron-server" --config-file "$ETC/neutron/neutron.conf" \
      --config-file "$ETC/neutron/ml2_conf.ini" --log-file "$LOG/neutron-server.log"

# --------------------------------------------------------------------------- 8. nova
wait $P4 || die "nova sync failed, see $LOG/sync-nova.log"
say "db sync: nova done"
NC="--config-file $ETC/nova/nova.conf"
NCDB="$NC --config-file $ETC/nova/nova-db.conf"
start nova-api "$BIN/nova-api" $NCDB --log-file "$LOG/nova-api.log"
start nova-conductor "$BIN/nova-conductor" $NCDB --log-file "$LOG/nova-conductor.log"
start nova-scheduler "$BIN/nova-scheduler" $NCDB --log-file "$LOG/nova-scheduler.log"
for h in $COMPUTES; do start_compute "$h"; done
wait_http http://127.0.0.1:8778/ 120
wait_http http://127.0.0.1:9292/ 120
wait_http http://127.0.0.1:9696/ 180
wait_http http://127.0.0.1:8774/ 180
say "apis: all answering"
cinder_up

# --------------------------------------------------------------------------- 9. readiness
# all computes up in os-services, and have a resource provider in placement
computes_ready || die "computes did not come up"
nova-manage $NCDB cell_v2 discover_hosts --verbose >"$LOG/discover-hosts.log" 2>&1
say "nova: computes up and mapped: $COMPUTES"

# --------------------------------------------------------------------------- 10. base resources
resources
say "base resources: flavors m1.fake/m1.small/lightspeed, fake-image, public/private, router1"
say "READY (keystone $KS/v3, admin/$PW; clouds.yaml: $BASE/clouds.yaml)"
