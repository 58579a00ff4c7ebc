#!/usr/bin/env bash
# rackd demo: a client and a server host behind a router (network namespaces), rackd on both,
# an unmodified program streaming data both ways through a 30 s outage and then a change of the
# client's address, `rackctl status` before, during and after each, and the digests of what each
# end sent and received compared at the end.
# Everything the demo creates (namespaces, rules, processes, files) is removed on exit, also on
# Ctrl-C or error. Run as root after building rackd, rackctl and rk-stream (`make demo` does it).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/debug

OUTAGE_S=30                 # how long the path is cut
PACE=$((256 * 1024))        # bytes per second, each direction
BYTES=$((PACE * 50))        # ~50 s of data: the transfer spans the outage and the move
PORT=5001
CLIENT_IP=192.0.2.2 SERVER_IP=198.51.100.2
CLIENT_NEW_IP=192.0.2.3     # where the client moves after the outage

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { printf '\n\033[1;31mdemo FAILED: %s\033[0m\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the demo creates network namespaces)"
for prog in rackd rackctl rk-stream; do
  [ -x "$BIN/$prog" ] ||
    die "$BIN/$prog is missing; build: cargo build -p rackd -p rackctl -p netns-tests --bins"
done
for tool in ip nft; do command -v "$tool" >/dev/null || die "$tool not found (run make deps)"; done

tag="rkdemo$$"
CLIENT="$tag-client" ROUTER="$tag-router" SERVER="$tag-server"
DIR=$(mktemp -d /tmp/rackd-demo.XXXXXX)
pids=()

# Ends a process of ours by pid: TERM, then KILL if it is still there after 3 s.
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Deletes a namespace after ending (by pid) whatever still runs in it.
remove_netns() {
  local p
  for p in $(ip netns pids "$1" 2>/dev/null); do stop "$p"; done
  ip netns del "$1" 2>/dev/null || true
}

# A process that has been waited for is no longer ours to end (its pid may be reused).
forget() {
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

cleanup() {
  local p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do stop "$p"; done
  for ns in "$CLIENT" "$SERVER" "$ROUTER"; do remove_netns "$ns"; done
  rm -rf "$DIR"
}
trap cleanup EXIT
# Says where the script stopped (once: not again in each subshell of a failed pipeline).
trap 'failed=$?; [ "$BASHPID" != $$ ] || echo "demo: a command failed (status $failed) at line $LINENO" >&2' ERR
trap 'printf "\ninterrupted; cleaning up\n"; exit 130' INT
trap 'exit 143' TERM

# Namespaces left by an earlier demo that was killed outright (its shell's pid is gone).
for ns in $(ip netns list | awk '{print $1}' | grep -E '^rkdemo[0-9]+-(client|router|server)$' || true)
do
  owner=${ns#rkdemo}; owner=${owner%%-*}
  kill -0 "$owner" 2>/dev/null && continue
  echo "removing $ns, left by an earlier demo"
  remove_netns "$ns"
done

# (Background programs are started with `ip netns exec` itself, not this function, so that $! is
# the program's own pid.)
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
# Sleeps until $1 ms (a now_ms value); at once if that is past.
sleep_until() {
  local ms=$(( $1 - $(now_ms) ))
  [ "$ms" -le 0 ] || sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
}

say "network: client ($CLIENT_IP) —— router —— server ($SERVER_IP)"
for ns in "$CLIENT" "$ROUTER" "$SERVER"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$ROUTER" link add to-client type veth peer name eth0 netns "$CLIENT"
ip -n "$ROUTER" link add to-server type veth peer name eth0 netns "$SERVER"
ip -n "$ROUTER" addr add 192.0.2.1/24 dev to-client
ip -n "$ROUTER" addr add 198.51.100.1/24 dev to-server
ip -n "$CLIENT" addr add "$CLIENT_IP/24" dev eth0
ip -n "$SERVER" addr add "$SERVER_IP/24" dev eth0
for ns in "$CLIENT" "$SERVER"; do ip -n "$ns" link set eth0 up; done
ip -n "$ROUTER" link set to-client up
ip -n "$ROUTER" link set to-server up
ip -n "$CLIENT" route add default via 192.0.2.1
ip -n "$SERVER" route add default via 198.51.100.1
in_ns "$ROUTER" sysctl -qw net.ipv4.ip_forward=1
# The outage is made by drop rules in the router's own table, in its forward chain.
in_ns "$ROUTER" nft -f - <<'EOF'
table inet rkdemo {
  chain forward { type filter hook forward priority filter - 10; policy accept; }
}
EOF
# TCP retransmits unacknowledged data about tcp_retries2 times before it aborts the connection
# (default 15: ~15 minutes). At 3 a plain TCP connection with data in flight dies within seconds
# of an outage, so anything that survives the 30 s below survives because of rackd.
for ns in "$CLIENT" "$SERVER"; do in_ns "$ns" sysctl -qw net.ipv4.tcp_retries2=3; done
echo "namespaces $CLIENT, $ROUTER, $SERVER; router forwards; tcp_retries2=3 on client and server"
echo "(so plain TCP would give up within seconds of the outage below)"

say "rackd on client and server (heartbeat every 250 ms, failure detected after 1.5 s)"
cat >"$DIR/rackd.toml" <<'EOF'
[monitor]
heartbeat_interval_ms = 250
detect_after_ms = 1500
EOF
declare -A SOCK=([client]="$DIR/client.sock" [server]="$DIR/server.sock")
declare -A NS=([client]="$CLIENT" [server]="$SERVER")
declare -A DAEMON
for host in client server; do
  ip netns exec "${NS[$host]}" "$BIN/rackd" --config "$DIR/rackd.toml" \
    --control-socket "${SOCK[$host]}" 2>"$DIR/$host-rackd.log" &
  pids+=($!); DAEMON[$host]=$!
done
status() { "$BIN/rackctl" --control-socket "${SOCK[$1]}" status; }
for host in client server; do
  for _ in $(seq 100); do
    status "$host" >/dev/null 2>&1 && break
    kill -0 "${DAEMON[$host]}" 2>/dev/null ||
      { tail -20 "$DIR/$host-rackd.log"; die "rackd on $host exited"; }
    sleep 0.1
  done
  status "$host" >/dev/null 2>&1 || die "rackd on $host does not answer on ${SOCK[$host]}"
  echo "$host: rackd pid ${DAEMON[$host]} answers on its control socket"
done

say "an unmodified program: rk-stream, $((BYTES >> 20)) MiB each way at $((PACE >> 10)) KiB/s" \
  "(~$((BYTES / PACE)) s)"
ip netns exec "$SERVER" "$BIN/rk-stream" server "$SERVER_IP:$PORT" --bytes "$BYTES" --seed 1 \
  --pace "$PACE" >"$DIR/server.json" 2>"$DIR/server.err" &
SERVER_PID=$!; pids+=("$SERVER_PID")
for _ in $(seq 50); do grep -q listening "$DIR/server.err" && break; sleep 0.1; done
ip netns exec "$CLIENT" "$BIN/rk-stream" client "$SERVER_IP:$PORT" --bytes "$BYTES" --seed 2 \
  --pace "$PACE" >"$DIR/client.json" 2>"$DIR/client.err" &
CLIENT_PID=$!; pids+=("$CLIENT_PID")
echo "server: rk-stream server $SERVER_IP:$PORT (pid $SERVER_PID)"
echo "client: rk-stream client $SERVER_IP:$PORT (pid $CLIENT_PID)"

# One field of the connection in a host's status ("connection" gives its id); "" if absent.
conn_field() { status "$1" 2>/dev/null | sed -n "/^connection:/,\$ { s/^ *$2: *//; T; p; q }"; }
# Waits up to $1 seconds until both hosts show the connection in state $2 (and, with $3, that
# many reconnects).
wait_state() {
  local want=$2 reconnects=${3:-} deadline=$(( $(now_ms) + $1 * 1000 ))
  while true; do
    if [ "$(conn_field client state)" = "$want" ] && [ "$(conn_field server state)" = "$want" ] &&
       { [ -z "$reconnects" ] || { [ "$(conn_field client reconnects)" = "$reconnects" ] &&
                                   [ "$(conn_field server reconnects)" = "$reconnects" ]; }; }; then
      return 0
    fi
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}
# `rackctl status` on both hosts; with "connection", only the connection's block.
show_status() {
  local host part=${1:-}
  for host in client server; do
    printf '\033[1m-- rackctl status on %s%s\033[0m\n' "$host" "${part:+ (connection block)}"
    if [ -n "$part" ]; then status "$host" | sed -n '/^connection:/,$p'; else status "$host"; fi |
      sed 's/^/   /'
  done
}
rackd_logs() {
  local host
  for host in client server; do echo "--- $host rackd log (end)"; tail -15 "$DIR/$host-rackd.log"; done
}

wait_state 10 connected || { rackd_logs; die "the connection did not become connected on both ends"; }
[ "$(conn_field client connection)" = "$(conn_field server connection)" ] ||
  die "client and server name the connection differently"
sleep 2   # let the byte counters (sampled once a second) show traffic

say "before the outage: both ends manage the connection, same id $(conn_field client connection)"
show_status

say "cutting the path at the router for $OUTAGE_S s (drop rules, both directions)"
in_ns "$ROUTER" nft add rule inet rkdemo forward iifname to-client oifname to-server drop
in_ns "$ROUTER" nft add rule inet rkdemo forward iifname to-server oifname to-client drop
in_ns "$ROUTER" nft list chain inet rkdemo forward | sed -n '/drop/s/^\s*/   /p'
cut_at=$(now_ms)
wait_state 5 suspended || { rackd_logs; die "rackd did not suspend the connection"; }
printf 'both ends suspended %d ms after the cut; rackd holds the sockets open (zero window)\n' \
  $(( $(now_ms) - cut_at ))

for at in 5 20; do
  sleep_until $(( cut_at + at * 1000 ))
  say "during the outage, ${at} s after the cut"
  show_status connection
  wait_state 0 suspended || die "the connection is not suspended on both ends during the outage"
done
sleep_until $(( cut_at + OUTAGE_S * 1000 ))

say "restoring the path after $(( ($(now_ms) - cut_at) / 1000 )) s"
in_ns "$ROUTER" nft flush chain inet rkdemo forward
back_at=$(now_ms)
wait_state 10 connected 1 || { rackd_logs; die "the connection did not resume on both hosts"; }
printf 'both ends connected again %d ms after the path returned\n' $(( $(now_ms) - back_at ))

sleep 3   # the kernels retransmit what was held back; the byte counters show it flowing again
say "after the outage (and before the move): connected again, reconnects 1, data flowing"
show_status

say "moving the client from $CLIENT_IP to $CLIENT_NEW_IP while the stream runs"
CLIENT_PORT=$(conn_field client local); CLIENT_PORT=${CLIENT_PORT##*:}
# The old address is removed outright: the address the client's socket is bound to is gone.
ip -n "$CLIENT" -batch - <<BATCH
addr del $CLIENT_IP/24 dev eth0
addr add $CLIENT_NEW_IP/24 dev eth0
route replace default via 192.0.2.1
BATCH
ip -n "$CLIENT" -brief addr show dev eth0 | sed 's/^/   /'
moved_at=$(now_ms)
# Both ends carry the connection at the client's new address (its socket still sees the old).
followed() {
  [ "$(conn_field client local)" = "$CLIENT_NEW_IP:$CLIENT_PORT" ] &&
    [ "$(conn_field server remote)" = "$CLIENT_NEW_IP:$CLIENT_PORT" ] &&
    [ "$(conn_field client state)" = connected ] && [ "$(conn_field server state)" = connected ]
}
deadline=$(( moved_at + 10000 ))
until followed; do
  [ "$(now_ms)" -lt "$deadline" ] || { rackd_logs; die "rackd did not follow the client's move"; }
  sleep 0.05
done
printf 'both ends carry the connection at %s, %d ms after the move\n' "$CLIENT_NEW_IP" \
  $(( $(now_ms) - moved_at ))
sleep 2   # data keeps flowing at the new address; the byte counters show it
say "after the move: the wire uses $CLIENT_NEW_IP; the client's socket still sees $CLIENT_IP"
show_status connection

say "waiting for the transfer to finish"
# A string field of one end's JSON report.
json_field() { sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" "$DIR/$1.json"; }
rc=0
for host in client server; do
  pid=CLIENT_PID; [ "$host" = server ] && pid=SERVER_PID
  code=0; wait "${!pid}" || code=$?
  forget "${!pid}"
  echo "$host rk-stream (exit $code): $(cat "$DIR/$host.json")"
  [ "$code" = 0 ] || rc=1
done
[ "$rc" = 0 ] || { cat "$DIR"/*.err; die "rk-stream reported an error"; }
c_sent=$(json_field client digest_sent) c_recv=$(json_field client digest_received)
s_sent=$(json_field server digest_sent) s_recv=$(json_field server digest_received)
echo "client → server: sent ${c_sent:0:16}…  received ${s_recv:0:16}…"
echo "server → client: sent ${s_sent:0:16}…  received ${c_recv:0:16}…"
if [ -n "$c_sent" ] && [ "$c_sent" = "$s_recv" ] && [ -n "$s_sent" ] && [ "$s_sent" = "$c_recv" ]
then
  printf '\033[1;32mdigests match\033[0m: every byte arrived, in order, both ways, through a %d s outage\n' \
    "$OUTAGE_S"
  echo "and a change of the client's address"
else
  die "digests differ: data was lost or corrupted"
fi

say "done in ${SECONDS} s; cleaning up"
