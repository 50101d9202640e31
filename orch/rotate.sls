# salt-run state.orch orch.rotate pillar='{target: "G@role:app", tgt_type: compound, batch: 2, image: debian-13}'
# salt-run state.orch orch.rotate pillar='{vms: [app1, app2, app3], batch: "50%"}' test=True   (the plan only)
#
# Replace every VM of a role with a new one, batch by batch; each VM by the whole
# orch.replace_vm (plan, identity hand-over, highstate, deploy, health gate, flip, retire).
# Pillar:
#   target, tgt_type  a Salt target (matched on the master: keys, grains cache)  or
#   vms               an explicit list of VM names
#   batch             VMs replaced at once: a number or a percentage ("25%")     default: 1
#   max_failures      failed replacements tolerated before the run stops         default: 0
#   run               an id for a new run (a re-run of the same command resumes the unfinished one)
#   cloud             a vmops:clouds name                                         default: vmops:default_cloud
#   flavor, image, deploy, keep_old, naming, data_volumes... as orch.replace_vm, for every VM
#
# test=True: the plan batch by batch (which VMs the target matched, on which cloud; the
# minions the cloud has no server for; each VM's own replacement plan; the extra servers,
# cores and RAM at the peak against the free quota) and nothing changes.
# Events vmops/rotate/<run>/{plan,batch,vm,stopped,done}; the report lists the VMs done,
# rolled back, failed and not touched.
{%- set passed = ['flavor', 'image', 'key_name', 'security_groups', 'networks', 'metadata',
                  'keep_old', 'keep_failed', 'deploy', 'smoke', 'timeout', 'fip_network',
                  'naming', 'data_volumes', 'pre_detach', 'cutover_state', 'keep_days',
                  'root_size', 'encrypted'] %}
{%- set kwargs = {} %}
{%- for key in ['target', 'tgt_type', 'vms', 'batch', 'max_failures', 'cloud', 'run'] + passed %}
{%-   if salt['pillar.get'](key) not in (None, '') %}{% do kwargs.update({key: salt['pillar.get'](key)}) %}{% endif %}
{%- endfor %}

{%- if opts.get('test') %}
{%- do kwargs.update({'test': True}) %}
{%- set plan = salt['saltutil.runner']('vmops.rotate', kwarg=kwargs) %}
rotate_plan:
{%- if plan is not mapping %}
  test.fail_without_changes:
    - name: {{ ('vmops.rotate failed: ' ~ plan) | json }}
{%- elif plan.get('result', True) is sameas false %}
  test.fail_without_changes:
    - name: {{ plan['comment'] | json }}
{%- else %}
  test.show_notification:
    - text: {{ ('PLAN: ' ~ plan['comment']) | json }}
{%- endif %}

{%- else %}
rotate:
  salt.runner:
    - name: vmops.rotate
    - kwarg: {{ kwargs | json }}
{%- endif %}
