#!/usr/bin/env bash
# tests/packaging.sh — the packages a router installs, checked the way a router uses them:
#   - the release binary is static and runs alone in an empty chroot and in a
#     busybox-only chroot (`version`, `check-config` on the shipped config);
#   - the .ipk, unpacked with tar as opkg does: members, control fields, conffiles,
#     modes, `sh -n` on the maintainer and init scripts; its files installed into a
#     busybox chroot, the init script's `start` run under a stub procd starts netmon
#     and /healthz answers, and netmon-asn-update fetches an .mmdb there (busybox ash,
#     a stub uclient-fetch);
#   - the systemd unit passes `systemd-analyze verify`; the .deb installs with
#     `dpkg -i` on this machine and netmon started without systemctl answers /healthz.
# Network checks run in a throw-away network namespace (only `lo`): no port clashes.
# Needs root. Everything it creates (temp dirs, mounts, namespaces, processes, the
# installed .deb) is removed on exit, also on failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PORT=8080

passed=0
failed=0
say() { printf '[packaging] %s\n' "$*"; }
die() { printf '[packaging] error: %s\n' "$*" >&2; exit 1; }
# check DESCRIPTION COMMAND...: one counted assertion.
check() {
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        say "ok   $what"
    else
        failed=$((failed + 1))
        say "FAIL $what"
    fi
}

[[ $(id -u) == 0 ]] || die "needs root (chroot, mount, network namespaces, dpkg -i)"

# --- prerequisites ------------------------------------------------------------------
need=()
command -v busybox >/dev/null && busybox --list >/dev/null 2>&1 && file -L "$(command -v busybox)" | grep -q static || need+=(busybox-static)
command -v file >/dev/null || need+=(file)
command -v strip >/dev/null || need+=(binutils)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
BUSYBOX=$(command -v busybox)
if dpkg-query -W -f='${Status}' netmon 2>/dev/null | grep -q 'install ok installed'; then
    die "a netmon .deb is already installed on this machine; this test installs and removes its own (dpkg -r netmon first)"
fi

# --- cleanup ------------------------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/netmon-packaging.XXXXXX")
NS=netmon-pkg-$$
PIDS=()
MOUNTS=()
DEB_INSTALLED=0
cleanup() {
    local pid m
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    if ((DEB_INSTALLED)); then dpkg --purge netmon >/dev/null 2>&1 || true; fi
    # Only after the unmounts: never recurse into a mounted /proc.
    if ! grep -q " $T/" /proc/mounts; then rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build and package --------------------------------------------------------------
scripts/package | tee "$T/package.log"
VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
RELEASE=$(sed -n 's/^PKG_RELEASE:=//p' openwrt/netmon/Makefile)
BIN=target/pkg/netmon
IPK=target/pkg/netmon_${VERSION}-r${RELEASE}_x86_64.ipk
DEB=target/pkg/netmon_${VERSION}-${RELEASE}_amd64.deb
[[ -f $IPK && -f $DEB ]] || die "scripts/package did not produce $IPK and $DEB"
CONF=packaging/netmon.toml

# --- 1. a static binary --------------------------------------------------------------
check "file: statically linked" grep -Eq 'static-pie linked|statically linked' <(file -L "$BIN")
# glibc's ldd says "statically linked" for static-pie, "not a dynamic executable" otherwise.
check "ldd: no dynamic dependencies" grep -Eq 'statically linked|not a dynamic executable' <(ldd "$BIN" 2>&1 || true)

empty=$T/empty
mkdir -p "$empty/etc/netmon"
install -m 0755 "$BIN" "$empty/netmon"
install -m 0644 "$CONF" "$empty/etc/netmon/netmon.toml"
check "empty chroot: netmon version" grep -qx "netmon $VERSION" <(chroot "$empty" /netmon version)
check "empty chroot: netmon check-config" \
    grep -q ': ok$' <(chroot "$empty" /netmon check-config --config /etc/netmon/netmon.toml)

# A busybox-only root filesystem, as small as a router's.
make_busybox_root() {
    mkdir -p "$1/bin" "$1/tmp" "$1/proc" "$1/etc" "$1/var/run" "$1/dev"
    chmod 1777 "$1/tmp"
    mknod -m 0666 "$1/dev/null" c 1 3
    mknod -m 0666 "$1/dev/urandom" c 1 9
    install -m 0755 "$BUSYBOX" "$1/bin/busybox"
    chroot "$1" /bin/busybox --install -s /bin
}
bb=$T/busybox
make_busybox_root "$bb"
mkdir -p "$bb/usr/bin" "$bb/etc/netmon"
install -m 0755 "$BIN" "$bb/usr/bin/netmon"
install -m 0644 "$CONF" "$bb/etc/netmon/netmon.toml"
check "busybox chroot: netmon version" \
    grep -qx "netmon $VERSION" <(chroot "$bb" /bin/sh -c '/usr/bin/netmon version')
check "busybox chroot: netmon check-config" \
    chroot "$bb" /bin/sh -c '/usr/bin/netmon check-config --config /etc/netmon/netmon.toml >/dev/null'

# --- 2. the .ipk ----------------------------------------------------------------------
ipk=$T/ipk
mkdir -p "$ipk/control" "$ipk/data"
# opkg's own layout (OpenWrt scripts/ipkg-build): a gzipped tar of three members.
check "ipk: members ./debian-binary ./data.tar.gz ./control.tar.gz" \
    diff <(printf './debian-binary\n./data.tar.gz\n./control.tar.gz\n') <(tar -tzf "$IPK")
tar -xzf "$IPK" -C "$ipk"
check "ipk: debian-binary is 2.0" diff <(printf '2.0\n') "$ipk/debian-binary"
tar -xzf "$ipk/control.tar.gz" -C "$ipk/control"
tar -xzf "$ipk/data.tar.gz" -C "$ipk/data"
field() { sed -n "s/^$1: //p" "$ipk/control/control"; }
check "ipk: Package netmon" test "$(field Package)" = netmon
check "ipk: Version $VERSION-r$RELEASE" test "$(field Version)" = "$VERSION-r$RELEASE"
check "ipk: Architecture x86_64" test "$(field Architecture)" = x86_64
deps_ok() {
    local d
    for d in kmod-nf-conntrack-netlink kmod-nfnetlink-queue kmod-nfnetlink-log kmod-nft-queue; do
        grep -Eq "(^|, )$d(,|$)" <<<"$(field Depends)" || { echo "Depends lacks $d" >&2; return 1; }
    done
}
check "ipk: Depends lists the netfilter kernel modules" deps_ok
# ipkg-build's Installed-Size: bytes of the uncompressed data tar.
check "ipk: Installed-Size is the data size" \
    test "$(field Installed-Size)" = "$(gzip -dc "$ipk/data.tar.gz" | wc -c)"
check "ipk: Maintainer, License, Description present" \
    test -n "$(field Maintainer)" -a -n "$(field License)" -a -n "$(field Description)"
check "ipk: License is the crate's (Apache-2.0 or MIT), as the feed Makefile says" \
    test "$(field License)" = "Apache-2.0 MIT"
check "ipk: conffiles lists /etc/netmon/netmon.toml" \
    diff <(echo /etc/netmon/netmon.toml) "$ipk/control/conffiles"
check "ipk: conffile is the shipped sample config" cmp "$ipk/data/etc/netmon/netmon.toml" "$CONF"
mode() { stat -c %a "$1"; }
check "ipk: /usr/bin/netmon mode 0755" test "$(mode "$ipk/data/usr/bin/netmon")" = 755
check "ipk: /etc/init.d/netmon mode 0755" test "$(mode "$ipk/data/etc/init.d/netmon")" = 755
check "ipk: /etc/netmon/netmon.toml mode 0600 (it holds the UI password hash)" test "$(mode "$ipk/data/etc/netmon/netmon.toml")" = 600
check "ipk: /usr/bin/netmon-asn-update is scripts/asn-update, mode 0755" \
    sh -c 'cmp -s "$1" "$2" && test "$(stat -c %a "$1")" = 755' _ \
    "$ipk/data/usr/bin/netmon-asn-update" scripts/asn-update
check "ipk: netmon-asn-update passes sh -n (dash and busybox ash)" \
    sh -c 'sh -n "$1" && busybox sh -n "$1"' _ "$ipk/data/usr/bin/netmon-asn-update"
check "ipk: files owned by root" test -z "$(tar -tvzf "$ipk/data.tar.gz" | awk '$2 != "0/0"')"
for s in postinst prerm; do
    check "ipk: $s is executable and passes sh -n" \
        sh -c 'test -x "$1" && sh -n "$1" && busybox sh -n "$1"' _ "$ipk/control/$s"
done
check "ipk: init script passes sh -n (dash and busybox ash)" \
    sh -c 'sh -n "$1" && busybox sh -n "$1"' _ "$ipk/data/etc/init.d/netmon"
# Building a firmware image: the scripts must not touch the build host.
check "ipk: postinst/prerm are no-ops with IPKG_INSTROOT set" \
    env -i PATH=/nonexistent IPKG_INSTROOT="$T/instroot" "$BUSYBOX" sh -c \
    "$BUSYBOX sh '$ipk/control/postinst' && $BUSYBOX sh '$ipk/control/prerm'"
check "feed: Makefile PKG_VERSION equals Cargo.toml's" \
    grep -qx "PKG_VERSION:=$VERSION" openwrt/netmon/Makefile
check "feed: files/netmon.toml is packaging/netmon.toml" cmp openwrt/netmon/files/netmon.toml "$CONF"
check "ipk: LuCI menu entry is valid JSON pointing at the shipped view" \
    sh -c 'python3 -c "import json,sys; m=json.load(open(sys.argv[1])); assert m[\"admin/status/netmon\"][\"action\"][\"path\"] == \"netmon/open\"" "$1" && test -s "$2"' _ \
    "$ipk/data/usr/share/luci/menu.d/netmon.json" "$ipk/data/www/luci-static/resources/view/netmon/open.js"
check "ipk: fw4 include /usr/share/netmon/netmon.nft is what the binary loads" \
    cmp "$ipk/data/usr/share/netmon/netmon.nft" <("$BIN" firewall-rules --config "$CONF")

# The ipk's files in a busybox root; the init script's start under a stub procd.
ow=$T/openwrt
make_busybox_root "$ow"
tar -xzf "$ipk/data.tar.gz" -C "$ow"
mkdir -p "$ow/lib/functions"
# Stub of OpenWrt's /lib/functions/procd.sh: records the instance's parameters and
# launches its command in the background, as procd would.
cat >"$ow/lib/functions/procd.sh" <<'EOF'
_procd_cmd=
procd_open_service() { echo "open_service $*" >>/tmp/procd.log; }
procd_close_service() { echo "close_service" >>/tmp/procd.log; }
procd_open_instance() { _procd_cmd=; echo "open_instance" >>/tmp/procd.log; }
procd_set_param() {
	echo "set_param $*" >>/tmp/procd.log
	if [ "$1" = command ]; then shift; _procd_cmd="$*"; fi
}
procd_close_instance() {
	echo "close_instance" >>/tmp/procd.log
	$_procd_cmd >/tmp/netmon.out 2>&1 &
	echo $! >/tmp/netmon.pid
}
EOF
# Stub of /etc/rc.common for USE_PROCD scripts: `start` is rc_procd's open_service,
# start_service, close_service.
cat >"$ow/etc/rc.common" <<'EOF'
initscript=$1
action=$2
. /lib/functions/procd.sh
. "$initscript"
case $action in
start) procd_open_service "${initscript##*/}"; start_service; rc=$?; procd_close_service; exit $rc ;;
*) echo "stub rc.common: only start" >&2; exit 1 ;;
esac
EOF
# OpenWrt's base-files accounts (the init script adds netmon's).
printf 'root:x:0:0:root:/root:/bin/ash\ndaemon:*:1:1:daemon:/var:/bin/false\nnobody:*:65534:65534:nobody:/var:/bin/false\n' >"$ow/etc/passwd"
printf 'root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n' >"$ow/etc/group"
# The user's one edit: where the UI listens (the chroot has no br-lan).
grep -q '^listen *=' "$ow/etc/netmon/netmon.toml" || die "the shipped config has no 'listen =' line to edit"
sed -i "s|^listen *=.*|listen = [\"127.0.0.1:$PORT\"]|" "$ow/etc/netmon/netmon.toml"
mount -t proc proc "$ow/proc"
MOUNTS+=("$ow/proc")
ip netns add "$NS"
ip -n "$NS" link set lo up
healthz() { ip netns exec "$NS" curl -fsS --max-time 2 "http://127.0.0.1:$PORT/healthz"; }
wait_healthz() {
    local i
    for i in $(seq 1 50); do
        if healthz >"$1" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    return 1
}
check "openwrt root: /etc/init.d/netmon start (stub procd)" \
    ip netns exec "$NS" chroot "$ow" /bin/sh /etc/rc.common /etc/init.d/netmon start
if [[ -s $ow/tmp/netmon.pid ]]; then PIDS+=("$(cat "$ow/tmp/netmon.pid")"); fi
check "procd: command is netmon run --config /etc/netmon/netmon.toml" \
    grep -qx 'set_param command /usr/bin/netmon run --config /etc/netmon/netmon.toml' "$ow/tmp/procd.log"
check "procd: config file watched for reload" \
    grep -qx 'set_param file /etc/netmon/netmon.toml' "$ow/tmp/procd.log"
check "procd: respawn and limits set" \
    sh -c 'grep -q "^set_param respawn" "$1" && grep -q "^set_param limits" "$1"' _ "$ow/tmp/procd.log"
if ! check "openwrt root: netmon answers /healthz" wait_healthz "$T/healthz.ipk"; then
    say "netmon output:"
    cat "$ow/tmp/netmon.out" >&2 || true
fi
check "openwrt root: database in /tmp/netmon" test -f "$ow/tmp/netmon/netmon.db"
# Privileges (README "Privileges"): the init script made the account and gave it the
# config (read-only); netmon switched to it keeping CAP_NET_ADMIN alone.
ow_uid=$(awk -F: '$1 == "netmon" { print $3 }' "$ow/etc/passwd")
ow_gid=$(awk -F: '$1 == "netmon" { print $3 }' "$ow/etc/group")
check "openwrt root: init script created the netmon account" test -n "$ow_uid" -a -n "$ow_gid"
check "openwrt root: config is root:netmon 0640" \
    test "$(stat -c '%u %g %a' "$ow/etc/netmon/netmon.toml")" = "0 $ow_gid 640"
check "openwrt root: /etc/netmon is root:netmon 1770" \
    test "$(stat -c '%u %g %a' "$ow/etc/netmon")" = "0 $ow_gid 1770"
# runs_as PID UID: all four uids are UID, CapEff/CapPrm are CAP_NET_ADMIN (bit 12) alone.
runs_as() {
    local st=/proc/$1/status
    [[ $(awk '/^Uid:/ { print $2, $3, $4, $5 }' "$st") == "$2 $2 $2 $2" ]] &&
        [[ $(awk '/^CapEff:/ { print $2 }' "$st") == 0000000000001000 ]] &&
        [[ $(awk '/^CapPrm:/ { print $2 }' "$st") == 0000000000001000 ]] &&
        [[ $(awk '/^NoNewPrivs:/ { print $2 }' "$st") == 1 ]]
}
if [[ -s $ow/tmp/netmon.pid ]]; then
    check "openwrt root: netmon runs as netmon with CAP_NET_ADMIN only" \
        runs_as "$(cat "$ow/tmp/netmon.pid")" "$ow_uid"
fi
stop_pid() { # PID: SIGTERM, then it must exit within 10 s
    local i
    kill -TERM "$1" 2>/dev/null || return 1
    for i in $(seq 1 50); do
        [[ -d /proc/$1 ]] || return 0
        sleep 0.2
    done
    return 1
}
if [[ -s $ow/tmp/netmon.pid ]]; then
    check "openwrt root: netmon stops on SIGTERM" stop_pid "$(cat "$ow/tmp/netmon.pid")"
fi

# The ASN updater as a router runs it: busybox only, OpenWrt's uclient-fetch (a stub
# serving file:// URLs: no internet here), the .mmdb fixture as the download.
cat >"$ow/usr/bin/uclient-fetch" <<'EOF'
#!/bin/sh
# Stub: uclient-fetch -q -O FILE URL, file:// URLs only.
cp "${4#file://}" "$3"
EOF
chmod 0755 "$ow/usr/bin/uclient-fetch"
ASN_FIXTURE=src/enrich/fixtures/asn-geolite2.mmdb
install -m 0644 "$ASN_FIXTURE" "$ow/tmp/asn-fixture.mmdb"
head -c 1000 "$ASN_FIXTURE" >"$ow/tmp/asn-cut.mmdb"
asn_update() { # URL OUT
    chroot "$ow" /bin/env -i PATH=/usr/bin:/bin ASN_MMDB_URL="$1" \
        /bin/sh /usr/bin/netmon-asn-update "$2" >>"$T/asn-update.log" 2>&1
}
asn_update_fetches() {
    asn_update file:///tmp/asn-fixture.mmdb /etc/netmon/asn.mmdb &&
        cmp -s "$ow/etc/netmon/asn.mmdb" "$ASN_FIXTURE"
}
asn_update_keeps_good_file() {
    ! asn_update file:///tmp/asn-cut.mmdb /etc/netmon/asn.mmdb &&
        cmp -s "$ow/etc/netmon/asn.mmdb" "$ASN_FIXTURE" &&
        test -z "$(find "$ow/etc/netmon" -name '.asn-update.*')"
}
check "openwrt root: netmon-asn-update fetches an .mmdb (busybox, uclient-fetch)" asn_update_fetches
check "openwrt root: netmon-asn-update refuses a truncated .mmdb, keeps the old one" \
    asn_update_keeps_good_file

# --- 3. systemd unit and .deb ---------------------------------------------------------
dpkg -i "$DEB" >"$T/dpkg.log" 2>&1 || { cat "$T/dpkg.log" >&2; die "dpkg -i $DEB failed"; }
DEB_INSTALLED=1
check "deb: dpkg -i installed it" \
    grep -q 'install ok installed' <(dpkg-query -W -f='${Status}' netmon)
check "deb: /etc/netmon/netmon.toml registered as conffile" \
    grep -q '/etc/netmon/netmon.toml' <(dpkg-query -W -f='${Conffiles}' netmon)
check "deb: files installed" test -x /usr/bin/netmon -a -f /usr/lib/systemd/system/netmon.service
check "deb: /usr/bin/netmon-asn-update installed" cmp /usr/bin/netmon-asn-update scripts/asn-update
check "deb: licence texts and attribution installed" test -f /usr/share/doc/netmon/copyright -a -f /usr/share/doc/netmon/LICENSE-MIT -a -f /usr/share/doc/netmon/LICENSE-APACHE
check "deb: postinst created the netmon system account" getent passwd netmon
check "deb: config is root:netmon 0640" \
    test "$(stat -c '%U %G %a' /etc/netmon/netmon.toml)" = "root netmon 640"
for s in postinst prerm postrm; do
    check "deb: $s passes sh -n" sh -n "/var/lib/dpkg/info/netmon.$s"
done
# verify loads the unit offline (no running systemd needed) and checks its directives
# and that ExecStart's binary exists — hence after dpkg -i.
if systemd-analyze verify packaging/netmon.service >"$T/verify.log" 2>&1 && ! grep -q . "$T/verify.log"; then
    check "systemd-analyze verify packaging/netmon.service" true
else
    say "systemd-analyze verify output:"
    cat "$T/verify.log" >&2
    check "systemd-analyze verify packaging/netmon.service" false
fi
[[ -d /run/systemd/system ]] ||
    say "note: systemd is not PID 1 here: the unit's sandboxing is verified statically, not run"
# Start it as an admin would without systemd, on a copy of the shipped config.
sed -e "s|^listen *=.*|listen = [\"127.0.0.1:$PORT\"]|" \
    -e "s|^db_path *=.*|db_path = \"$T/deb-db/netmon.db\"|" /etc/netmon/netmon.toml >"$T/deb.toml"
# netmon switches to the netmon account: it must reach its database under $T.
chmod 0755 "$T"
ip netns exec "$NS" /usr/bin/netmon run --config "$T/deb.toml" >"$T/deb.out" 2>&1 &
deb_pid=$!
PIDS+=("$deb_pid")
if ! check "deb: /usr/bin/netmon run answers /healthz" wait_healthz "$T/healthz.deb"; then
    cat "$T/deb.out" >&2
fi
check "deb: netmon runs as netmon with CAP_NET_ADMIN only" runs_as "$deb_pid" "$(id -u netmon)"
check "deb: netmon stops on SIGTERM" stop_pid "$deb_pid"

# Upgrade in place: the same package one release later (repacked with dpkg-deb, the
# version bumped), over a config the admin edited and a database with history. dpkg
# keeps the edited conffile (--force-confold: what apt does when it cannot ask), the
# maintainer scripts leave the account and the data alone, and netmon starts again on
# the same database with the history it had: here a device its owner named (the run
# before saw no traffic, so the test writes that history itself).
echo "# edited by the admin before the upgrade" >>/etc/netmon/netmon.toml
conf_before=$(sha256sum </etc/netmon/netmon.toml)
# Written and read as the netmon account: a -shm file sqlite3 made as root would lock
# netmon out.
db() { runuser -u netmon -- sqlite3 "$T/deb-db/netmon.db" "$1"; }
now_ms=$(($(date +%s) * 1000))
db "INSERT INTO devices (mac, ip, name, first_seen, last_seen)
    VALUES ('02:00:5e:00:53:99', '10.99.0.99', 'kept-by-upgrade', $now_ms, $now_ms)"
rows() {
    db "SELECT (SELECT count(*) FROM devices) || '/' || (SELECT count(*) FROM flows) || '/' || (SELECT user_version FROM pragma_user_version)"
}
kept() {
    db "SELECT count(*) || '/' || (SELECT user_version FROM pragma_user_version) FROM devices
        WHERE mac = '02:00:5e:00:53:99' AND name = 'kept-by-upgrade'"
}
rows_before=$(rows)
kept_before=$(kept)
uid_before=$(id -u netmon)
dpkg-deb -R "$DEB" "$T/deb-next"
sed -i "s/^Version: .*/Version: ${VERSION}-$((RELEASE + 1))/" "$T/deb-next/DEBIAN/control"
dpkg-deb --root-owner-group -b "$T/deb-next" "$T/netmon-next.deb" >/dev/null
dpkg -i --force-confold "$T/netmon-next.deb" >"$T/dpkg-upgrade.log" 2>&1 ||
    cat "$T/dpkg-upgrade.log" >&2
check "deb upgrade: dpkg -i of the next release over the installed one" \
    test "$(dpkg-query -W -f='${Version}' netmon)" = "${VERSION}-$((RELEASE + 1))"
check "deb upgrade: the edited conffile is kept" \
    test "$(sha256sum </etc/netmon/netmon.toml)" = "$conf_before"
check "deb upgrade: the netmon account is kept" test "$(id -u netmon)" = "$uid_before"
check "deb upgrade: the database is untouched (devices/flows/schema $rows_before)" \
    test "$(rows)" = "$rows_before"
ip netns exec "$NS" /usr/bin/netmon run --config "$T/deb.toml" >"$T/deb2.out" 2>&1 &
deb_pid=$!
PIDS+=("$deb_pid")
if ! check "deb upgrade: netmon starts again on the same database" wait_healthz "$T/healthz.deb2"; then
    cat "$T/deb2.out" >&2
fi
check "deb upgrade: netmon stops on SIGTERM" stop_pid "$deb_pid"
check "deb upgrade: the named device and the schema version are still there ($kept_before)" \
    test "$(kept)" = "$kept_before" -a "${kept_before%%/*}" = 1
dpkg -r netmon >"$T/dpkg.log" 2>&1 || { cat "$T/dpkg.log" >&2; }
check "deb: dpkg -r removes it" test ! -e /usr/bin/netmon
dpkg --purge netmon >/dev/null 2>&1 || true
DEB_INSTALLED=0
# A leftover account would make every later netmon run on this machine switch to it.
check "deb: dpkg --purge removes the netmon account" sh -c '! getent passwd netmon'

grep -o 'stripped binary: .*' "$T/package.log" | sed 's/^/[packaging] /'
echo "packaging: $passed passed, $failed failed"
((failed == 0))
