# A Copr-style server of the test world (minion ids copr-*): its "services" are a state
# file in the guest's own cache, and every run leaves a line in a log, so a test can tell
# what ran where.  It reads the pack's pillar flag as a real role would:
#   vmops:cutover = pending  (new server, before the window: services disabled)
#                   leaving  (old server, in the window: services stop, volumes unmounted)
#                   done     (new server, in the window: volumes mounted, services start)
#                   back     (old server, rollback: services start again)
{%- set flag = salt['pillar.get']('vmops:cutover') %}
{%- set dir = opts['cachedir'] ~ '/copr' %}
{%- set refuse = flag == 'leaving' and salt['file.file_exists'](dir ~ '/refuse-stop') %}

copr_log:
  file.append:
    - name: {{ dir }}/events.log
    - text: "{{ grains['id'] }} {{ flag or 'plain' }}"
    - makedirs: True

{%- if refuse %}
# test switch: a file refuse-stop in the guest makes its services refuse to stop
copr_services:
  test.fail_without_changes:
    - name: copr-frontend refuses to stop
{%- else %}
copr_services:
  file.managed:
    - name: {{ dir }}/service
    - contents: {{ 'stopped' if flag in ('pending', 'leaving') else 'running' }}
    - makedirs: True
{%- endif %}
