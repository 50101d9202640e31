# salt-run state.orch orch.rolling_maintenance pillar='{nodes: [cmp1, cmp2, cmp3], batch: 1, maintenance: {sls: compute.upgrade}, reboot: true}'
# salt-run state.orch orch.rolling_maintenance pillar='{nodes: [cmp1, cmp2, cmp3]}' test=True   (the plan only)
#
# The Ops Guide's planned maintenance of compute nodes, the Synnefo rolling
# upgrade and the Wikimedia host reboot checklist, as one resumable command:
# for each batch of nodes: evacuate, run the maintenance on the node's own
# minion, reboot (optional; a new boot id and nova-compute up with a fresh
# heartbeat), health gate, enable (and migrate back, optional).  Each node is
# gated by the runner itself, step by step; the run stops at the first
# failure with the failing node disabled and the others in service, and a
# re-run resumes there.
# Pillar:
#   nodes          compute hosts, in order                                required
#   batch          nodes out at once: a number or "50%"                    default 1
#   maintenance    {sls: <state>} | {cmd: <command>} | {orch: <orch>}      default none
#   reboot         true | false                                            default false
#   check          {sls: <state>} | {cmd: <command>}: must pass to enable  default none
#   migrate_back   true | false                                            default false
#   reason         goes into the disabled reason                           default "rolling maintenance"
#   cloud          a vmops:clouds name                                     default vmops:default_cloud
#   evacuation     evacuation options ({concurrency: 2, ...})              default vmops:evacuate
#   options        reboot_timeout, service_timeout, force, poll_interval
{%- set kwargs = {} %}
{%- for key in ('nodes', 'batch', 'maintenance', 'reboot', 'check', 'migrate_back', 'reason', 'cloud', 'evacuation') %}
{%- if salt['pillar.get'](key) not in (None, '') %}{% do kwargs.update({key: salt['pillar.get'](key)}) %}{% endif %}
{%- endfor %}
{%- do kwargs.update(salt['pillar.get']('options', {})) %}

{%- if opts.get('test') %}
{%- do kwargs.update({'test': True}) %}
{%- set plan = salt['saltutil.runner']('vmops.rolling_maintenance', kwarg=kwargs) %}
{%- set lines = [] %}
{%- for node in plan.get('nodes', []) %}
{%- do lines.append('batch ' ~ node['batch'] ~ ' ' ~ node['node'] ~ ': ' ~ node['steps'] | join('; ') ~ ' | free while out: ' ~ node['free_while_out'] | json) %}
{%- endfor %}
rolling_maintenance_plan:
{%- if plan.get('result', True) is sameas false %}
  test.fail_without_changes:
    - name: {{ (plan.get('comment', '') ~ ('\n' ~ lines | join('\n') if lines else '')) | json }}
{%- else %}
  test.show_notification:
    - text: {{ ('PLAN: ' ~ plan['comment'] ~ ('\n' ~ lines | join('\n') if lines else '')) | json }}
{%- endif %}
{%- else %}
rolling_maintenance:
  salt.runner:
    - name: vmops.rolling_maintenance
    - kwarg: {{ kwargs | json }}
{%- endif %}
