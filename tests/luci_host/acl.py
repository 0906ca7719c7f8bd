"""rpcd's session ACLs, emulated from the real acl.d files.

rpcd gives a login the ACL groups its `read` and `write` lists match (fnmatch globs, a
leading `!` excludes): for each matched group and permission, every `ubus` entry of that
permission ({object: [methods]}) becomes a grant, and the group itself becomes an
`access-group` grant (what LuCI's menu `depends.acl` asks). A call is allowed when some
grant's object and function globs match it. Write does not imply read: a group's `read`
section is granted by the login's `read` list only, as in rpcd's session.c.
"""

import fnmatch
import glob
import json
import os

# luci-base grants every session the session methods LuCI itself needs (its
# "unauthenticated" group); views rely on `session access` to ask what they may do.
BASELINE = [("ubus", "session", "access"), ("ubus", "session", "login")]


def load_groups(acl_dirs):
    """{group: definition} from every *.json in the given acl.d directories."""
    groups = {}
    for d in acl_dirs:
        for path in sorted(glob.glob(os.path.join(d, "*.json"))):
            with open(path) as f:
                groups.update(json.load(f))
    return groups


def login_permits(patterns, group):
    """rpcd's rpc_login_test_permission for one list (`read` or `write`) of a login."""
    for p in patterns:
        if p.startswith("!") and fnmatch.fnmatchcase(group, p[1:].strip()):
            return False
    return any(not p.startswith("!") and fnmatch.fnmatchcase(group, p.strip()) for p in patterns)


def grants_for(login, groups):
    """[(scope, object glob, function glob)] a session of this login holds."""
    out = list(BASELINE)
    for name, group in groups.items():
        for perm in ("read", "write"):
            if perm not in group or not login_permits(login.get(perm, []), name):
                continue
            out.append(("access-group", name, perm))
            for obj, funcs in group[perm].get("ubus", {}).items():
                out += [("ubus", obj, fn) for fn in funcs]
    return out


def allowed(grants, scope, obj, fn):
    return any(s == scope and fnmatch.fnmatchcase(obj, o) and fnmatch.fnmatchcase(fn, f)
               for s, o, f in grants)
