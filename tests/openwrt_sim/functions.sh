# Test double of OpenWrt's /lib/functions.sh: default_postinst and default_prerm, the two
# functions the maintainer-script wrappers of an .ipk call. Behaviour follows OpenWrt's
# base-files: with IPKG_INSTROOT set (an image being built) only the package's own script
# runs and init scripts are enabled through $IPKG_INSTROOT/etc/rc.common; on a running
# system uci-defaults run (and are deleted), the LuCI cache is cleared, and init scripts
# are enabled (not on upgrade) and started. prerm mirrors it: stop, and disable unless
# PKG_UPGRADE=1. Both package managers, as base-files does: apk's scripts export $pkgname
# and ship the file list as /lib/apk/packages/<pkg>.list; opkg's pass the script path ($1)
# and keep /usr/lib/opkg/info/<pkg>.list. add_group_and_user is a no-op: our packages
# ask for no users (no Require-User / .rusers).

add_group_and_user() { :; }

default_postinst() {
	local root="${IPKG_INSTROOT}"
	[ -z "$pkgname" ] && local pkgname="$(basename "${1%.*}")"
	local filelist="$root/usr/lib/opkg/info/$pkgname.list"
	[ -f "$root/lib/apk/packages/$pkgname.list" ] && filelist="$root/lib/apk/packages/$pkgname.list"
	local ret=0 i

	if [ -z "$root" ]; then
		for i in $(grep -s "^/etc/uci-defaults/" "$filelist"); do
			( [ -f "$i" ] && cd "$(dirname "$i")" && . "$i" ) && rm -f "$i"
		done
		uci commit
		rm -f /tmp/luci-indexcache.*
	fi

	if [ -f "$root/usr/lib/opkg/info/$pkgname.postinst-pkg" ]; then
		( . "$root/usr/lib/opkg/info/$pkgname.postinst-pkg" )
		ret=$?
	fi

	for i in $(grep -s "^/etc/init.d/" "$filelist"); do
		if [ -n "$root" ]; then
			sh "$root/etc/rc.common" "$root$i" enable
		else
			[ "$PKG_UPGRADE" = "1" ] || "$i" enable
			"$i" start
		fi
	done
	return $ret
}

default_prerm() {
	local root="${IPKG_INSTROOT}"
	[ -z "$pkgname" ] && local pkgname="$(basename "${1%.*}")"
	local filelist="$root/usr/lib/opkg/info/$pkgname.list"
	[ -f "$root/lib/apk/packages/$pkgname.list" ] && filelist="$root/lib/apk/packages/$pkgname.list"
	local ret=0 i

	if [ -f "$root/usr/lib/opkg/info/$pkgname.prerm-pkg" ]; then
		( . "$root/usr/lib/opkg/info/$pkgname.prerm-pkg" )
		ret=$?
	fi

	for i in $(grep -s "^/etc/init.d/" "$filelist"); do
		if [ -n "$root" ]; then
			sh "$root/etc/rc.common" "$root$i" disable
		else
			[ "$PKG_UPGRADE" = "1" ] || "$i" disable
			"$i" stop
		fi
	done
	return $ret
}
