# salt-run state.orch vmops_test.states pillar='{vm: ..., address: ..., host: ...}'
# The pack's states, run on the master (orchestration), as an operator would.
{%- set vm = salt['pillar.get']('vm') %}
{%- set address = salt['pillar.get']('address') %}
{%- set host = salt['pillar.get']('host') %}

server:
  vmops.server_present:
    - name: {{ vm }}

address:
  vmops.floating_ip_associated:
    - name: {{ address }}
    - server: {{ vm }}
    - require:
      - vmops: server

compute_host:
  vmops.compute_service_disabled:
    - name: {{ host }}
    - reason: integration test maintenance
