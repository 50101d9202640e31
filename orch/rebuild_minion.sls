# salt-run state.orch orch.rebuild_minion pillar='{vm: app2}'
#
# Rebuild a VM in place (same server, same IPs) with a fresh minion identity,
# then highstate it.  Pillar: vm (required), image (default: the configured or
# current one), cloud, timeout (seconds for the minion to answer, default 300).
{%- set vm = salt['pillar.get']('vm') %}

rebuild:
  salt.runner:
    - name: vmops.rebuild_minion
    - kwarg:
        name: {{ vm | json }}
        image: {{ (salt['pillar.get']('image') or None) | json }}
        cloud: {{ (salt['pillar.get']('cloud') or None) | json }}
        timeout: {{ salt['pillar.get']('timeout', 300) }}

highstate:
  salt.state:
    - tgt: {{ vm | json }}
    - tgt_type: list
    - highstate: True
    - require:
      - salt: rebuild
