# salt/auth fires on every authentication attempt (pend, accept, reject...):
# react only to a pending key whose id is a plain minion id, and hand the
# decision to the runner, which accepts that exact id only when the cloud
# vouches for the key (one ACTIVE server of that name whose console shows the
# key's fingerprint).  Never key.accept with the id: it is a glob.
{%- set minion_id = data.get('id', '') %}
{%- if data.get('act') == 'pend' and minion_id is match('^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$') %}
vmops_accept_if_vouched:
  runner.vmops.accept_minion:
    - args:
      - name: {{ minion_id | json }}
{%- endif %}
