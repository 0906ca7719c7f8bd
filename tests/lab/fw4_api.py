"""The fw4 helpers of a Lab (a mixin of base.Lab): edit a host's emulated
fw4 config and reload it the way fw4 does (one `nft -f` of the whole table).
"""

from pathlib import Path

from . import firewall, fw4_cli, fw4_render


class Fw4Api:
    # --- fw4 emulation ---------------------------------------------------------------

    def fw4(self, host=None):
        """The fw4 config object of host (edit it, then fw4_reload())."""
        return self.fw[host or self.FW4_HOST]

    def fw4_reload(self, root=None, host=None):
        """Render and load host's whole fw4 ruleset in one `nft -f`, with the
        include dirs of `root` (remembered; default: the host's product root)."""
        host = host or self.FW4_HOST
        if root is not None:
            self.roots[host] = Path(root)
        root = self.roots.get(host)
        text = fw4_render.render(self.fw[host], root)
        firewall.load(self.ns[host], text, self.tmp / f"fw4-{host}.nft")
        config = self.tmp / f"fw4-{host}.json"
        config.write_text(firewall.to_json(self.fw[host]))
        if root:
            # what fw4 would read, and a <root>/sbin/fw4 that re-renders this
            # config when the product calls it (and makes it detect fw4)
            firewall.ensure_root_dirs(root)
            (Path(root) / "etc/config/firewall").write_text(firewall.to_uci(self.fw[host]))
            fw4_cli.install_stub(root, config)
        return text

    def fw4_accept_input(self, zone, proto, port, family=None, src_ip=None, name=None,
                         host=None, reload=True):
        """fw4 rule: accept proto/port from `zone` to the host itself."""
        name = name or f"Allow-{zone}-{proto}-{port}"
        return self._fw4_add(host, reload, "rules", firewall.Rule(
            name, src=zone, proto=proto, dest_port=port, family=family, src_ip=src_ip))

    def fw4_accept_forward(self, src, dest, proto, port=None, dest_ip=None, family=None,
                           name=None, host=None, reload=True):
        """fw4 rule: accept forwarded proto/port from zone src to zone dest."""
        name = name or f"Allow-{src}-{dest}-{proto}-{port}"
        return self._fw4_add(host, reload, "rules", firewall.Rule(
            name, src=src, dest=dest, proto=proto, dest_port=port, dest_ip=dest_ip,
            family=family))

    def fw4_redirect(self, src, proto, src_dport, dest_ip=None, dest_port=None, src_dip=None,
                     name=None, host=None, reload=True):
        """fw4 port forward (DNAT in dstnat_<src>, `ct status dnat accept`)."""
        name = name or f"Forward-{src}-{proto}-{src_dport}"
        dest_port = None if dest_port is None else str(dest_port)
        return self._fw4_add(host, reload, "redirects", firewall.Redirect(
            name, src, proto, str(src_dport), dest_ip, dest_port, src_dip))

    def fw4_forwarding(self, src, dest, host=None, reload=True):
        """fw4 `config forwarding`: accept everything from zone src to zone dest."""
        return self._fw4_add(host, reload, "forwardings", (src, dest))

    def _fw4_add(self, host, reload, attr, item):
        """Append item to the fw4 config and reload; an item that does not
        validate or load is taken out again, so the config stays loadable."""
        items = getattr(self.fw4(host), attr)
        items.append(item)
        try:
            self.fw4(host).validate()
            if reload:
                self.fw4_reload(host=host)
        except BaseException:
            items.pop()
            raise
        return item
