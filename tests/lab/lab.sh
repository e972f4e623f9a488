#!/usr/bin/env bash
# netmon's router lab: network namespaces that stand in for a home network, a router
# and "the internet", so netmon can run inside the router exactly as on a real one.
#
#   lab.sh up NAME [LANS]     build lab NAME with LANS client namespaces (default 1)
#   lab.sh down NAME          tear it down; idempotent, never fails
#   lab.sh shape NAME RATE    throttle wan → lan (tbf on the wan side), e.g. 3mbit
#   lab.sh unshape NAME       remove the throttle
#   lab.sh counters NAME      the router's nft counters (JSON, one line)
#   lab.sh status NAME        namespaces, processes, listeners, counters
#   lab.sh dnsmasq NAME MODE  restart the LAN resolver logging as MODE: file-extra
#                             (default), file, syslog-extra, syslog (see cmd_dnsmasq)
#   lab.sh dhcp NAME I HOST MAC [IP]
#                             turn LAN client I into a DHCP client: MAC on its eth0,
#                             static IPv4 removed, busybox udhcpc asking as HOST (for
#                             IP when given); returns once the lease is applied
#   lab.sh dhcp-release NAME I  client I releases its lease and stops its udhcpc
#   lab.sh list               labs that exist on this machine
#
# Topology (every lab reuses the same addresses: nothing links a lab to the host or to
# another lab, so no packet can leave it):
#
#   NAME-lan   eth0 10.77.0.10/24 fd77::10/64  (MAC 02:77:00:00:00:10)  ─┐
#   NAME-lan2  eth0 10.77.0.11/24 fd77::11/64  (MAC 02:77:00:00:00:11)  ─┤ veth
#   …                                                                    │
#   NAME-rtr   br-lan 10.77.0.1/24 fd77::1/64  (ports lan1, lan2, …)  ◄──┘
#              wan    203.0.113.1/24 2001:db8:77::1/64
#              forwarding v4+v6; nft table inet netmon_lab: masquerade LAN v4 out `wan`,
#              IPv6 routed without NAT; counters of new connections (the router-side
#              truth tests compare netmon with); conntrack accounting + timestamps on;
#              dnsmasq (DNS only) on 10.77.0.1 / fd77::1, the LAN's resolver, logging
#              every query (log-queries=extra) to /tmp/netmon-lab-NAME/dnsmasq-queries.log;
#              it forwards example.test, cdn-provider.test and the wan's reverse zones
#              to the wan's authoritative server and evil.test to .54; socat on :22.
#              The same dnsmasq serves DHCPv4 (10.77.0.100–199, leases in
#              /tmp/netmon-lab-NAME/dnsmasq.leases) to clients that `lab.sh dhcp` starts.
#   NAME-wan   eth0 203.0.113.80/24 (+ .81–.89) 2001:db8:77::80/64 (+ ::81–::89)
#              authoritative DNS (a second dnsmasq) on 203.0.113.53 / 2001:db8:77::53:
#                shop.example.test      A 203.0.113.84  AAAA 2001:db8:77::84
#                cdn.example.test       CNAME edge.cdn-provider.test
#                edge.cdn-provider.test A 203.0.113.85  AAAA 2001:db8:77::85
#                alpha.example.test, beta.example.test  A 203.0.113.86 (one IP, two names)
#                PTR for those addresses; NXDOMAIN for any other example.test name and
#                for the reverse names of the wan's other addresses;
#                TTL 300 s. 203.0.113.54 is free for a test's own (hostile) DNS server.
#              :80 HTTP (python3 http.server; big.bin = 5 MiB, small.bin = 64 KiB)
#              :7/udp echo (socat); :9000 accept-and-close, :9001 sink, :9007/udp echo
#              (netmon-loadgen serve, when the binary is found)
#
# The WAN uses documentation ranges (RFC 5737, RFC 3849), which netmon classifies as
# "the internet". The lan namespaces route everything to the router, the router has no
# default route, and the wan namespace only knows the LAN's IPv6 prefix via the router:
# an address outside the lab is unreachable from every namespace.
#
# Everything a lab starts runs inside one of its namespaces, logs and records its pid in
# /tmp/netmon-lab-NAME/; `down` ends every process in the lab's namespaces, deletes them
# and that directory.
#
# Environment:
#   NETMON_LOADGEN       path of netmon-loadgen (default: target/{debug,release}/ of
#                        this repository, whichever is newer)
#   LAB_CT_TIMEOUTS      "short" (default): UDP/ICMP conntrack timeouts of a few seconds
#                        so tests need not wait 30–120 s for a flow to expire; "default":
#                        the kernel's (the demo uses these).
#   LAB_WAN_DNS_CONF     a dnsmasq config file the wan's authoritative server reads
#                        besides its options above: more of "the internet's" names, e.g.
#                        the demo's ptr-record/host-record lines for every wan address
#                        (default: none, and the header's NXDOMAINs hold).
#   LAB_RTR_DNS_CONF     a dnsmasq config file the LAN resolver (the router's dnsmasq)
#                        reads besides its options: e.g. `server=203.0.113.53`, so that
#                        names outside the zones above are asked of the wan's server as
#                        a router asks its ISP's. `up` keeps a copy in the lab's
#                        directory, which `dnsmasq` restarts read too (default: none).
set -Eeuo pipefail

LAB_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$LAB_HERE/../.." && pwd)

LAN_NET4=10.77.0.0/24
RTR_LAN4=10.77.0.1
RTR_LAN6=fd77::1
RTR_WAN4=203.0.113.1
RTR_WAN6=2001:db8:77::1
WAN4=203.0.113.80
WAN6=2001:db8:77::80
WAN_DNS4=203.0.113.53
WAN_DNS6=2001:db8:77::53

die() { echo "lab.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_name() {
    [[ ${1:-} =~ ^[a-z0-9][a-z0-9_]{0,15}$ ]] ||
        die "lab name '${1:-}' must be 1-16 characters of a-z, 0-9, _ (it prefixes namespace names)"
}

# Namespaces of lab $1 that exist now.
lab_namespaces() {
    local name=$1
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${name}-(lan[0-9]*|rtr|wan)\$" || true
}

lan_ns() { # lan_ns NAME I → NAME-lan, NAME-lan2, …
    if (($2 == 1)); then echo "$1-lan"; else echo "$1-lan$2"; fi
}

# start TAG NS CMD…: runs CMD in NS in its own session, output to TAG.log, pid to TAG.pid.
# `ip netns exec` execs the command itself, so $! is the command's pid.
start() {
    local tag=$1 ns=$2
    shift 2
    setsid ip netns exec "$ns" "$@" >"$DIR/$tag.log" 2>&1 </dev/null &
    echo $! >"$DIR/$tag.pid"
}

# wait_listen NS PROTO ADDR:PORT — until a socket listens there (≤ 10 s).
wait_listen() {
    local ns=$1 proto=$2 want=$3 i flag
    [[ $proto == tcp ]] && flag=-Hltn || flag=-Hlun
    for ((i = 0; i < 200; i++)); do
        if ip netns exec "$ns" ss $flag | awk '{print $4}' | grep -qxF -- "$want"; then
            return 0
        fi
        sleep 0.05
    done
    echo "lab.sh: nothing listens on $proto $want in $ns; logs:" >&2
    tail -n 20 "$DIR"/*.log >&2 || true
    return 1
}

find_loadgen() {
    if [[ -n ${NETMON_LOADGEN:-} ]]; then
        [[ -x $NETMON_LOADGEN ]] || die "NETMON_LOADGEN=$NETMON_LOADGEN is not an executable"
        echo "$NETMON_LOADGEN"
        return
    fi
    local best="" f
    for f in "$REPO/target/debug/netmon-loadgen" "$REPO/target/release/netmon-loadgen"; do
        if [[ -x $f ]] && { [[ -z $best ]] || [[ $f -nt $best ]]; }; then best=$f; fi
    done
    echo "$best"
}

sysctl_ns() { # sysctl_ns NS key=value…
    local ns=$1
    shift
    ip netns exec "$ns" sysctl -q -w "$@" >/dev/null
}

# The LAN resolver's (rtr dnsmasq) options, everything but logging: set in RTR_DNS_OPTS,
# shared by `up` and `dnsmasq` so a restarted resolver answers exactly as before.
# Every name under flood.lab answers with the wan server's address (tests/lab_flood.rs:
# random names, answered locally, whose flows netmon can attribute). Firefox's canary
# use-application-dns.net is answered NXDOMAIN, as the OpenWrt package sets it up.
rtr_dns_opts() {
    local conf=/dev/null
    [[ -f $DIR/rtr-dns.conf ]] && conf=$DIR/rtr-dns.conf
    # shellcheck disable=SC2054 # the commas are inside dnsmasq's option values
    RTR_DNS_OPTS=(--keep-in-foreground --conf-file="$conf" --user=root
        --no-resolv --no-hosts --no-poll --bind-interfaces
        --listen-address="$RTR_LAN4" --listen-address="$RTR_LAN6"
        --pid-file="$DIR/dnsmasq.pidfile" --cache-size=150
        --address=/wan.lab/"$WAN4" --address=/wan.lab/"$WAN6"
        --address=/files.lab/203.0.113.81 --address=/files.lab/2001:db8:77::81
        --address=/burst.lab/203.0.113.82
        --address=/flood.lab/"$WAN4"
        --server=/example.test/"$WAN_DNS4" --server=/cdn-provider.test/"$WAN_DNS4"
        --server=/113.0.203.in-addr.arpa/"$WAN_DNS4"
        --server=/0.0.0.0.7.7.0.0.8.b.d.0.1.0.0.2.ip6.arpa/"$WAN_DNS4"
        --server=/evil.test/203.0.113.54
        --server=/use-application-dns.net/
        --dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h --dhcp-authoritative
        --dhcp-leasefile="$DIR/dnsmasq.leases" --dhcp-option=option:router,"$RTR_LAN4")
}

cmd_up() {
    local name=$1 lans=${2:-1}
    [[ $lans =~ ^[1-9]$ ]] || die "LANS must be 1-9, got '$lans'"
    for tool in ip nft conntrack dnsmasq socat python3 ss tc sysctl setsid; do
        command -v "$tool" >/dev/null || die "missing tool '$tool' (install: nftables conntrack dnsmasq-base iproute2 socat python3 procps util-linux)"
    done
    [[ $(id -u) == 0 ]] || die "must run as root (network namespaces, nftables)"
    [[ -z ${LAB_WAN_DNS_CONF:-} || -r $LAB_WAN_DNS_CONF ]] ||
        die "LAB_WAN_DNS_CONF=$LAB_WAN_DNS_CONF is not a readable file"
    [[ -z ${LAB_RTR_DNS_CONF:-} || -r $LAB_RTR_DNS_CONF ]] ||
        die "LAB_RTR_DNS_CONF=$LAB_RTR_DNS_CONF is not a readable file"

    cmd_down "$name"
    DIR=/tmp/netmon-lab-$name
    mkdir -p "$DIR"
    echo "$lans" >"$DIR/lans"
    [[ -z ${LAB_RTR_DNS_CONF:-} ]] || cp "$LAB_RTR_DNS_CONF" "$DIR/rtr-dns.conf"
    # If anything below fails, leave nothing half-built behind.
    trap 'echo "lab.sh: up $name failed at line $LINENO" >&2; cmd_down "$name"' ERR

    local rtr=$name-rtr wan=$name-wan ns i
    local all=("$rtr" "$wan")
    for ((i = 1; i <= lans; i++)); do all+=("$(lan_ns "$name" "$i")"); done
    for ns in "${all[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # No IPv6 duplicate address detection or autoconfiguration: addresses are usable
        # at once and nothing but what this script configures exists.
        sysctl_ns "$ns" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            net.ipv6.conf.all.dad_transmits=0 net.ipv6.conf.default.dad_transmits=0 \
            net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
            net.ipv6.conf.all.autoconf=0 net.ipv6.conf.default.autoconf=0
    done

    # --- router ---------------------------------------------------------------------
    ip -n "$rtr" link add br-lan type bridge stp_state 0 forward_delay 0
    ip -n "$rtr" link set br-lan up
    ip -n "$rtr" addr add "$RTR_LAN4/24" dev br-lan
    ip -n "$rtr" addr add "$RTR_LAN6/64" dev br-lan nodad
    for ((i = 1; i <= lans; i++)); do
        ns=$(lan_ns "$name" "$i")
        local host=$((9 + i))
        ip -n "$rtr" link add "lan$i" type veth peer name eth0 netns "$ns"
        ip -n "$rtr" link set "lan$i" master br-lan up
        ip -n "$ns" link set eth0 address "02:77:00:00:00:$host" up
        ip -n "$ns" addr add "10.77.0.$host/24" dev eth0
        ip -n "$ns" addr add "fd77::$host/64" dev eth0 nodad
        ip -n "$ns" route add default via "$RTR_LAN4"
        ip -n "$ns" -6 route add default via "$RTR_LAN6"
        # Wide ephemeral range and quick reuse: bursts of tens of thousands of connects.
        sysctl_ns "$ns" net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1
    done
    ip -n "$rtr" link add wan type veth peer name eth0 netns "$wan"
    ip -n "$rtr" link set wan up
    ip -n "$rtr" addr add "$RTR_WAN4/24" dev wan
    ip -n "$rtr" addr add "$RTR_WAN6/64" dev wan nodad
    sysctl_ns "$rtr" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

    nft_rules | ip netns exec "$rtr" nft -f -
    # Per-namespace conntrack settings; the nft ruleset above loaded conntrack here.
    sysctl_ns "$rtr" net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1
    if [[ ${LAB_CT_TIMEOUTS:-short} == short ]]; then
        sysctl_ns "$rtr" net.netfilter.nf_conntrack_udp_timeout=5 \
            net.netfilter.nf_conntrack_udp_timeout_stream=10 \
            net.netfilter.nf_conntrack_icmp_timeout=5 \
            net.netfilter.nf_conntrack_icmpv6_timeout=5
    fi

    # --- wan ------------------------------------------------------------------------
    ip -n "$wan" link set eth0 address 02:77:00:00:00:80 up
    ip -n "$wan" addr add "$WAN4/24" dev eth0
    ip -n "$wan" addr add "$WAN6/64" dev eth0 nodad
    for i in 1 2 3 4 5 6 7 8 9; do
        ip -n "$wan" addr add "203.0.113.8$i/24" dev eth0
        ip -n "$wan" addr add "2001:db8:77::8$i/64" dev eth0 nodad
    done
    for i in 53 54; do
        ip -n "$wan" addr add "203.0.113.$i/24" dev eth0
        ip -n "$wan" addr add "2001:db8:77::$i/64" dev eth0 nodad
    done
    # The internet knows the LAN's routed IPv6 prefix; the LAN's IPv4 is hidden by NAT.
    ip -n "$wan" -6 route add fd77::/64 via "$RTR_WAN6"
    sysctl_ns "$wan" net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 \
        net.ipv4.ip_local_port_range="1024 65535"

    # --- services -------------------------------------------------------------------
    rtr_dns_opts
    start dnsmasq "$rtr" dnsmasq "${RTR_DNS_OPTS[@]}" \
        --log-facility="$DIR/dnsmasq-queries.log" --log-queries=extra
    # The wan's authoritative server ("the internet's DNS"); see the header.
    start dns-auth "$wan" dnsmasq --keep-in-foreground --conf-file="${LAB_WAN_DNS_CONF:-/dev/null}" --user=root \
        --no-resolv --no-hosts --no-poll --bind-interfaces \
        --listen-address="$WAN_DNS4" --listen-address="$WAN_DNS6" \
        --pid-file="$DIR/dns-auth.pidfile" --log-facility="$DIR/dns-auth.log" \
        --local-ttl=300 --local=/example.test/ --local=/cdn-provider.test/ \
        --local=/113.0.203.in-addr.arpa/ --local=/0.0.0.0.7.7.0.0.8.b.d.0.1.0.0.2.ip6.arpa/ \
        --host-record=shop.example.test,203.0.113.84,2001:db8:77::84 \
        --host-record=edge.cdn-provider.test,203.0.113.85,2001:db8:77::85 \
        --cname=cdn.example.test,edge.cdn-provider.test \
        --host-record=alpha.example.test,203.0.113.86 \
        --host-record=beta.example.test,203.0.113.86
    # Stand-in for the router's SSH: a router-local TCP service on the LAN address.
    start ssh4 "$rtr" socat TCP4-LISTEN:22,bind="$RTR_LAN4",reuseaddr,fork \
        SYSTEM:'echo SSH-2.0-netmon-lab; exec cat'
    start ssh6 "$rtr" socat "TCP6-LISTEN:22,bind=[$RTR_LAN6],ipv6only=1,reuseaddr,fork" \
        SYSTEM:'echo SSH-2.0-netmon-lab; exec cat'

    mkdir -p "$DIR/www"
    head -c 5242880 /dev/urandom >"$DIR/www/big.bin"
    head -c 65536 /dev/urandom >"$DIR/www/small.bin"
    echo "netmon lab wan server" >"$DIR/www/index.html"
    # Dual-stack (http.server's DualStackServer clears IPV6_V6ONLY for "::").
    start http "$wan" python3 -m http.server 80 --bind :: --directory "$DIR/www"
    # UDP servers bind the service address itself: a wildcard socket answers from
    # whichever of the many wan addresses the kernel picks, which is a different flow.
    start udpecho4 "$wan" socat UDP4-RECVFROM:7,bind="$WAN4",reuseaddr,fork PIPE
    start udpecho6 "$wan" socat "UDP6-RECVFROM:7,bind=[$WAN6],ipv6only=1,reuseaddr,fork" PIPE
    local loadgen
    loadgen=$(find_loadgen)
    if [[ -n $loadgen ]]; then
        start loadgen-serve "$wan" "$loadgen" serve \
            --tcp 0.0.0.0:9000 --tcp "[::]:9000" --sink 0.0.0.0:9001 --sink "[::]:9001" \
            --udp "$WAN4:9007" --udp "[$WAN6]:9007"
    else
        echo "lab.sh: netmon-loadgen not found (cargo build --bin netmon-loadgen, or set NETMON_LOADGEN): no :9000/:9001/:9007 servers" >&2
    fi

    wait_listen "$rtr" udp "$RTR_LAN4:53"
    wait_listen "$rtr" udp "[$RTR_LAN6]:53"
    wait_listen "$rtr" tcp "$RTR_LAN4:22"
    wait_listen "$wan" udp "$WAN_DNS4:53"
    wait_listen "$rtr" tcp "[$RTR_LAN6]:22"
    wait_listen "$wan" tcp "*:80"
    wait_listen "$wan" udp "$WAN4:7"
    wait_listen "$wan" udp "[$WAN6]:7"
    if [[ -n $loadgen ]]; then
        wait_listen "$wan" tcp "0.0.0.0:9000"
        wait_listen "$wan" tcp "[::]:9000"
        wait_listen "$wan" tcp "0.0.0.0:9001"
    fi
    trap - ERR
    echo "lab $name up: namespaces ${all[*]}; state in $DIR"
}

nft_rules() {
    cat <<EOF
table inet netmon_lab {
	# Router-side truth for "new connections": one increment per new conntrack entry
	# forwarded (lan↔wan), and per new entry addressed to the router itself.
	counter new_conns { }
	counter new_tcp { }
	counter new_udp { }
	counter new_icmp { }
	counter new_local { }

	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state new counter name "new_conns"
		ct state new meta l4proto tcp counter name "new_tcp"
		ct state new meta l4proto udp counter name "new_udp"
		ct state new meta l4proto { icmp, ipv6-icmp } counter name "new_icmp"
	}

	chain input {
		type filter hook input priority filter; policy accept;
		ct state new counter name "new_local"
		# The lab router's one refusal (firewall drops): new TCP connections
		# from the wan to ports 1000-1999 of the router. Everything else stays open.
		iifname "wan" ct state new tcp dport 1000-1999 drop
	}

	# The tests and the demo reach netmon's web server on the router's loopback. Keep
	# that traffic out of conntrack, so that watching netmon adds no flows to watch.
	chain raw_prerouting {
		type filter hook prerouting priority raw; policy accept;
		iif "lo" notrack
	}

	chain raw_output {
		type filter hook output priority raw; policy accept;
		oif "lo" notrack
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" ip saddr $LAN_NET4 masquerade
	}
}
EOF
}

cmd_down() {
    local name=$1 ns pid i
    local dir=/tmp/netmon-lab-$name
    local nss
    nss=$(lab_namespaces "$name")
    # Every process of the lab lives in one of its namespaces (started there by this
    # script, the tests or the demo): end exactly those, TERM first, then KILL.
    local pids=()
    for ns in $nss; do
        mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns" 2>/dev/null || true)
    done
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            local alive=""
            for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && alive+=" $pid"; done
            [[ -z $alive ]] && break
            sleep 0.05
        done
        for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    for ns in $nss; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$dir" 2>/dev/null || true
    return 0
}

cmd_shape() {
    local name=$1 rate=${2:-}
    [[ -n $rate ]] || die "usage: lab.sh shape NAME RATE (e.g. 3mbit)"
    # Token bucket on the wan side: downloads from the wan are held to RATE. A burst of
    # 32 KiB is enough for the rate at HZ granularity; GSO packets larger than the burst
    # are segmented by tbf.
    ip netns exec "$name-wan" tc qdisc replace dev eth0 root tbf rate "$rate" burst 32kb latency 400ms
}

cmd_unshape() {
    ip netns exec "$1-wan" tc qdisc del dev eth0 root 2>/dev/null || true
}

cmd_counters() {
    ip netns exec "$1-rtr" nft -j list counters table inet netmon_lab
}

cmd_status() {
    local name=$1 ns
    for ns in $(lab_namespaces "$name"); do
        echo "== $ns"
        ip -n "$ns" -br addr
        echo "-- processes"
        for pid in $(ip netns pids "$ns"); do echo "  $pid $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null)"; done
        echo "-- listeners"
        ip netns exec "$ns" ss -Hltun | sed 's/^/  /'
    done
    echo "== counters"
    ip netns exec "$name-rtr" nft list counters table inet netmon_lab 2>/dev/null || true
}

# cmd_dnsmasq NAME MODE: restarts the LAN resolver with the same DNS options and another
# way of logging queries (netmon's dnsmasq log source is tested against each):
#   file-extra   --log-facility=$DIR/dnsmasq-queries.log --log-queries=extra (as `up`)
#   file         the same file, --log-queries (no serial/client prefix)
#   syslog-extra dnsmasq logs to /dev/log; a relay receives the raw datagrams
#   syslog       ("<30>Nov 24 22:03:18 dnsmasq[123]: …", kept in $DIR/dnsmasq-syslog.raw)
#                and writes them as rsyslog's traditional format
#                ("Nov 24 22:03:18 NAME-rtr dnsmasq[123]: …") to $DIR/dnsmasq-syslog.log
# For the syslog modes dnsmasq runs in its own mount namespace (unshare -m) where a
# directory with the relay's socket as `log` (and null/zero/random/urandom bound from the
# real /dev) is mounted over /dev: the host's /dev/log, if any, is never touched.
cmd_dnsmasq() {
    local name=$1 mode=${2:-file-extra} rtr=$1-rtr pid i
    DIR=/tmp/netmon-lab-$name
    [[ -d $DIR ]] || die "no lab $name (lab.sh up $name first)"
    local logq
    case $mode in
    file-extra | syslog-extra) logq=--log-queries=extra ;;
    file | syslog) logq=--log-queries ;;
    *) die "usage: lab.sh dnsmasq NAME file-extra|file|syslog-extra|syslog" ;;
    esac
    for tag in dnsmasq dnsmasq-relay; do
        [[ -f $DIR/$tag.pid ]] || continue
        pid=$(cat "$DIR/$tag.pid")
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$DIR/$tag.pid"
    done
    rtr_dns_opts
    case $mode in
    file*)
        start dnsmasq "$rtr" dnsmasq "${RTR_DNS_OPTS[@]}" \
            --log-facility="$DIR/dnsmasq-queries.log" "$logq"
        ;;
    syslog*)
        local dev=$DIR/syslog-dev n
        mkdir -p "$dev"
        rm -f "$dev/log"
        start dnsmasq-relay "$rtr" python3 -c '
import os, socket, sys
sock_path, out_path, raw_path, host = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock_path)
os.chmod(sock_path, 0o666)
out = open(out_path, "a", buffering=1)
raw = open(raw_path, "a", buffering=1)
while True:
    msg = s.recv(65536).decode("utf-8", "replace").rstrip("\n")
    raw.write(msg + "\n")
    # "<PRI>Mmm dd hh:mm:ss TAG: MSG" -> rsyslog traditional "Mmm dd hh:mm:ss HOST TAG: MSG"
    if msg.startswith("<") and ">" in msg:
        body = msg[msg.index(">") + 1:]
        out.write(body[:15] + " " + host + " " + body[16:] + "\n")
' "$dev/log" "$DIR/dnsmasq-syslog.log" "$DIR/dnsmasq-syslog.raw" "$rtr"
        for ((i = 0; i < 100; i++)); do
            [[ -S $dev/log ]] && break
            sleep 0.05
        done
        [[ -S $dev/log ]] || die "the syslog relay did not create $dev/log"
        for n in null zero random urandom; do : >"$dev/$n"; done
        # shellcheck disable=SC2016
        start dnsmasq "$rtr" unshare -m sh -c '
dev=$1; shift
for n in null zero random urandom; do mount --bind /dev/$n "$dev/$n"; done
mount --rbind "$dev" /dev
exec dnsmasq "$@"' sh "$dev" "${RTR_DNS_OPTS[@]}" "$logq"
        ;;
    esac
    wait_listen "$rtr" udp "$RTR_LAN4:53"
    wait_listen "$rtr" udp "[$RTR_LAN6]:53"
    echo "lab $name: dnsmasq restarted, logging $mode"
}

# cmd_dhcp NAME I HOST MAC [IP]: see the header. The client keeps running (renewals),
# logged to udhcpc-I.log; `down` ends it with the namespace's other processes.
cmd_dhcp() {
    local name=$1 i=$2 host=$3 mac=$4 want=${5:-} n
    DIR=/tmp/netmon-lab-$name
    [[ -d $DIR ]] || die "no lab $name"
    local ns
    ns=$(lan_ns "$name" "$i")
    [[ $mac =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ ]] || die "MAC must be aa:bb:cc:dd:ee:ff, got '$mac'"
    stop_udhcpc "$i"
    ip -n "$ns" link set eth0 address "$mac"
    ip -n "$ns" -4 addr flush dev eth0
    local args=(-f -i eth0 -s "$LAB_HERE/udhcpc.script" -x "hostname:$host" -t 10 -T 1 -A 1)
    [[ -n $want ]] && args+=(-r "$want")
    start "udhcpc-$i" "$ns" busybox udhcpc "${args[@]}"
    for ((n = 0; n < 200; n++)); do
        if ip -n "$ns" -4 -o addr show dev eth0 | grep -q inet; then
            ip -n "$ns" -4 -o addr show dev eth0 | awk '{print $4}'
            return 0
        fi
        sleep 0.05
    done
    cat "$DIR/udhcpc-$i.log" >&2 || true
    die "client $i got no DHCP lease"
}

stop_udhcpc() { # stop_udhcpc I [SIGNAL]: signal (default none), then end client I's udhcpc
    local pidfile=$DIR/udhcpc-$1.pid pid n
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    [[ -d /proc/$pid ]] || return 0
    if [[ -n ${2:-} ]]; then
        kill "-$2" "$pid" 2>/dev/null || true
        sleep 0.3
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((n = 0; n < 100; n++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# cmd_dhcp_release NAME I: SIGUSR2 makes udhcpc send DHCPRELEASE and deconfigure.
cmd_dhcp_release() {
    DIR=/tmp/netmon-lab-$1
    [[ -d $DIR ]] || die "no lab $1"
    stop_udhcpc "$2" USR2
}

main() {
    local cmd=${1:-}
    case $cmd in
    up)
        check_name "${2:-}"
        cmd_up "$2" "${3:-1}"
        ;;
    down)
        check_name "${2:-}"
        cmd_down "$2"
        ;;
    shape)
        check_name "${2:-}"
        cmd_shape "$2" "${3:-}"
        ;;
    unshape)
        check_name "${2:-}"
        cmd_unshape "$2"
        ;;
    counters)
        check_name "${2:-}"
        cmd_counters "$2"
        ;;
    status)
        check_name "${2:-}"
        cmd_status "$2"
        ;;
    dnsmasq)
        check_name "${2:-}"
        cmd_dnsmasq "$2" "${3:-file-extra}"
        ;;
    dhcp)
        check_name "${2:-}"
        [[ ${3:-} =~ ^[1-9]$ && -n ${4:-} && -n ${5:-} ]] || usage
        cmd_dhcp "$2" "$3" "$4" "$5" "${6:-}"
        ;;
    dhcp-release)
        check_name "${2:-}"
        [[ ${3:-} =~ ^[1-9]$ ]] || usage
        cmd_dhcp_release "$2" "$3"
        ;;
    list)
        ip netns list 2>/dev/null | awk '{print $1}' | sed -nE 's/^(.*)-rtr$/\1/p'
        ;;
    *) usage ;;
    esac
}

main "$@"
