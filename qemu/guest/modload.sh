#!/bin/sh
# modload NAME...  Load kernel modules from /modules, each after the modules it
# depends on. /modules/deps has one line per module: "NAME DEP...". Names are the
# .ko file stems (e1000, virtio_net, vfio-pci, pktgen); '-' and '_' are interchangeable.
# Modules that are already loaded are skipped.

loaded() {
    grep -q "^$(echo "$1" | tr - _) " /proc/modules
}

file_of() {
    for n in "$1" "$(echo "$1" | tr - _)" "$(echo "$1" | tr _ -)"; do
        [ -f "/modules/$n.ko" ] && { echo "$n"; return 0; }
    done
    return 1
}

load() {
    local name dep
    loaded "$1" && return 0
    if ! name=$(file_of "$1"); then
        echo "modload: no module $1; have: $(cd /modules && ls -- *.ko | sed 's/\.ko$//' | tr '\n' ' ')" >&2
        return 1
    fi
    for dep in $(sed -n "s/^$name //p" /modules/deps); do
        load "$dep" || return 1
    done
    insmod "/modules/$name.ko" || { echo "modload: insmod $name failed" >&2; return 1; }
}

rc=0
for m in "$@"; do
    load "$m" || rc=1
done
exit $rc
