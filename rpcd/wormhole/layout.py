"""The numbers wormhole owns, and how they are laid out: mark bits inside mark_mask,
uplink numbers, ip rule priorities.

Pure and import-free: render writes these numbers into rules, apply and facts recognise
them in the kernel, check compares the two; all of them read the layout here.
"""


class Marks:
    """The mark layout inside mark_mask: uplink number, and three flag bits above it."""

    def __init__(self, mask):
        self.mask = mask
        self.shift = (mask & -mask).bit_length() - 1
        self.uplink = 0xF << self.shift
        self.published = 0x10 << self.shift    # a redirect's flow: accept in forward/input
        self.opened = 0x20 << self.shift       # an exemption with open=1: accept in input
        self.masq = 0x40 << self.shift         # a redirect with snat=1: masquerade

    def of(self, index):
        return index << self.shift


def hexmark(v):
    return "0x%08x" % v


MAX_UPLINKS = 15        # 4 bits of uplink number; 0 means "no uplink"


def assign_uplink_indices(names, previous):
    """Stable uplink numbers 1..15: keep the previous number, give new names the lowest free one.

    Connections carry their uplink number in conntrack, so renumbering a live uplink would
    send its established replies out of the wrong door.
    """
    out = {}
    for name in names:
        idx = previous.get(name)
        if isinstance(idx, int) and 1 <= idx <= MAX_UPLINKS and idx not in out.values():
            out[name] = idx
    free = [i for i in range(1, MAX_UPLINKS + 1) if i not in out.values()]
    for name in sorted((n for n in names if n not in out), key=lambda n: (n != "wan", n)):
        if not free:
            break
        out[name] = free.pop(0)
    return out


MAIN_RULE_PRIORITY = 32766


def fallback_priority(priority):
    """The priority of the after-main rules of point-to-point uplinks (render/routing.py)."""
    return MAIN_RULE_PRIORITY + 1 + priority


# What identifies an ip rule of ours ("src": the after-main rules of point-to-point uplinks).
RULE_KEYS = ("family", "priority", "src", "fwmark", "table", "iif")
