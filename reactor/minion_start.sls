# salt/minion/*/start -> orch.provision_minion, once, for a minion the admission
# reactor accepted with provisioning asked for (vmops.create, vmops.expect, or an
# auto-provisioning rule).  Other minions' starts are left alone: nothing runs
# inline here, the orchestration checks the sanity grain, highstates the minion
# and fires vmops/provision/<id>/done with the result.
{%- if salt['vmops.reactor_gate'](tag, data) %}
vmops_provision_minion:
  runner.state.orchestrate:
    - args:
      - mods: orch.provision_minion
      - pillar:
          vmops_minion: {{ data['id'] | json }}
{%- endif %}
