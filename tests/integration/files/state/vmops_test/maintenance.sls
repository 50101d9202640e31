# A compute host's "maintenance" in the test world: fails on a host whose cachedir holds
# the marker file (the test puts it there, then takes it away to resume).
{%- if salt['file.file_exists'](opts['cachedir'] ~ '/vmops-test-fail-maintenance') %}
maintenance_fails:
  test.fail_without_changes:
    - name: the upgrade broke on {{ grains['id'] }}
{%- else %}
maintenance_done:
  test.succeed_with_changes:
    - name: upgraded {{ grains['id'] }} (run {{ pillar.get('vmops', {}).get('maintenance') }})
{%- endif %}
