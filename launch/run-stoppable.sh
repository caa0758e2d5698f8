#!/usr/bin/env bash
# Runs a launcher (mpirun, or what starts it) as a child and turns SIGTERM, SIGINT and SIGUSR1
# sent to this script into SIGUSR1 for the child: mpirun forwards SIGUSR1 to every rank, which
# checkpoint at the next step boundary and exit 75 ("stopped, resume me"); this script exits
# with the child's status. (mpirun itself answers SIGTERM by killing the ranks within 2 s,
# leaving only rank 0's rescue checkpoint of the last completed step: signal this instead.)
#
#   exec bash launch/run-stoppable.sh mpirun -n 2 dtrain train ...     (launch/local.sh, launch/cluster.sh)
set -uo pipefail
"$@" &
child=$!
trap 'kill -USR1 "$child" 2>/dev/null' TERM INT USR1
# A trapped signal interrupts `wait` (status > 128): wait again until the child has really exited.
while :; do
    status=0
    wait "$child" || status=$?
    kill -0 "$child" 2>/dev/null || break
done
exit "$status"
