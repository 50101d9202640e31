# salt-run state.orch orch.provision_minion pillar='{vmops_minion: web-7f3a}'
#
# Started by reactor/minion_start.sls when a minion the admission reactor
# accepted starts: check it answers and has the expected sanity grain (level),
# highstate it, and record the outcome (vmops/provision/<id>/done).
{%- set minion = salt['pillar.get']('vmops_minion') %}

{#- The pack's steps are the state vmops.provision_step: the same code as the runner
    vmops.provision (salt-run vmops.provision <id> step=...), run in this orchestration's
    own process (a salt.runner state would build a runner client per step). #}
check_minion:
  vmops.provision_step:
    - name: check
    - minion: {{ minion | json }}

highstate:
  salt.state:
    - tgt: {{ [minion] | json }}
    - tgt_type: list
    - highstate: True
    - require:
      - vmops: check_minion

provisioned:
  vmops.provision_step:
    - name: done
    - minion: {{ minion | json }}
    - result: True
    - require:
      - salt: highstate

provisioning_failed:
  vmops.provision_step:
    - name: done
    - minion: {{ minion | json }}
    - result: False
    - onfail_any:
      - vmops: check_minion
      - salt: highstate
