"""Facts that do not need a kernel: netifd dumps and stable uplink numbers."""

from wormhole import facts
from wormhole.layout import assign_uplink_indices

# Shaped like `ubus call network.interface dump` on OpenWrt 24.10: IPv4 on `wan`,
# DHCPv6 on its sibling `wan6` (same device), a WireGuard interface, and the LAN.
DUMP = {"interface": [
    {"interface": "lan", "up": True, "l3_device": "br-lan", "device": "br-lan", "route": []},
    {"interface": "wan", "up": True, "l3_device": "eth1", "device": "eth1", "proto": "dhcp",
     "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "192.0.2.1", "source": "192.0.2.2/32"}]},
    {"interface": "wan6", "up": True, "l3_device": "eth1", "device": "eth1", "proto": "dhcpv6",
     "route": [{"target": "::", "mask": 0, "nexthop": "fe80::1", "source": "2001:db8:2::2/128"}]},
    {"interface": "wg0", "up": True, "l3_device": "wg0", "proto": "wireguard",
     "route": [{"target": "0.0.0.0", "mask": 1, "nexthop": "0.0.0.0"}]},
    {"interface": "wan2", "up": False, "device": "eth2", "inactive": {
        "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "198.51.100.1"}]}},
]}


def test_netifd_dump_gateways():
    got = facts.parse_netifd_dump(DUMP)
    assert got["wan"] == {"device": "eth1", "gateway": "192.0.2.1", "gateway6": "fe80::1", "up": True}
    assert got["wan6"]["gateway6"] == "fe80::1" and got["wan6"]["gateway"] is None
    assert got["wg0"] == {"device": "wg0", "gateway": None, "gateway6": None, "up": True}
    assert got["wan2"] == {"device": "eth2", "gateway": "198.51.100.1", "gateway6": None, "up": False}
    assert got["lan"]["gateway"] is None


def test_netifd_dump_tolerates_junk():
    assert facts.parse_netifd_dump({}) == {}
    assert facts.parse_netifd_dump({"interface": [{"up": True}, {"interface": "x"}]}) == \
        {"x": {"device": None, "gateway": None, "gateway6": None, "up": False}}


def test_uplink_numbers_are_stable():
    first = assign_uplink_indices(["wan", "wan2"], {})
    assert first == {"wan": 1, "wan2": 2}
    # a new uplink that sorts first must not renumber the live ones
    assert assign_uplink_indices(["awan", "wan", "wan2"], first) == {"wan": 1, "wan2": 2, "awan": 3}
    # a removed uplink frees its number; the others keep theirs
    assert assign_uplink_indices(["wan2"], first) == {"wan2": 2}
    assert assign_uplink_indices(["wan9", "wan2"], {"wan2": 2}) == {"wan2": 2, "wan9": 1}


def test_uplink_numbers_reject_bad_state():
    assert assign_uplink_indices(["wan", "b"], {"wan": 99, "b": "x"}) == {"wan": 1, "b": 2}
    assert assign_uplink_indices(["a", "b"], {"a": 3, "b": 3}) == {"a": 3, "b": 1}


def test_at_most_fifteen_uplinks():
    names = ["u%02d" % i for i in range(20)]
    got = assign_uplink_indices(names, {})
    assert sorted(got.values()) == list(range(1, 16)) and len(got) == 15
