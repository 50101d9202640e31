"""Keystone catalog of the test cloud (run by cloud.sh with Debian's python3): idempotent.

    keystone_catalog.py PASSWORD USER[,USER...] NAME:TYPE:URL [NAME:TYPE:URL...]

Makes the service and demo projects and the demo user (member of demo), each USER (admin
in the service project), and each service with its public, internal and admin endpoint.
"""

import sys

from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client


def one(mgr, name, **kw):
    found = [x for x in mgr.list(**kw) if x.name == name]
    return found[0] if found else None


def main(pw, users, services):
    ks = client.Client(
        session=session.Session(
            auth=v3.Password(
                auth_url="http://127.0.0.1:5000/v3",
                username="admin",
                password=pw,
                project_name="admin",
                user_domain_id="default",
                project_domain_id="default",
            )
        )
    )
    admin_role = one(ks.roles, "admin")
    member_role = one(ks.roles, "member")
    service = one(ks.projects, "service") or ks.projects.create("service", "default")
    demo = one(ks.projects, "demo") or ks.projects.create("demo", "default")
    demo_user = one(ks.users, "demo") or ks.users.create("demo", domain="default", password=pw)
    ks.roles.grant(member_role, user=demo_user, project=demo)
    for name in users:
        user = one(ks.users, name) or ks.users.create(name, domain="default", password=pw)
        ks.roles.grant(admin_role, user=user, project=service)
    for entry in services:
        name, typ, url = entry.split(":", 2)
        svc = one(ks.services, name) or ks.services.create(name, type=typ)
        have = {e.interface for e in ks.endpoints.list(service=svc)}
        for iface in ("public", "internal", "admin"):
            if iface not in have:
                ks.endpoints.create(svc, url, interface=iface, region="RegionOne")
    print("catalog ok: %s" % ", ".join(users))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","), sys.argv[3:])
