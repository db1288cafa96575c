#!/usr/bin/env bash
# GPU benchmarks in under 5 minutes on one CUDA GPU (see benchmarks/README.md):
#   SAE sparsealign vs SAELens vs sparsify (d=768, 12288 latents, k=32, bf16) and the
#   fraction of the GPU's bf16 peak; CV ridge and 16k x 16k semi-matching on CUDA;
#   extraction on CUDA. Prints one table of ratios; appends it to results/benchmarks.csv.
#
#   benchmarks/gpu.sh                      # python = $PYTHON or python3 on PATH
#   BENCH_PYTHON=/path/to/venv/bin/python benchmarks/gpu.sh   # peers' environment
#
# On a machine without CUDA it stops at once with exit status 2 and says why.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
export BENCH_PYTHON="${BENCH_PYTHON:-$python}"
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_DISABLE=1

if ! "$python" - <<'EOF'
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu.sh: torch is not importable by this python; set PYTHON=/path/to/python")
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: no CUDA device visible to torch {torch.__version__} "
             f"(CUDA build: {torch.version.cuda}); these benchmarks need an NVIDIA GPU. "
             "Nothing was run; for the CPU figures use benchmarks/run.py.")
print(f"gpu.sh: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
then
    exit 2
fi
for module in sae_lens sparsify himalaya; do
    "$BENCH_PYTHON" -c "import $module" 2>/dev/null \
        || echo "gpu.sh: $module is not importable by $BENCH_PYTHON: its rows will say so"
done
# 290 s of the 5 minutes; the table so far is lost if it is killed, so sizes are chosen to fit.
exec timeout 290 "$python" "$here/gpu.py" "$@"
