#!/bin/bash
# Bad input gives a clear error naming the input and a non-zero exit, and
# never a crash or a hang: options, data files, a worker from another job.
. "$(dirname "$0")/lib.sh"
need_data
# expect STATUS PATTERN COMMAND...: exit status STATUS (or any non-zero
# with "fail"), and PATTERN in the output.
expect() {
    local want=$1 pat=$2; shift 2
    local out rc
    out=$(timeout 120 "$@" 2>&1); rc=$?
    if { [ "$want" = fail ] && [ $rc -ne 0 ] && [ $rc -lt 124 ]; } || [ "$rc" = "$want" ]; then
        if grep -q -- "$pat" <<<"$out"; then ok "$pat (exit $rc)"; return; fi
    fi
    echo "$out" | tail -5
    bad "expected exit $want and '$pat', got exit $rc"
}
expect 2 "unrecognized option" "$train" --single --bogus
expect 2 "\-\-epochs: 'abc' is not an integer" "$train" --single --epochs abc
expect 2 "\-\-mode: 'fast' is not bsp" "$train" --single --mode fast
expect 2 "\-\-hidden: '12,x'" "$train" --single --hidden 12,x
expect 2 "no rank/size" env -u SHOAL_RANK -u SHOAL_SIZE "$train"
expect 2 "\-\-train and --test go together" "$train" --single --train x

# Data files: truncated, wrong magic, missing.
mkdir -p "$scratch/trunc" "$scratch/magic"
cp "$data"/train-labels* "$data"/t10k-* "$scratch/trunc/"
head -c 200000 "$data/train-images-idx3-ubyte.gz" >"$scratch/trunc/train-images-idx3-ubyte.gz"
expect fail "trunc/train-images-idx3-ubyte.gz.*\(truncated\|unexpected end\)" \
    "$train" --single --data "$scratch/trunc" -q --epochs 1
cp "$data"/* "$scratch/magic/"
gzip -dc "$data/train-labels-idx1-ubyte.gz" | tail -c +5 >"$scratch/magic/train-labels-idx1-ubyte"
rm "$scratch/magic/train-labels-idx1-ubyte.gz"
expect fail "magic/train-labels-idx1-ubyte: .*IDX" "$train" --single --data "$scratch/magic" -q
expect fail "no train-images-idx3-ubyte" "$train" --single --data "$scratch/nowhere" -q
printf '1 1:0.5\n2 2:1 1:3\n' >"$scratch/bad.svm"
expect fail "bad.svm: line 2: feature index 1 after 2" \
    "$train" --single --train "$scratch/bad.svm" --test "$scratch/bad.svm" -q
printf 'not a model' >"$scratch/junk.mdl"
expect fail "junk.mdl" "$train" --eval "$scratch/junk.mdl" --data "$data"

# A worker started with another model is refused by the server (which
# goes on waiting for the right one), and with that one never coming the
# job ends with errors instead of hanging.
rdv=$scratch/rdv
common="--data $data -q --epochs 1 --iters-per-epoch 5 --connect-timeout 20000 --idle-timeout 8000
        --reconnect-timeout 5000"
SHOAL_RENDEZVOUS=$rdv SHOAL_SIZE=3 SHOAL_RANK=0 timeout 60 "$train" $common \
    >"$scratch/r0.log" 2>&1 &
p0=$!
SHOAL_RENDEZVOUS=$rdv SHOAL_SIZE=3 SHOAL_RANK=1 timeout 60 "$train" $common \
    >"$scratch/r1.log" 2>&1 &
p1=$!
sleep 1
SHOAL_RENDEZVOUS=$rdv SHOAL_SIZE=3 SHOAL_RANK=2 timeout 60 "$train" $common --hidden 128 \
    >"$scratch/r2.log" 2>&1
r2=$?
wait $p0; r0=$?
wait $p1; r1=$?
if [ $r2 -ne 0 ] && [ $r2 -lt 124 ] && grep -q "job mismatch" "$scratch/r2.log"; then
    ok "a worker of another job is refused (exit $r2)"
else
    cat "$scratch/r2.log"; bad "mismatched worker: exit $r2"
fi
if grep -q "refused worker 1 .*job mismatch" "$scratch/r0.log"; then
    ok "the server names the refused worker and why"
else
    cat "$scratch/r0.log"; bad "the server did not report the refusal"
fi
if [ $r0 -ne 0 ] && [ $r0 -lt 124 ] && grep -q "no progress" "$scratch/r0.log"; then
    ok "the server stops with an error when no right worker comes (exit $r0)"
else
    cat "$scratch/r0.log"; bad "server: exit $r0 (124 = hung)"
fi
[ $r1 -lt 124 ] && ok "the good worker ends (exit $r1)" || bad "the good worker hung"
finish
