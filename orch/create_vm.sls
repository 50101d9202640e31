# salt-run state.orch orch.create_vm pillar='{vm: app3}'
#
# A new VM, the runbook's way but safe: boot it with the pack's user-data,
# accept its key only when the cloud vouches for it, wait for the minion, check
# the sanity grain, highstate it.  Pillar: vm (required), cloud, overrides
# (e.g. {flavor: lightspeed, level: staging}), expect_level (default: the VM's level),
# timeout.  Settings: vmops:defaults, vmops:vms:<vm>.
{%- set vm = salt['pillar.get']('vm') %}
{%- set cloud = salt['pillar.get']('cloud') %}
{%- set overrides = salt['pillar.get']('overrides', {}) %}
{%- set timeout = salt['pillar.get']('timeout', 300) %}
{%- set level = overrides.get('level', salt['config.get']('vmops:vms:' ~ vm ~ ':level', '')) %}
{%- set expect_level = salt['pillar.get']('expect_level', level) %}

boot_vm:
  salt.runner:
    - name: vmops.create
    - kwarg:
        name: {{ vm | json }}
        cloud: {{ cloud | json }}
        provision: False    # this orchestration highstates it itself, not the reactor
        {%- for key, value in overrides.items() %}
        {{ key }}: {{ value | json }}
        {%- endfor %}

accept_key:
  salt.runner:
    - name: vmops.accept_minion
    - kwarg:
        name: {{ vm | json }}
        cloud: {{ cloud | json }}
        wait: {{ timeout }}
    - require:
      - salt: boot_vm

wait_minion:
  salt.runner:
    - name: vmops.wait_minion
    - kwarg:
        name: {{ vm | json }}
        timeout: {{ timeout }}
    - require:
      - salt: accept_key

{%- if expect_level %}
check_level:
  salt.runner:
    - name: vmops.check_grain
    - kwarg:
        name: {{ vm | json }}
        expected: {{ expect_level | json }}
    - require:
      - salt: wait_minion
{%- endif %}

highstate:
  salt.state:
    - tgt: {{ vm | json }}
    - tgt_type: list
    - highstate: True
    - require:
      - salt: wait_minion
{%- if expect_level %}
      - salt: check_level
{%- endif %}
