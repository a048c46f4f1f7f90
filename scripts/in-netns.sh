#!/bin/sh
# Run a command in a fresh network namespace that has only `lo` (up, multicast on, 224.0.0.0/4
# routed to it), so nothing it sends can reach the machine's real interfaces.
#
#   scripts/in-netns.sh .venv/bin/python -m pytest -q
#
# As root: `unshare --net`. Otherwise a user namespace maps us to root over the new network
# namespace (enough for loopback tests; the multi-host lab in tests/net needs real root).
# MESHCHAT_TEST_NETNS records the namespace so tests/conftest.py can tell it is isolated even
# where /proc/1/ns/net cannot be read.
set -eu

if [ "${1:-}" = "--inside" ]; then
    shift
    ip link set lo up
    ip link set lo multicast on
    ip route add 224.0.0.0/4 dev lo
    MESHCHAT_TEST_NETNS=$(readlink /proc/self/ns/net)
    export MESHCHAT_TEST_NETNS
    exec "$@"
fi

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi

if [ "$(id -u)" -eq 0 ]; then
    # The kernel's ARP table is one for the whole machine, shared by every namespace, and
    # holds 1,024 entries by default: the lab's 64-node mesh needs ~4,000, and past the limit
    # no ARP goes out and connects hang. Raise it (never lower it) while we are still in
    # the machine's first namespace, the only one that has the knob. No traffic.
    for pair in gc_thresh1:4096 gc_thresh2:16384 gc_thresh3:32768; do
        knob=/proc/sys/net/ipv4/neigh/default/${pair%%:*}
        want=${pair##*:}
        if [ -w "$knob" ] && [ "$(cat "$knob")" -lt "$want" ]; then
            echo "$want" > "$knob"
        fi
    done
    exec unshare --net -- sh "$0" --inside "$@"
fi
echo "$0: not root: using a user namespace; tests/net (the namespace lab) needs root" >&2
exec unshare --user --map-root-user --net -- sh "$0" --inside "$@"
