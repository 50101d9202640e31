# salt-run state.orch orch.evacuate_node pillar='{node: cmp1, reason: "disk errors"}'
# salt-run state.orch orch.evacuate_node pillar='{node: cmp1}' test=True        (the plan only)
#
# Drain a compute host (the Ops Guide's maintenance chapter, the Wikimedia and
# Synnefo runbooks): disable its nova-compute with the reason, move every server
# off it by what Nova allows for its state, verify each move, report.  The node
# stays disabled: `salt-run vmops.enable_node <node>` ends the maintenance.
# Pillar:
#   node       the compute host (exact service host name)               required
#   reason     why (goes into the service's disabled reason)             required
#   cloud      a vmops:clouds name                                       default: vmops:default_cloud
#   options    {concurrency: 2, retries: 2, on_timeout: abort|force_complete|wait,
#               stall_seconds: 120, timeout: <s per server>, force: false, target: cmp3,
#               zone: same|any, suspended: report|resume_and_live_migrate,
#               on_error: report|reset_and_cold_migrate, locked: report|move,
#               stop_on_failure: false}                                  default: vmops:evacuate
# A failed or left-behind server fails the orchestration (retcode 1); re-running resumes.
{%- set node = salt['pillar.get']('node') %}
{%- set cloud = salt['pillar.get']('cloud') or None %}
{%- set options = salt['pillar.get']('options', {}) %}

{%- if opts.get('test') %}
{#- test=True: the plan, nothing changes #}
{%- set kwargs = {'node': node, 'cloud': cloud, 'test': True} %}
{%- do kwargs.update(options) %}
{%- set plan = salt['saltutil.runner']('vmops.evacuate_node', kwarg=kwargs) %}
{%- set lines = [] %}
{%- for srv in plan.get('servers', []) %}{% do lines.append(srv['name'] ~ ' (' ~ srv['status'] ~ '): ' ~ srv['plan']) %}{% endfor %}
evacuate_node_plan:
{%- if plan.get('result', True) is sameas false %}
  test.fail_without_changes:
    - name: {{ (plan['comment'] ~ ('\n' ~ lines | join('\n') if lines else '')) | json }}
{%- else %}
  test.show_notification:
    - text: {{ ('PLAN: ' ~ plan['comment'] ~ ('\n' ~ lines | join('\n') if lines else '')) | json }}
{%- endif %}
{%- else %}
evacuate_node:
  salt.runner:
    - name: vmops.evacuate_node
    - kwarg:
        node: {{ node | json }}
        reason: {{ salt['pillar.get']('reason') | json }}
        cloud: {{ cloud | json }}
        {%- for key, value in options.items() %}
        {{ key }}: {{ value | json }}
        {%- endfor %}
{%- endif %}
