# salt/minion/*/start -> provisioning, once, for a minion the admission reactor accepted
# with provisioning asked for (vmops.create, vmops.expect, or an auto-provisioning rule).
# Other minions' starts are left alone.  Provisioning checks the sanity grain, highstates
# the minion and fires vmops/provision/<id>/done with the result: by default the runner
# vmops.provision_minion does it in one call (cheap when a burst of minions starts: an
# orchestration per minion costs the reactor's process a state compiler each); an
# auto-provisioning rule's `orchestration`, or vmops:reactor:provision_orchestration
# (e.g. orch.provision_minion, or an orchestration of your own that ends the same way),
# runs that orchestration instead.
{%- if salt['vmops.reactor_gate'](tag, data) %}
{%- set orchestration = salt['vmops.provision_orchestration'](data['id']) %}
vmops_provision_minion:
{%- if orchestration %}
  runner.state.orchestrate:
    - args:
      - mods: {{ orchestration | json }}
      - pillar:
          vmops_minion: {{ data['id'] | json }}
{%- else %}
  runner.vmops.provision_minion:
    - args:
      - name: {{ data['id'] | json }}
{%- endif %}
{%- endif %}
