# The highstate of the test VMs: a file under the guest's own root_dir.
vmops_test_marker:
  file.managed:
    - name: {{ opts['cachedir'] }}/highstate/marker.txt
    - contents: "highstate of {{ grains['id'] }} at level {{ grains.get('level', 'none') }}"
    - makedirs: True
