#!/usr/bin/env bash
# The GPU measurements the project still owes, each as one call on a device machine (budget: about
# 10 minutes of work per call). From the project root, after the data are unpacked:
#
#   source .device/on-device.sh && scripts/device-checks.sh speed     "$OUT"   # image pack
#   source .device/on-device.sh && scripts/device-checks.sh baselines "$OUT"   # image pack
#   source .device/on-device.sh && scripts/device-checks.sh text      "$OUT"   # text pack
#
#   speed      training img/s of the project loop against a bare loop at batch 128 (fp32, bf16, CUDA
#              graphs), at batch 512, and of 4 and 8 loops at once with their memory; then gpu-quick.yaml
#              for BadNets and Blend (every defense, both exposures) in what is left of CHECK_SECONDS,
#              and the whole wall-clock of gpu-quick.yaml and paper-cifar10.yaml projected from its
#              stage times.
#   baselines  the setting of the first H200 run (paper-cifar10.yaml, 14 epochs one-cycle, bf16, the full
#              data) for BadNets, Blend, Trojan and WaNet under every defense, exposures none + CUL.
#   text       quick-text.yaml on the whole SST-2 split, all six attacks (RIPPLe included).
#
# Every check writes OUT/CHECK/ (runs, bench.json files, log.txt with each command and its seconds) and
# stops its grid with Ctrl-C's signal when CHECK_SECONDS (540) have passed, so the records written so far
# come back before the call's limit; the same command resumes the grid on a machine that kept the cache.
# CHECK_SCALE=tiny runs the same commands at toy size on a CPU, to test this script before a device call.
set -euo pipefail
check=${1:?usage: scripts/device-checks.sh speed|baselines|text OUT}
out=${2:?usage: scripts/device-checks.sh speed|baselines|text OUT}/$check
case $check in speed|baselines|text) ;; *) echo "unknown check '$check': speed, baselines or text" >&2; exit 2 ;; esac
command -v ebyd-bench >/dev/null || { echo "ebyd-bench is not installed here: pip install -e ." >&2; exit 2; }
scale=${CHECK_SCALE:-full}
budget=${CHECK_SECONDS:-540}
mkdir -p "$out"
start=$(date +%s)

if [ "$scale" = tiny ]; then
  device=cpu steps=2 big=32 batch=16 jobs=2
  image=(--set 'dataset={name: cifar10, train_subset: 600, test_subset: 200, defense_size: 100}'
         --set 'model={name: resnet18_narrow, params: {width: 8}}' --set recipe.epochs=1 --set recipe.batch_size=64
         --set 'exposures=[none, {name: cul, epochs: 2}]' --set 'defenses=[none, {name: rp, epochs: 1}]'
         --set trace_eval_size=100 --set detection_eval_size=100)
  text=(--set dataset.train_subset=64 --set dataset.test_subset=32 --set dataset.defense_size=32
        --set recipe.epochs=1 --set 'exposures=[none]' --set 'defenses=[none]' --set trace_eval_size=16)
else
  device=cuda steps=200 big=512 batch=128 jobs=4
  image=() text=()
fi

step() {  # step NAME COMMAND...: run one command, log it with its wall-clock seconds
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "\$ $*" >> "$out/log.txt"
  if "$@" > "$out/$name.out" 2>&1; then local rc=0; else local rc=$?; fi
  echo "  -> exit $rc in $(( $(date +%s) - t0 )) s" >> "$out/log.txt"
  tail -n 5 "$out/$name.out"
}

left() { echo $(( budget - ($(date +%s) - start) )); }

{ nvidia-smi -L 2>/dev/null || lscpu | grep 'Model name'; python3 -c 'import torch; print("torch", torch.__version__)'; } \
  > "$out/machine.txt" 2>&1 || true

case $check in
speed)
  bench=(ebyd-bench bench --device "$device" --steps "$steps" --batch-size "$batch")
  step bench-fp32 "${bench[@]}" --precision fp32 --out "$out/bench-fp32"
  step bench-bf16 "${bench[@]}" --precision auto --jobs "$jobs" --config configs/paper-cifar10.yaml \
    --out "$out/bench-bf16-jobs$jobs"
  step bench-jobs8 "${bench[@]}" --precision auto --jobs $(( 2 * jobs )) --config configs/gpu-quick.yaml \
    --out "$out/bench-bf16-jobs$(( 2 * jobs ))"
  step bench-graphs "${bench[@]}" --precision auto --compile reduce-overhead --out "$out/bench-graphs"
  step bench-512 ebyd-bench bench --device "$device" --steps "$steps" --batch-size "$big" --precision auto \
    --out "$out/bench-batch$big"
  remaining=$(left)
  if [ "$remaining" -gt 120 ]; then  # a slice of gpu-quick.yaml with every defense times each stage kind
    step gpu-quick timeout --signal=INT $(( remaining - 60 )) ebyd-bench run configs/gpu-quick.yaml --out "$out/gpu-quick" \
      --device "$device" --jobs "$jobs" --set 'attacks=[badnets, blend]' "${image[@]}"
    for config in gpu-quick paper-cifar10; do
      step "projection-$config" ebyd-bench bench --device "$device" --steps "$steps" --batch-size "$batch" \
        --precision auto --jobs "$jobs" --config "configs/$config.yaml" --records "$out/gpu-quick" \
        --out "$out/projection-$config"
    done
  fi
  ;;
baselines)
  step baselines timeout --signal=INT "$(left)" ebyd-bench run configs/paper-cifar10.yaml --out "$out/image" --device "$device" --jobs "$jobs" \
    --set recipe.epochs=14 --set recipe.schedule=onecycle --set recipe.precision=auto \
    --set 'attacks=[badnets, blend, trojan, wanet]' "${image[@]}"
  ;;
text)
  step text timeout --signal=INT "$(left)" ebyd-bench run configs/quick-text.yaml --out "$out/text" --device "$device" --jobs "$jobs" \
    --set dataset.train_subset=null --set dataset.test_subset=null --set trace_eval_size=300 "${text[@]}"
  ;;
esac
echo "$check: $(( $(date +%s) - start )) s in all; see $out/log.txt"
