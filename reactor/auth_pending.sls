# salt/auth -> vmops.admit_minion: accept a pending key only when the cloud vouches for it.
#
# salt/auth fires on EVERY authentication attempt (a pending minion retries every
# few seconds).  vmops.reactor_gate (no cloud call) lets through only act=pend
# (and act=denied: a second key for an id another host holds pending) of a plain
# minion id (ids with glob/list characters are audited and dropped: any
# key call with them could match other keys), at most once per id per
# vmops:reactor:retry_interval, within vmops:reactor:max_decisions_per_minute,
# and not for a key refused for good a moment ago.  The runner decides against
# the cloud, accepts that exact id or refuses, and fires vmops/key/<id>/accepted
# or .../refused with the reason.
{%- if data.get('act') in ('pend', 'denied') and salt['vmops.reactor_gate'](tag, data) %}
vmops_admit_minion:
  runner.vmops.admit_minion:
    - args:
      - name: {{ data['id'] | json }}
{%- endif %}
