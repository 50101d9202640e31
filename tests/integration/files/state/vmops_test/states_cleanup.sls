{%- set vm = salt['pillar.get']('vm') %}
{%- set host = salt['pillar.get']('host') %}

server_gone:
  vmops.server_absent:
    - name: {{ vm }}

compute_host_back:
  vmops.compute_service_enabled:
    - name: {{ host }}
