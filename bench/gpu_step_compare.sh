#!/usr/bin/env bash
# Before/after of bench/gpu_step.py on one GPU, in one go (~6-8 min on an H100/H200).
#
#   OUT=/path/to/out bench/gpu_step_compare.sh            # from the repository root
#
# BEFORE is the code of commit $BEFORE_REF (default 14dad8a, main before issue 14), taken
# from git (a detached worktree, or `git archive` where worktrees cannot be added); where
# the copy has no .git, point BEFORE_DIR at a checkout of that commit. AFTER is this
# working tree. Both run with the same Python ($PYTHON, default `python`) and no network.
# Every run writes <name>.txt (its output) and <name>.json (AFTER runs) under $OUT;
# summary.txt collects the key lines. A run that fails or times out is reported and the
# others still run.
set -u
cd "$(dirname "$0")/.."
AFTER_DIR=$PWD
PYTHON=${PYTHON:-python}
OUT=${OUT:-$AFTER_DIR/gpu_step_out}
BEFORE_REF=${BEFORE_REF:-14dad8a}
BATCH=${BATCH:-128}
STEPS=${STEPS:-10}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}           # seconds per eager run
COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-200}   # seconds per run with --compile
mkdir -p "$OUT"

before_dir() {
  if [ -n "${BEFORE_DIR:-}" ]; then echo "$BEFORE_DIR"; return 0; fi
  local dir
  dir=$(mktemp -d /tmp/gair-before-XXXXXX)
  if git -C "$AFTER_DIR" worktree add --detach "$dir" "$BEFORE_REF" >/dev/null 2>&1 ||
     git -C "$AFTER_DIR" archive "$BEFORE_REF" | tar -x -C "$dir" 2>/dev/null; then
    echo "$dir"; return 0
  fi
  return 1
}

run() {  # name dir timeout args...
  local name=$1 dir=$2 limit=$3; shift 3
  echo "== $name: python bench/gpu_step.py $*" | tee -a "$OUT/summary.txt"
  (cd "$dir" && PYTHONPATH="$dir" timeout "$limit" "$PYTHON" bench/gpu_step.py "$@") >"$OUT/$name.txt" 2>&1
  local rc=$?
  grep -E "^(device=|step_time_s=|model_tflop|peak_memory|queue=|sdpa_|profile written)" "$OUT/$name.txt" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || echo "   $name failed (exit $rc; 124 = timed out): see $OUT/$name.txt" | tee -a "$OUT/summary.txt"
}

: >"$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$OUT/summary.txt" 2>&1
COMMON=(--size base --precision bf16 --zero-stage 2 --batch-size "$BATCH" --steps "$STEPS" --warmup 3)
if BEFORE=$(before_dir); then
  run before "$BEFORE" "$RUN_TIMEOUT" "${COMMON[@]}"
else
  echo "== before: skipped, no git and no BEFORE_DIR (a checkout of $BEFORE_REF)" | tee -a "$OUT/summary.txt"
fi
run after_autocast "$AFTER_DIR" "$RUN_TIMEOUT" "${COMMON[@]}" --json "$OUT/after_autocast.json" --profile "$OUT/profile_autocast.txt"
run after_native "$AFTER_DIR" "$RUN_TIMEOUT" "${COMMON[@]}" --precision-mode native --json "$OUT/after_native.json"
run after_native_compile "$AFTER_DIR" "$COMPILE_TIMEOUT" "${COMMON[@]}" --precision-mode native --compile --warmup 4 \
  --json "$OUT/after_native_compile.json" --profile "$OUT/profile_native_compile.txt"
# Activation checkpointing: a batch twice the size (eager, to keep the run short).
run after_native_ckpt_b2x "$AFTER_DIR" "$RUN_TIMEOUT" --size base --precision bf16 --zero-stage 2 \
  --batch-size $((2 * BATCH)) --steps 5 --warmup 2 --precision-mode native --activation-checkpointing \
  --json "$OUT/after_native_ckpt_b2x.json"
if [ -n "${BEFORE:-}" ] && [ -z "${BEFORE_DIR:-}" ]; then
  git -C "$AFTER_DIR" worktree remove --force "$BEFORE" >/dev/null 2>&1 || rm -rf "$BEFORE"
fi
echo "outputs in $OUT"
