#!/bin/bash
# tools/shoal-plot draws a real metrics file: a short job writes
# --metrics, shoal-plot turns it into a PNG, and the PNG must be a
# 1000x600 image with both curves on it (gnuplot's first two line
# colours, #9400d3 for the loss and #009e73 for the accuracy, on enough
# pixels), many colours and not all background.  Bad input gets an error.
. "$(dirname "$0")/../trainer/lib.sh"
need_data
plot=$top_src/tools/shoal-plot
command -v gnuplot >/dev/null || skip "no gnuplot (apt-get install gnuplot-nox)"
py=$(command -v python3) || skip "no python3 to read the PNG"

if ! job "$scratch/job.log" 2 1 --epochs 3 --iters-per-epoch 100 --log-interval 0.05 \
        --metrics "$scratch/m.csv"; then
    cat "$scratch/job.log"; bad "the training job failed"; finish
fi
loss_rows=$(awk -F, 'NR > 1 && $4 != ""' "$scratch/m.csv" | wc -l)
acc_rows=$(awk -F, 'NR > 1 && $6 != ""' "$scratch/m.csv" | wc -l)
[ "$loss_rows" -ge 5 ] && [ "$acc_rows" = 3 ] &&
    ok "metrics: $loss_rows loss rows, $acc_rows test rows" ||
    bad "metrics: $loss_rows loss rows (want >= 5), $acc_rows test rows (want 3)"

if "$plot" "$scratch/m.csv" "$scratch/m.png" >"$scratch/plot.log" 2>&1; then
    ok "shoal-plot exits 0"
else
    cat "$scratch/plot.log"; bad "shoal-plot failed"
fi
grep -qi "error\|warning" "$scratch/plot.log" && { cat "$scratch/plot.log"; bad "gnuplot complained"; }
if [ -s "$scratch/m.png" ] && "$py" "$(dirname "$0")/pngstat.py" "$scratch/m.png" 9400d3 009e73 \
        >"$scratch/png" 2>&1; then
    sed 's/^/    /' "$scratch/png"
    v() { awk -v k="$1" -v c="${2:-}" '$1 == k && (c == "" || $2 == c) { print $NF }' "$scratch/png"; }
    size=$(stat -c %s "$scratch/m.png")
    [ "$(v width)" = 1000 ] && [ "$(v height)" = 600 ] && ok "PNG is 1000x600" ||
        bad "PNG is $(v width)x$(v height), not 1000x600"
    [ "$size" -ge 10000 ] && ok "PNG is $size bytes" || bad "PNG is only $size bytes"
    [ "$(v colours)" -ge 20 ] && [ "$(v background)" -le 98 ] &&
        ok "PNG has $(v colours) colours, $(v background)% background" ||
        bad "PNG looks blank: $(v colours) colours, $(v background)% background"
    [ "$(v pixels 9400d3)" -ge 300 ] && ok "loss curve drawn ($(v pixels 9400d3) pixels)" ||
        bad "no loss curve (#9400d3 on $(v pixels 9400d3) pixels)"
    [ "$(v pixels 009e73)" -ge 300 ] && ok "accuracy curve drawn ($(v pixels 009e73) pixels)" ||
        bad "no accuracy curve (#009e73 on $(v pixels 009e73) pixels)"
else
    cat "$scratch/png" 2>/dev/null; bad "no readable PNG"
fi
ls "$scratch"/m.png.* >/dev/null 2>&1 && bad "a temporary PNG was left behind"

# Bad input: a clear message, status 1, no output file.
echo "a,b,c" >"$scratch/bad.csv"
if "$plot" "$scratch/bad.csv" "$scratch/bad.png" 2>"$scratch/bad.err"; then
    bad "shoal-plot accepted a file that is not metrics"
else
    grep -q "not a shoal-train metrics header" "$scratch/bad.err" && [ ! -e "$scratch/bad.png" ] &&
        ok "a file that is not metrics: $(cat "$scratch/bad.err")" ||
        bad "a file that is not metrics: unclear error '$(cat "$scratch/bad.err")'"
fi
finish
