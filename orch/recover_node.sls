# salt-run state.orch orch.recover_node pillar='{node: cmp2, fenced: true}'
# salt-run state.orch orch.recover_node pillar='{node: cmp2, fence: {cmd: "ipmitool -I lanplus -H {node}-ipmi -U admin -E chassis power off"}}'
# salt-run state.orch orch.recover_node pillar='{node: cmp2}' test=True        (the plan only)
#
# The Ops Guide's "compute node failure": refuse unless the node's nova-compute is down and
# its minion silent; fence it (a fence command run on the master, or the operator's word);
# force it down and disable it; evacuate its servers (volume-backed by default, local disks
# only with local_disks: rebuild); verify each (host, state, volumes, minion). The node stays
# disabled and forced down: `salt-run vmops.enable_node <node>` once it is repaired.
# Pillar:
#   node          the dead compute host                                       required
#   fenced        true: the operator confirms it is off                        default false
#   fence         {cmd: <command; {node} = the host; exit 0 = off>}            default vmops:recover:fence
#   cloud         a vmops:clouds name                                          default vmops:default_cloud
#   options       {local_disks: report|rebuild, reset_state: false, concurrency: 2,
#                  timeout: 600, force: false}                                default vmops:recover
# A server not recovered fails the orchestration (retcode 1); re-running resumes.
{%- set kwargs = {'node': salt['pillar.get']('node')} %}
{%- for key in ('fenced', 'fence', 'cloud') %}
{%- if salt['pillar.get'](key) not in (None, '') %}{% do kwargs.update({key: salt['pillar.get'](key)}) %}{% endif %}
{%- endfor %}
{%- do kwargs.update(salt['pillar.get']('options', {})) %}

{%- if opts.get('test') %}
{%- do kwargs.update({'test': True}) %}
{%- set plan = salt['saltutil.runner']('vmops.recover_node', kwarg=kwargs) %}
{%- set lines = [] %}
{%- for srv in plan.get('servers', []) %}{% do lines.append(srv['name'] ~ ' (' ~ srv['status'] ~ '): ' ~ srv['plan']) %}{% endfor %}
recover_node_plan:
{%- if plan.get('result', True) is sameas false %}
  test.fail_without_changes:
    - name: {{ (plan.get('comment', '') ~ ('\n' ~ lines | join('\n') if lines else '')) | json }}
{%- else %}
  test.show_notification:
    - text: {{ ('PLAN: ' ~ plan['comment'] ~ ('\n' ~ lines | join('\n') if lines else '')) | json }}
{%- endif %}
{%- else %}
recover_node:
  salt.runner:
    - name: vmops.recover_node
    - kwarg: {{ kwargs | json }}
{%- endif %}
