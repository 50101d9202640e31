# The highstate of the test VMs: a file under the guest's own root_dir.
vmops_test_marker:
  file.managed:
    - name: {{ opts['cachedir'] }}/highstate/marker.txt
    - contents: "highstate of {{ grains['id'] }} at level {{ grains.get('level', 'none') }}"
    - makedirs: True

{%- if pillar.get('vmops_test_fail_highstate') %}
# test switch (pillar of it-hsfail-* minions): this highstate fails
vmops_test_broken_config:
  test.fail_without_changes:
    - name: the new configuration does not apply
{%- endif %}

{%- if pillar.get('vmops_test_slow_highstate') %}
# test switch (pillar of it-slowhs-* minions): a highstate that takes a while
vmops_test_slow_config:
  cmd.run:
    - name: sleep {{ pillar['vmops_test_slow_highstate'] }}
{%- endif %}
