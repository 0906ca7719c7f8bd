"""2. Connections survive: open connections while the rules change under them.

Four streams from the internet client, under an active kill-switch, started before
anything is measured: TCP and UDP to router services through exemptions, TCP and UDP
to the LAN host through port forwards. Each sends every 10 ms and records when the
answer came back. Baseline: the same streams over an idle window of the same run.
Then 100 applies (alternately `inbound add tcp:P` and `inbound del tcp:P`, each a real
change that replaces `table inet wormhole`). Target: no reset, no gap over 100 ms.
(NymVPN's OpenWrt daemon restarts its tunnel about 1 s after every change, and every
open connection dies with it.)
"""

import time

from . import common
from .common import Row, ms
from .streams import TcpStream, UdpStream

SECTION = "2 connections"
APPLIES = 100
QUICK_APPLIES = 20
IDLE_S = 5.0
QUICK_IDLE_S = 2.0
STALL_S = 0.100
INTERVAL_S = 0.010
CHURN_PORT = 9000


def setup(lab, nsx):
    lab.fw4_accept_input(zone="wan", proto="tcp", port=443, reload=False)
    lab.fw4_accept_input(zone="wan", proto="udp", port=5000)
    lab.tcp_server("router", 443, name="router-tcp")
    lab.udp_server("router", 5000)
    lab.tcp_server("lan", 80, name="lan-tcp")
    lab.udp_server("lan", 5001)
    common.write_config(lab, [("ex_tcp", {"proto": "tcp", "port": "443"}), ("ex_udp", {"proto": "udp", "port": "5000"})],
                        [("rd_tcp", {"proto": "tcp", "src_dport": "8080", "dest_ip": lab.lan4, "dest_port": "80"}),
                         ("rd_udp", {"proto": "udp", "src_dport": "5001", "dest_ip": lab.lan4, "dest_port": "5001"})])
    common.cli(nsx, lab, "apply")
    for proto, port in (("tcp", 443), ("udp", 5000), ("tcp", 8080), ("udp", 5001)):
        request = lab.tcp_request if proto == "tcp" else lab.udp_request
        if request("client", lab.wan4, port) is None:
            raise RuntimeError("%s/%d through the router does not answer before the benchmark" % (proto, port))


def run(ctx):
    lab, nsxs = ctx.router_lab(killswitch="metric")
    nsx = nsxs["router"]
    setup(lab, nsx)
    client = lab.ns["client"]
    streams = {
        "TCP via exemption": TcpStream(client, lab.wan4, 443, INTERVAL_S),
        "UDP via exemption": UdpStream(client, lab.wan4, 5000, INTERVAL_S),
        "TCP via port forward": TcpStream(client, lab.wan4, 8080, INTERVAL_S),
        "UDP via port forward": UdpStream(client, lab.wan4, 5001, INTERVAL_S),
    }
    for s in streams.values():
        s.start()
    applies = QUICK_APPLIES if ctx.quick else APPLIES
    idle = QUICK_IDLE_S if ctx.quick else IDLE_S
    try:
        time.sleep(0.5)
        idle_t0 = time.monotonic()
        time.sleep(idle)
        busy_t0 = idle_t1 = time.monotonic()
        durations = _churn(lab, nsx, applies)
        busy_t1 = time.monotonic()
        time.sleep(0.2)
    finally:
        for s in streams.values():
            s.stop()
    rows = [Row(SECTION, "%d applies (add/del alternately)" % applies, "%.1f s" % (busy_t1 - busy_t0),
                note="median %s per apply, streams every %d ms" % (ms(common.median(durations)), INTERVAL_S * 1000),
                data={"apply_s": durations})]
    for name, s in streams.items():
        quiet = s.window(idle_t0, idle_t1, STALL_S)
        busy = s.window(busy_t0, busy_t1, STALL_S)
        total = s.totals()
        ok = total["resets"] == 0 and busy["stalls"] == 0 and busy["answers"] > 0
        lost = (", %d of %d datagrams lost" % (total["lost"], total["sent"])) if name.startswith("UDP") else ""
        rows.append(Row(SECTION, name, "%d resets, %d stalls > %d ms, max gap %s" % (
                            total["resets"], busy["stalls"], STALL_S * 1000, ms(busy["max_gap_s"])),
                        "idle: max gap %s" % ms(quiet["max_gap_s"]),
                        common.ratio(busy["max_gap_s"], quiet["max_gap_s"]), "0 resets, 0 stalls", ok,
                        "%d answers during the applies%s%s" % (busy["answers"], lost,
                                                               ("; " + total["error"]) if total["error"] else ""),
                        {"idle": quiet, "applies": busy, "totals": total}))
    return rows, {}


def _churn(lab, nsx, applies):
    """`applies` real changes: add a port, delete it again, and so on."""
    out = []
    for i in range(applies):
        port = CHURN_PORT + i // 2
        verb = "add" if i % 2 == 0 else "del"
        out.append(common.cli(nsx, lab, "inbound", verb, "tcp:%d" % port).seconds)
    return out
