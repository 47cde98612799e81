#!/bin/sh
# An Odoo worker stand-in that leaks memory on demand. Runs with busybox sh
# inside the healer-test-busybox image; LEAK_MIB and LEAK_STEP_S must be set
# (odoo_standins.py prepends them).
#
# Once /tmp/leaking exists (odoo_standins.start_leak), the worker grows by
# 1 MiB every LEAK_STEP_S seconds up to LEAK_MIB, in a file on /dev/shm: tmpfs
# pages are charged to the container's memory cgroup as shared memory (not
# reclaimable page cache), so they count in cAdvisor's working set exactly as
# a Python heap would. Every start clears the flag and the file: a restart is
# what frees the memory, as with a leaking Odoo worker.
set -eu
: "${LEAK_MIB:?LEAK_MIB must be set}" "${LEAK_STEP_S:?LEAK_STEP_S must be set}"

rm -f /tmp/leaking /tmp/leaked_mib /dev/shm/leak
trap 'exit 0' TERM INT
mib=0
while :; do
    if [ -e /tmp/leaking ] && [ "$mib" -lt "$LEAK_MIB" ]; then
        # /dev/shm holds 64 MiB: should it fill up, stop leaking rather than exit.
        if dd if=/dev/zero of=/dev/shm/leak bs=1048576 count=1 seek="$mib" conv=notrunc \
                2>/dev/null; then
            mib=$((mib + 1))
            echo "$mib" > /tmp/leaked_mib
        else
            mib=$LEAK_MIB
        fi
    fi
    sleep "$LEAK_STEP_S"
done
