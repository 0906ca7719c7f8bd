#!/bin/sh
# Install what `make test` / `make demo` need on a Debian machine, then a venv for pytest.
# Idempotent: apt runs only when a tool is missing; pip only when requirements changed.
set -eu
cd "$(dirname "$0")/.."

APT_PACKAGES="python3 nftables iptables iproute2 wireguard-go wireguard-tools openvpn openssl conntrack iputils-ping kmod chromium chromium-driver strace time ipset"
NEEDED_CMDS="/usr/bin/python3 nft iptables-restore ip6tables-restore ip wireguard-go wg openvpn openssl conntrack chromium chromedriver strace /usr/bin/time ipset"

missing=""
for c in $NEEDED_CMDS; do
	command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "install-deps: installing Debian packages (missing:$missing)"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q
		# shellcheck disable=SC2086
		apt-get install -y -q --no-install-recommends $APT_PACKAGES
	else
		echo "install-deps: missing$missing; run as root on Debian to install them" >&2
	fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
	"$PY" -m venv .venv
fi
stamp=.venv/.requirements-installed
if [ ! -f "$stamp" ] || ! cmp -s requirements-dev.txt "$stamp"; then
	.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	cp requirements-dev.txt "$stamp"
fi
