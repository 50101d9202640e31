# The configuration of saltext-vmops: the `vmops` key.
#
# Where it goes: the master config (master.d/vmops.conf: best for credentials,
# which the runners and orchestration read there) and/or pillar (per-VM
# settings; pillar wins key by key).  Minions that call the execution module
# (salt-call vmops.*) read it with config.get: their pillar or minion config.
vmops:
  # Which cloud the functions use when none is given (cloud=<name>).
  default_cloud: dreamcompute

  clouds:
    # An OpenStack cloud by its clouds.yaml entry.  clouds.yaml is searched the
    # openstacksdk way (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack,
    # /etc/openstack) unless client_config_file names it.
    dreamcompute:
      driver: openstack
      cloud: dreamcompute
      # client_config_file: /etc/openstack/clouds.yaml
      # api_timeout: 60        # seconds one API request may take (a stalled API fails the call)
      # retries: 2             # a read (or a set-to-a-value call) the cloud fails with 500/502/
      # retry_delay: 0.5       #   503/504 or a dropped connection is asked again, back-off x2
      #                        #   up to 5 s; creates, deletes, attaches, migrations never are
      # region_name: RegionOne
      # all_projects: false      # find servers in every project (admin)
      # Defaults for new VMs on this cloud (between vmops:defaults and vmops:vms:<vm>)
      defaults:
        image: Ubuntu-22.04
        networks: [private-network]

    # ... or an OpenStack cloud by an auth block (keep it in master config or a
    # pillar only the master sees; the pack never returns, logs or fires it).
    # lab:
    #   driver: openstack
    #   auth:
    #     auth_url: https://keystone.example.com:5000/v3
    #     username: ops
    #     password: s3cret
    #     project_name: ops
    #     user_domain_name: Default
    #     project_domain_name: Default
    #   region_name: RegionOne

    # An EC2 region.  Credentials: boto3's usual chain (instance profile,
    # environment, ~/.aws) unless given here.
    aws:
      driver: ec2
      region_name: us-east-1
      termination_protection: true   # new instances get DisableApiTermination
      # availability_zone: us-east-1a  # where new EBS volumes are made (default: the region's first)
      # endpoint_url: http://127.0.0.1:5000   # e.g. a moto server
      defaults:
        image: ami-0123456789abcdef0
        flavor: t3.small
        networks: [subnet-0123456789abcdef0]
        security_groups: [sg-0123456789abcdef0]

  # Where new VMs find this master: written into their user-data.
  master:
    address: salt.example.com
    # port: 4506

  # Defaults for every new VM.
  defaults:
    flavor: supersonic
    key_name: ops-staging
    security_groups: [default, frontend]
    boot_timeout: 600          # seconds to ACTIVE
    grains: {}                 # extra grains for every new VM
    minion_config: {}          # extra minion settings (e.g. {hash_type: sha256})
    cloud_config: {}           # extra cloud-config (packages, runcmd...) merged into the user-data
    # volumes: [{size: 50, device: /dev/vdb, type: ssd}]   # extra volumes made at boot; they
    #                                                      # outlive the server unless
    #                                                      # delete_on_termination: true

  # The admission reactor (vmops:reactor) and auto-provisioning rules
  # (vmops:autoprovision) are read on the master by the reactor: put them in the
  # master config, see master.d/vmops.conf beside this file.

  # Evacuating compute nodes (salt-run vmops.evacuate_node, orch.evacuate_node);
  # each can also be given to the command.  Shown: the defaults.
  evacuate:
    concurrency: 1             # migrations in flight from the node (others' included)
    retries: 2                 # a failed migration is tried again this often
    on_timeout: abort          # stuck live migration: abort | force_complete | wait
    stall_seconds: 120         # memory/disk remaining not shrinking this long: stuck
    timeout: null              # seconds per server (default: timeout_per_gib x RAM GiB, min 2)
    timeout_per_gib: 800       # Nova's live_migration_completion_timeout
    stop_on_failure: false     # true: no new migration after a server failed for good
    force: false               # true: go on when Placement says the servers will not fit
    target: null               # one host to move everything to (default: the scheduler picks)
    zone: same                 # same: targets in the node's availability zone | any
    suspended: report          # report | resume_and_live_migrate
    on_error: report           # report | reset_and_cold_migrate
    locked: report             # report | move
    sweeps: 2                  # extra listings of the node at the end (late arrivals)
    settle_seconds: 30         # how long a sweep waits for servers busy with another task
    poll_interval: 0.5         # first poll; back-off while nothing changes ...
    max_poll_interval: 2.0     # ... up to this

  # The grain the runbook's sanity check reads (orch.replace_vm's sanity step,
  # orch.create_vm's check, the reactor's provisioning check).
  sanity_grain: level

  # Per VM: overrides of the defaults.  `level` is the value of the sanity grain:
  # both a grain of the new VM and what the check expects (salt app2 grains.get level).
  # orch.replace_vm reads `deploy` here when its pillar gives none:
  #   {sls: app.deploy} | {cmd: 'wpd-deploy app'} | {orchestrate: orch.deploy_app}
  vms:
    app2:
      flavor: lightspeed
      level: staging
      deploy:
        cmd: wpd-deploy app
