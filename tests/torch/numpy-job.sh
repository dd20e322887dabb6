#!/bin/bash
# numpy-job.sh -- shoal.ps with numpy buffers, 1 server + 2 workers: the
# workers start from the same parameters; the servers' SGD-momentum and
# the mean (average) give exactly the parameters the workers predict; the
# job ends cleanly.  Needs numpy, not torch.
. "$(dirname "$0")/lib.sh"
need_numpy
for opt in sgd average; do
    log=$scratch/$opt.log
    job "$log" 2 1 60 "$py" "$here/numpy-job.py" $opt
    rc=$?
    grep -E '^(ok|FAIL):' "$log" | sort -u
    grep -q '^FAIL:' "$log" && failures=$((failures + 1))
    [ $rc = 0 ] && ok "$opt: the job exited 0" || { tail -5 "$log"; bad "$opt: the job exited $rc"; }
    n=$(grep -o 'joined at iteration 0, start [0-9.]*' "$log" | sort -u | wc -l)
    [ "$n" = 1 ] && ok "$opt: both workers start from worker 0's parameters" ||
        bad "$opt: the workers started from $n different parameter vectors"
    has "$log" "applied [0-9]+ gradients, each once" "$opt: the server applied every gradient once"
done
finish
