"""Every golden output is accepted by the real tools, inside a scratch network namespace.

nft -c -f for the ruleset-post file on its own and for the chain-pre snippets placed in a
fw4-like table (as fw4 inlines them), iptables-restore --test / ip6tables-restore --test
for the fw3 files. String checks cannot stand in for the kernel's parser.
"""

import os

import pytest

from tests import support
from wormhole.render import nft as nft_render
from tests.golden_cases import case_names, expected_path

FW4_LIKE = """table inet fw4
flush table inet fw4
table inet fw4 {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept comment "!fw4: Accept traffic from loopback"
%(input)s
		ct state vmap { established : accept, related : accept } comment "!fw4: Handle inbound flows"
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
%(forward)s
		ct state vmap { established : accept, related : accept } comment "!fw4: Handle forwarded flows"
	}
	chain mangle_forward {
		type filter hook forward priority mangle; policy accept;
%(mangle_forward)s
		iifname "eth1" tcp flags syn / syn,fin,rst tcp option maxseg size set rt mtu comment "!fw4: Zone wan IPv4/IPv6 ingress MTU fixing"
	}
}
"""


def _read(case, artifact):
    with open(expected_path(case, artifact)) as f:
        return f.read()


@pytest.fixture(scope="module")
def ns():
    support.require_root_tools("ip", "nft", "iptables-restore", "ip6tables-restore")
    n = support.ScratchNetns()
    yield n
    n.close()


def _check_nft(ns, text, tmp_path, name):
    path = tmp_path / name
    path.write_text(text)
    p = ns.exec(["nft", "-c", "-f", str(path)], check=False)
    assert p.returncode == 0, "nft rejected %s:\n%s\n%s" % (name, p.stderr, text)


@pytest.mark.parametrize("case", case_names())
def test_nft_ruleset_loads(case, ns, tmp_path):
    _check_nft(ns, _read(case, "fw4-ruleset.nft"), tmp_path, "ruleset.nft")


@pytest.mark.parametrize("case", case_names())
def test_chain_pre_snippets_fit_fw4(case, ns, tmp_path):
    snippets = {}
    for chain in nft_render.SNIPPET_CHAINS:
        text = _read(case, "fw4-chain-pre-%s.nft" % chain)
        snippets[chain] = "" if text.startswith("# (file removed)") else "\t\t" + text.strip()
    _check_nft(ns, FW4_LIKE % snippets, tmp_path, "fw4.nft")


@pytest.mark.parametrize("case", case_names())
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_fw3_rules_restore(case, family, ns):
    text = _read(case, "fw3-%s.rules" % family)
    tool = "iptables-restore" if family == "ipv4" else "ip6tables-restore"
    p = ns.exec([tool, "--test", "--noflush"], input=text, check=False)
    assert p.returncode == 0, "%s rejected %s:\n%s\n%s" % (tool, case, p.stderr, text)


def test_the_check_can_fail(ns, tmp_path):
    """A broken rule is rejected: the syntax tests above are not vacuous."""
    p = ns.exec(["nft", "-c", "-f", "/dev/stdin"], input="table inet x { chain c { tcp dport 99999 accept } }", check=False)
    assert p.returncode != 0
    assert os.path.isdir(os.path.dirname(expected_path(case_names()[0], "x")))
