"""The one host setting wormhole changes for the user, and how it is given back.

net.ipv4.tcp_fwmark_accept (IPv4 and IPv6 TCP alike, per network namespace): a router
service's accepted socket otherwise routes by the main table, into the tunnel, and the
uplink mark restored in output re-routes every reply packet (10-20 % of its throughput,
docs/PERFORMANCE.md, 3). With it, the socket takes the mark of its SYN, which our
prerouting chain set, and routes right from the SYN-ACK on. Only marked SYNs are
affected, so unmarked traffic is unchanged; mwan3 and pbr mark for the same purpose.

Set only while the config has an active TCP exemption and `fwmark_accept` is on; the
value found before is recorded in the applied state and written back when no longer
needed, on disable and on cleanup (kept on record until that write succeeds). A 1 that was
there before wormhole set it is left alone.
"""

from . import paths, schema, system

FWMARK_ACCEPT = paths.FWMARK_ACCEPT
STATE_KEY = "fwmark_accept_saved"   # in the applied record: the value to give back


def fwmark_accept_wanted(cfg):
    return bool(cfg.main.get("enabled") and cfg.main.get("fwmark_accept")
                and any("tcp" in schema.protocols(e.rec["proto"]) for e in cfg.active("exemption")))


def sync_fwmark_accept(wanted, saved, path=FWMARK_ACCEPT):
    """Set or give back the sysctl; returns (value to give back later or None, warnings).

    Never fails an apply: the reply path is right without the sysctl, only slower.
    """
    current = system.read_sys(path)
    if current is None:
        return None, []             # no TCP in this kernel or no /proc: nothing to tune
    if wanted:
        if current == "1":
            return saved, []
        try:
            _write(path, "1")
        except OSError as e:
            return saved, ["could not set net.ipv4.tcp_fwmark_accept=1 (%s); router services "
                           "behind exemptions stay 10-20 %% slower" % (e.strerror or e)]
        return (saved if saved is not None else current), []
    problems = give_back(saved, path)
    return (saved if problems else None), problems     # not written back: try again next time


def give_back(saved, path=FWMARK_ACCEPT):
    """Write back the value found before we set 1, unless someone changed it since."""
    if saved is None or system.read_sys(path) != "1":
        return []
    try:
        _write(path, saved)
    except OSError as e:
        return ["could not restore net.ipv4.tcp_fwmark_accept=%s: %s" % (saved, e.strerror or e)]
    return []


def _write(path, value):
    with open(path, "w") as f:
        f.write(value + "\n")
