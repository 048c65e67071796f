#!/bin/bash
cd /work/main
export EBYD_DATA_ROOT=/work/shared/data EBYD_PROGRESS=0
i=0
for jobs in 1 2 2 1; do
  i=$((i+1))
  rm -rf /tmp/qab/cache$i /tmp/qab/out$i
  t0=$(date +%s.%N)
  EBYD_CACHE_DIR=/tmp/qab/cache$i ebyd-bench run configs/quick.yaml --out /tmp/qab/out$i --jobs $jobs > /tmp/qab/run$i.log 2>&1
  rc=$?
  t1=$(date +%s.%N)
  echo "run $i jobs $jobs rc $rc seconds $(echo "$t1 - $t0" | bc)" >> /tmp/qab/times.txt
done
