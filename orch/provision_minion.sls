# salt-run state.orch orch.provision_minion pillar='{vmops_minion: web-7f3a}'
#
# Started by reactor/minion_start.sls when a minion the admission reactor
# accepted starts: check it answers and has the expected sanity grain (level),
# highstate it, and record the outcome (vmops/provision/<id>/done).
{%- set minion = salt['pillar.get']('vmops_minion') %}

check_minion:
  salt.runner:
    - name: vmops.provision
    - kwarg:
        name: {{ minion | json }}
        step: check

highstate:
  salt.state:
    - tgt: {{ [minion] | json }}
    - tgt_type: list
    - highstate: True
    - require:
      - salt: check_minion

provisioned:
  salt.runner:
    - name: vmops.provision
    - kwarg:
        name: {{ minion | json }}
        step: done
        result: True
    - require:
      - salt: highstate

provisioning_failed:
  salt.runner:
    - name: vmops.provision
    - kwarg:
        name: {{ minion | json }}
        step: done
        result: False
    - onfail_any:
      - salt: check_minion
      - salt: highstate
