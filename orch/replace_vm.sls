# salt-run state.orch orch.replace_vm pillar='{vm: app2}'
# salt-run state.orch orch.replace_vm pillar='{vm: app2, flavor: lightspeed}' test=True   (the plan only)
#
# Replace a VM with a new one of the same name, without downtime (the WebPlatform
# runbook, made safe).  Pillar:
#   vm            the VM (a plain minion id)                              required
#   cloud         a vmops:clouds name                                     default: vmops:default_cloud
#   flavor, image, key_name, security_groups, networks, metadata         the new VM's spec (default: the old one's)
#   keep_old      delete | stop | rename  (the old VM, after the flip)     default: delete
#   keep_failed   true: a failed new VM is kept, stopped, as <vm>-failed   default: false
#   deploy        {sls: app.deploy} | {cmd: 'wpd-deploy app'} | {orchestrate: orch.deploy}
#                 (default: vmops:vms:<vm>:deploy; none: no deploy step)
#   smoke         true: smoke-test through a temporary floating IP        default: false
#   timeout       seconds for the new minion to answer                    default: 300
#   fip_network   multi-homed new VM: the network whose port takes the    default: the network
#                 floating IPs (decided before the point of no return)     the IPs are on now
#   naming        same | suffix (<vm>-new until the cut-over, then         default: same (OpenStack),
#                 <vm>-old and <vm>, as the Copr runbook does)                      suffix (EC2)
#   data_volumes  none | move | [names or ids] | {tag: {k: v}}: moved      default: none
#                 in an outage window (the Copr flow, see below)
#   pre_detach    SLS the old server runs in the window (stop, unmount)    default: its highstate,
#                                                                          vmops:cutover=leaving
#   cutover_state SLS the new server runs in the window (mount, start)     default: its highstate,
#                                                                          vmops:cutover=done
#   keep_days     keep_old=stop: days the stopped old server is kept       default: 2
#   root_size, encrypted   the new server's root disk (EC2)                default: the old one's
#
# With data volumes: the old minion moves to the id <vm>-old (a key of its own) before the
# new server takes <vm>; the new server's highstate runs with pillar vmops:cutover=pending
# (services disabled); then the outage window (step cutover): the old server's services stop,
# the volumes move (same devices), the new server's cut-over state, the IPs move, a health
# gate.  A failure before the gate rolls back to the old server (volumes, services, IPs).
#
# Nothing is lost: the old VM keeps its floating IPs until the new one passed
# highstate and deploy; any failure before that rolls back (new VM deleted, old
# key and minion back) and the run exits non-zero naming the failed step.
# Re-running after an interruption resumes; a second run while one is going is refused.
# Giving up on an interrupted run: salt-run vmops.replace_vm app2 step=abandon (both
# servers stay; the report says where the IPs and the id's key are).
{%- set vm = salt['pillar.get']('vm') %}
{%- set cloud = salt['pillar.get']('cloud') or None %}
{%- set spec_keys = ['flavor', 'image', 'key_name', 'security_groups', 'networks', 'metadata'] %}
{%- set window_keys = ['naming', 'data_volumes', 'pre_detach', 'cutover_state', 'keep_days', 'root_size', 'encrypted'] %}
{%- set deploy = salt['pillar.get']('deploy') or salt['config.get']('vmops:vms:' ~ vm ~ ':deploy', {}) %}
{%- set smoke = salt['pillar.get']('smoke', False) %}
{%- set timeout = salt['pillar.get']('timeout', 300) %}
{%- set token = salt['test.random_hash']() %}
{#- Each step is the state vmops.replace_step: the same code as the runner
    vmops.replace_vm (salt-run vmops.replace_vm <vm> step=...), run in this orchestration's
    own process (a salt.runner state would build a runner client per step). #}
{%- macro step(name) %}
  vmops.replace_step:
    - name: {{ name }}
    - vm: {{ vm | json }}
    - cloud: {{ cloud | json }}
    - token: {{ token }}
    - timeout: {{ timeout }}
    {%- if name == 'plan' %}
    - keep_old: {{ salt['pillar.get']('keep_old', 'delete') | json }}
    - keep_failed: {{ salt['pillar.get']('keep_failed', False) | json }}
    - fip_network: {{ salt['pillar.get']('fip_network') | json }}
    {%- for key in window_keys if salt['pillar.get'](key) not in (None, '') %}
    - {{ key }}: {{ salt['pillar.get'](key) | json }}
    {%- endfor %}
    {%- for key in spec_keys if salt['pillar.get'](key) %}
    - {{ key }}: {{ salt['pillar.get'](key) | json }}
    {%- endfor %}
    {%- endif %}
{%- endmacro %}

{%- if opts.get('test') %}
{#- test=True: show the plan, change nothing #}
{%- set kwargs = {'name': vm, 'step': 'plan', 'test': True, 'cloud': cloud} %}
{%- for key in spec_keys if salt['pillar.get'](key) %}{% do kwargs.update({key: salt['pillar.get'](key)}) %}{% endfor %}
{%- for key in window_keys if salt['pillar.get'](key) not in (None, '') %}{% do kwargs.update({key: salt['pillar.get'](key)}) %}{% endfor %}
{%- for key in ['keep_old', 'fip_network'] if salt['pillar.get'](key) %}{% do kwargs.update({key: salt['pillar.get'](key)}) %}{% endfor %}
{%- set plan = salt['saltutil.runner']('vmops.replace_vm', kwarg=kwargs) %}
replace_vm_plan:
{%- if plan.get('result', True) is sameas false %}
  test.fail_without_changes:
    - name: {{ plan['comment'] | json }}
{%- else %}
  test.show_notification:
    - text: {{ ('PLAN: ' ~ plan['comment'] ~ ' (deploy: ' ~ (deploy or 'none') ~ ', smoke test: ' ~ smoke ~ ')') | json }}
{%- endif %}

{%- else %}
plan:
{{- step('plan') }}

boot:
{{- step('boot') }}
    - require:
      - vmops: plan

wait_minion:
{{- step('wait') }}
    - require:
      - vmops: boot

sanity:
{{- step('sanity') }}
    - require:
      - vmops: wait_minion

{#- The highstate runs through the runner, which waits for its return in the master's job
    cache (not on the event bus, as salt.state does): a master restarted meanwhile or a
    killed run does not lose it, and a resumed run waits for the job it started. #}
highstate:
{{- step('highstate') }}
    - require:
      - vmops: sanity

{%- if deploy %}
deploy:
{%- if deploy.get('sls') %}
  salt.state:
    - tgt: {{ vm | json }}
    - tgt_type: list
    - sls: {{ deploy['sls'] | json }}
    - queue: True
{%- elif deploy.get('cmd') %}
  salt.function:
    - name: cmd.run
    - tgt: {{ vm | json }}
    - tgt_type: list
    - arg:
      - {{ deploy['cmd'] | json }}
    - kwarg:
        python_shell: True
{%- else %}
  salt.runner:
    - name: state.orchestrate
    - arg:
      - {{ deploy['orchestrate'] | json }}
{%- endif %}
    - require:
      - vmops: highstate
{%- endif %}

{%- if deploy %}
deploy_passed:
{{- step('deploy') }}
    - require:
      - salt: deploy
{%- endif %}

{#- the outage window (a skip unless the plan moves data volumes) #}
cutover:
{{- step('cutover') }}
    - require:
      - vmops: highstate
{%- if deploy %}
      - vmops: deploy_passed
{%- endif %}

checks_passed:
{{- step('checked') }}
    - require:
      - vmops: cutover

{%- if smoke %}
smoke_test:
{{- step('smoke') }}
    - require:
      - vmops: checks_passed
{%- endif %}

flip_floating_ips:
{{- step('flip') }}
    - require:
      - vmops: checks_passed
{%- if smoke %}
      - vmops: smoke_test
{%- endif %}

retire_old_vm:
{{- step('retire') }}
    - require:
      - vmops: flip_floating_ips

rollback:
{{- step('rollback') }}
    - onfail:
      - vmops: boot
      - vmops: wait_minion
      - vmops: sanity
      - vmops: highstate
{%- if deploy %}
      - salt: deploy
      - vmops: deploy_passed
{%- endif %}
      - vmops: cutover
      - vmops: checks_passed
{%- endif %}
