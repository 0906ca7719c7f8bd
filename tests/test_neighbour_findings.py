"""`check` beside other policy routers (pbr, mwan3, Tailscale): foreign ip rules whose mark
bits overlap main.mark_mask, and foreign rules before ours that take a reply carrying our
mark. The kernel's answers (ip rules, `ip route get ... mark M`) are stubbed here; the lab
proves the same with the real rules (tests/test_lab_neighbours.py)."""

import pytest

MAIN = {"mark_mask": 0xFF000000, "priority": 90}
ROUTING = {
    "rules": [
        {"family": "ipv4", "priority": 89, "fwmark": "0x01000000/0x0f000000", "iif": "wan0", "table": "main", "uplink": "wan"},
        {"family": "ipv4", "priority": 90, "fwmark": "0x01000000/0x0f000000", "table": 4091, "uplink": "wan"},
    ],
    "routes": [{"family": "ipv4", "table": 4091, "dst": "default", "dev": "wan0", "via": "192.0.2.1", "uplink": "wan"}],
}
OURS = [{"priority": 0, "src": "all", "table": "local"},
        {"priority": 89, "src": "all", "iif": "wan0", "fwmark": "0x1000000", "fwmask": "0xf000000", "table": "main"},
        {"priority": 90, "src": "all", "fwmark": "0x1000000", "fwmask": "0xf000000", "table": "4091"},
        {"priority": 32766, "src": "all", "table": "main"},
        {"priority": 32767, "src": "all", "table": "default"}]
PBR = [{"priority": 29998, "src": "all", "table": "main"},
       {"priority": 29999, "src": "all", "fwmark": "0x20000", "fwmask": "0xff0000", "table": "257"},
       {"priority": 30000, "src": "all", "fwmark": "0x10000", "fwmask": "0xff0000", "table": "256"}]
TAILSCALE = [{"priority": 5210, "src": "all", "fwmark": "0x80000", "fwmask": "0xff0000", "table": "main"},
             {"priority": 5270, "src": "all", "table": "52"}]
WG_QUICK = [{"priority": 32765, "src": "all", "fwmark": "0xca6c", "table": "51820"}]


def shifted(items, by):
    return [dict(r, priority=r["priority"] + by) for r in items]


def run(monkeypatch, rules, dev_for_mark=lambda mark: "wan0", main=MAIN, routing=ROUTING):
    """neighbour_findings with the kernel's ip rules `rules`; `ip route get ... mark M` leaves
    by dev_for_mark(M)."""
    from wormhole import diagnostics, facts
    monkeypatch.setattr(facts, "families", lambda: ["ipv4"])
    monkeypatch.setattr(facts, "ip_rules", lambda fam: sorted(rules, key=lambda r: r["priority"]))
    monkeypatch.setattr(facts, "route_get", lambda dest, extra=(): {"dev": dev_for_mark(int(extra[1], 16))})
    return diagnostics.neighbour_findings(main, routing)


def test_nothing_said_without_other_packages(monkeypatch):
    assert run(monkeypatch, OURS) == []


@pytest.mark.parametrize("theirs", [PBR, TAILSCALE, WG_QUICK, PBR + TAILSCALE])
def test_rules_of_others_after_ours_and_outside_our_mask_are_fine(monkeypatch, theirs):
    (f,) = run(monkeypatch, OURS + theirs)
    assert f["check"] == "neighbours" and f["level"] == "ok", f
    assert all(str(r["priority"]) in f["message"] for r in theirs), f


def test_their_mark_bits_inside_our_mask_are_an_error(monkeypatch):
    found = run(monkeypatch, OURS + PBR, main={"mark_mask": 0x00FF0000, "priority": 90})
    assert [f["setting"] for f in found] == ["mark_mask", "mark_mask"], found
    assert all(f["level"] == "error" and "0x00ff0000" in f["message"] and "mark_mask=0xff000000" in f["message"]
               for f in found), found


def test_a_rule_before_ours_that_takes_our_replies_is_an_error(monkeypatch):
    """Tailscale with an exit node and wormhole's rules moved after 5270: table 52 takes them."""
    routing = {"rules": shifted(ROUTING["rules"], 5910), "routes": ROUTING["routes"]}
    rules = OURS[:1] + shifted(OURS[1:3], 5910) + TAILSCALE + OURS[3:]
    (f,) = run(monkeypatch, rules, lambda mark: "tailscale0", {"mark_mask": 0xFF000000, "priority": 6000}, routing)
    assert f["level"] == "error" and f["setting"] == "priority", f
    assert "5270" in f["message"] and "tailscale0" in f["message"] and "priority=90" in f["message"], f


def test_a_policy_rule_before_ours_is_asked_with_its_mark_too(monkeypatch):
    """pbr's VPN policy mark on a reply that also carries ours: pbr's rule 29999 before ours
    sends it into the tunnel, though our mark alone still routes right."""
    routing = {"rules": shifted(ROUTING["rules"], 29920), "routes": ROUTING["routes"]}
    rules = OURS[:1] + PBR + shifted(OURS[1:3], 29920) + OURS[3:]
    (f,) = run(monkeypatch, rules, lambda mark: "wg0" if mark & 0xFF0000 == 0x20000 else "wan0",
               {"mark_mask": 0xFF000000, "priority": 30010}, routing)
    assert f["level"] == "error" and "0x01020000 with that rule's mark" in f["message"], f
    assert "29999" in f["message"] and "wg0" in f["message"] and "priority=90" in f["message"], f


MWAN3 = [{"priority": 1001, "src": "all", "iif": "wan0", "table": "1"},
         {"priority": 2001, "src": "all", "fwmark": "0x100", "fwmask": "0x3f00", "table": "1"},
         {"priority": 2061, "src": "all", "fwmark": "0x3d00", "fwmask": "0x3f00"},
         {"priority": 2062, "src": "all", "fwmark": "0x3e00", "fwmask": "0x3f00"},
         {"priority": 3001, "src": "all", "fwmark": "0x100", "fwmask": "0x3f00"}]


def test_mwan3_rules_leave_our_replies_alone(monkeypatch):
    """mwan3's rules (mask 0x3f00, priorities 1001+) beside ours at 90: one ok finding listing
    them (the tcp_fwmark_accept side effect on its records is gone: render/nft.py mangle_input)."""
    from wormhole import diagnostics, facts
    monkeypatch.setattr(facts, "families", lambda: ["ipv4"])
    monkeypatch.setattr(facts, "ip_rules", lambda fam: sorted(OURS + MWAN3, key=lambda r: r["priority"]))
    monkeypatch.setattr(facts, "route_get", lambda dest, extra=(): {"dev": "wan0"})
    found = diagnostics.neighbour_findings(MAIN, ROUTING)
    assert [f["level"] for f in found] == ["ok"], found
    assert all(p in found[0]["message"] for p in ("1001", "2001", "2061", "2062", "3001")), found
