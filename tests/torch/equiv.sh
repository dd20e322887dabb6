#!/bin/bash
# equiv.sh -- data-parallel training through shoal equals single-process
# PyTorch on the same global batches, within float tolerance: 2 workers,
# each taking half of every global batch, against one process on the whole
# batch, from the same start.  aggregate mode (the servers average, each
# worker applies torch.optim SGD / Adam itself) and bsp (the servers run
# SGD / Adam).  The two workers' final parameters are identical, bit for
# bit, though each built its model from a different seed.
. "$(dirname "$0")/lib.sh"
need_torch
for case in aggregate:sgd aggregate:adam bsp:sgd bsp:adam; do
    IFS=: read -r mode opt <<<"$case"
    log=$scratch/$mode-$opt.log
    job "$log" 2 1 120 "$py" "$here/equiv.py" "$mode" "$opt"
    rc=$?
    grep -E '^(ok|FAIL):' "$log"
    grep -q '^ok:' "$log" || bad "$mode $opt: no verdict from worker 0 (exit $rc)"
    grep -q '^FAIL:' "$log" && failures=$((failures + 1))
    [ $rc = 0 ] || { tail -5 "$log"; bad "$mode $opt: the job exited $rc"; }
    n=$(sed -n 's/^worker [0-9]: parameters \([0-9a-f]*\)$/\1/p' "$log" | sort -u | wc -l)
    k=$(grep -c '^worker [0-9]: parameters ' "$log")
    [ "$k" = 2 ] && [ "$n" = 1 ] && ok "$mode $opt: the two replicas end bit for bit identical" ||
        bad "$mode $opt: $k workers reported, $n different final parameter vectors"
    has "$log" "^worker 0: 12 steps, 0 gradient copies" "$mode $opt: no gradient copied in Python"
done
finish
