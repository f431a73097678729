#!/usr/bin/env bash
# One seed, one history (issue 11): runs the simulation suite N times (all seeds) from one test binary and checks that every
# scenario/seed summary line is identical across runs. Usage: simdet.sh BINARY N OUTDIR
B=$1; N=$2; OUT=$3; mkdir -p $OUT
for i in $(seq 1 $N); do
  $B --nocapture --test-threads 1 2>&1 | grep -E " seed [0-9]+: |failed with|test result" | sed -E 's/ \([0-9.]+(ms|s|µs) wall\)//; s/ finished in [0-9.]+s//' | sort > $OUT/run$i.txt
done
status=0
grep -q "test result: ok" $OUT/run1.txt || { echo "run 1 did not pass"; status=1; }
for i in $(seq 2 $N); do
  if cmp -s $OUT/run1.txt $OUT/run$i.txt; then echo "run $i identical"; else echo "run $i DIFFERS"; diff $OUT/run1.txt $OUT/run$i.txt; status=1; fi
done
exit $status
