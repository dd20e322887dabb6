#!/bin/bash
# LIBSVM input end to end: a generated 3-class problem with sparse rows and
# labels -1/0/7, trained by 2 workers, is learned.
. "$(dirname "$0")/lib.sh"
gen() {
    awk -v n="$1" -v seed="$2" 'BEGIN {
        srand(seed); split("-1 0 7", lab, " ");
        for (i = 0; i < n; i++) {
            c = int(rand() * 3); line = lab[c + 1];
            for (f = 1; f <= 30; f++) {
                v = (f % 3 == c && f <= 12) ? 1 + rand() : (rand() < 0.2 ? rand() : 0);
                if (v != 0) line = line " " f ":" sprintf("%.4f", v);
            }
            print line;
        }
    }'
}
gen 4000 1 >"$scratch/train.svm"
gen 1000 2 >"$scratch/test.svm"
if timeout 200 "$run" -n 2 -s 1 --timeout 180 -- "$train" --train "$scratch/train.svm" \
    --test "$scratch/test.svm" --hidden 0 --epochs 5 --batch 32 -q >"$scratch/svm.log" 2>&1; then
    a=$(accuracy "$scratch/svm.log")
    grep -q "30-3 bsp" "$scratch/svm.log" && ok "30 features, 3 classes" ||
        { cat "$scratch/svm.log"; bad "model shape"; }
    [ "${a:-0}" -ge 9000 ] && ok "LIBSVM problem learned ($a/100 %)" ||
        { cat "$scratch/svm.log"; bad "accuracy ${a:-none}"; }
else
    cat "$scratch/svm.log"; bad "LIBSVM job failed"
fi
finish
