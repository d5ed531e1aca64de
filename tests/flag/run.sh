#!/usr/bin/env bash
# make test-flag: the FlagEmbedding backends for real, on tiny random-weight XLM-R models.
# Installs torch 2.13.0 (CPU build) and FlagEmbedding into .venv-flag (about a minute; transformers
# below 5: FlagEmbedding imports transformers.modeling_attn_mask_utils, which 5 removed), builds
# the models and runs tests/flag/ without the gateway's own dependencies.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-flag
if [ ! -x "$VENV/bin/pytest" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.13.0" "FlagEmbedding>=1.3" "transformers>=4.44,<5" pytest pydantic numpy jieba bm25s rank_bm25 \
    tqdm threadpoolctl httpx
fi
WORK=$(mktemp -d /tmp/qroute-flag-XXXX)
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" tests/flag/build_tiny_xlmr.py "$WORK" > /dev/null 2>&1
HF_HUB_OFFLINE=1 QROUTE_TINY_MODELS="$WORK" PYTHONPATH=. "$VENV/bin/python" -m pytest tests/flag \
  --confcutdir=tests/flag -p no:cacheprovider
