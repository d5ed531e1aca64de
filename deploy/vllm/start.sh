#!/usr/bin/env bash
# Start vLLM serving Qwen3-8B for qroute's local backend, after checking that the GPU(s) have the
# memory --gpu-memory-utilization asks for. Never kills anything: when another process holds the
# memory it names it and exits 3. Run with --help for every option; docs/deploy.md explains the
# memory arithmetic and the systemd, Docker, compose and Kubernetes ways to run the same thing.
set -euo pipefail

PROG=${0##*/}

usage() {
    cat <<'EOF'
Usage: deploy/vllm/start.sh [options] [-- extra vllm serve arguments]

Starts `vllm serve` for Qwen3-8B with the reference settings
  --served-model-name Qwen/Qwen3-8B --gpu-memory-utilization 0.90 --max-model-len 32768
  --reasoning-parser qwen3
in the background, waits until GET /health answers, and writes a PID file and a log file.

Before launching it reads every GPU it will use with
  nvidia-smi --query-gpu=memory.free,memory.total --format=csv,noheader,nounits
and refuses (exit 3, nothing started, nothing killed) when a GPU's free memory is short of
gpu-memory-utilization x total (vLLM itself would fail at start-up for the same reason), naming
the processes that hold GPU memory
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits

Options (each has an environment variable; the flag wins):
  --model ID|PATH             Hugging Face repo id or local folder         VLLM_MODEL (Qwen/Qwen3-8B)
  --model-path PATH           a local model folder (must hold config.json) VLLM_MODEL_PATH
  --served-model-name NAME    the id clients and qroute use                VLLM_SERVED_MODEL_NAME (Qwen/Qwen3-8B)
  --host ADDR                 bind address                                 VLLM_HOST (127.0.0.1)
  --port N                    port                                         VLLM_PORT (8000)
  --gpu-memory-utilization F  share of each GPU's total memory vLLM takes  VLLM_GPU_MEMORY_UTILIZATION (0.90)
  --max-model-len N           longest prompt + answer, in tokens           VLLM_MAX_MODEL_LEN (32768)
  --tensor-parallel-size N    GPUs one model is split over (2: two smaller GPUs; every one is checked)
                                                                           VLLM_TENSOR_PARALLEL_SIZE (1)
  --gpus LIST                 nvidia-smi indices to check, e.g. 0 or 2,3   VLLM_GPUS (CUDA_VISIBLE_DEVICES
                              when it holds indices, else 0..N-1); also exported as CUDA_VISIBLE_DEVICES
  --dtype T                   auto, half, bfloat16, float16, float32       VLLM_DTYPE (auto)
  --v100                      V100 settings: VLLM_ATTENTION_BACKEND=TORCH_SDPA (unless already set)
                              and --dtype half (a V100 has no bfloat16)    VLLM_V100=1
  --hf-endpoint URL           model mirror, e.g. https://hf-mirror.com     HF_ENDPOINT
  --pid-file PATH             background mode: where the PID goes         VLLM_PID_FILE (.qroute/vllm.pid)
  --log-file PATH             background mode: vLLM's stdout and stderr    VLLM_LOG_FILE (.qroute/vllm.log)
  --health-timeout S          seconds to wait for /health                  VLLM_HEALTH_TIMEOUT (900)
  --foreground                check, then exec vLLM in this process (systemd, containers); no PID file
  --check-only                only the GPU memory check (e.g. systemd ExecStartPre); exit 0 when it passes
  --wait-healthy              start nothing: wait until --host:--port answers /health (systemd ExecStartPost)
  --no-gpu-check              skip the check (e.g. nvidia-smi cannot see the GPU from here)
  --dry-run                   print the command and environment that would run, start nothing
  -h, --help                  this text

Other environment variables:
  VLLM_CMD                    the vllm executable (default: vllm on PATH)
  VLLM_API_KEY                read by vLLM itself: clients (qroute's backends.<name>.api_key_env) must send it
  HF_HOME, HF_TOKEN           passed through to vLLM (model cache folder, gated models)
  VLLM_HEALTH_INTERVAL        seconds between /health probes (default 2)

Exit status: 0 started (or check passed), 2 bad usage, 3 not enough free GPU memory,
4 nvidia-smi missing or unreadable, 5 already running, 1 vLLM failed to become healthy (the log
tail is printed and the process this script started is stopped).

Examples:
  deploy/vllm/start.sh                                   # one GPU, reference settings
  deploy/vllm/start.sh --hf-endpoint https://hf-mirror.com --host 0.0.0.0
  deploy/vllm/start.sh --model-path /models/Qwen3-8B --max-model-len 16384
  deploy/vllm/start.sh --tensor-parallel-size 2 --gpus 0,1   # two 24 GB GPUs
  deploy/vllm/start.sh --v100                            # V100 32 GB
  deploy/vllm/start.sh -- --max-num-seqs 64              # anything after -- goes to vllm serve
EOF
}

die() {  # die STATUS MESSAGE...
    local status=$1
    shift
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit "$status"
}
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }

MODEL=${VLLM_MODEL:-Qwen/Qwen3-8B}
MODEL_PATH=${VLLM_MODEL_PATH:-}
SERVED_NAME=${VLLM_SERVED_MODEL_NAME:-Qwen/Qwen3-8B}
HOST=${VLLM_HOST:-127.0.0.1}
PORT=${VLLM_PORT:-8000}
GPU_UTIL=${VLLM_GPU_MEMORY_UTILIZATION:-0.90}
MAX_LEN=${VLLM_MAX_MODEL_LEN:-32768}
TP=${VLLM_TENSOR_PARALLEL_SIZE:-1}
GPUS=${VLLM_GPUS:-}
DTYPE=${VLLM_DTYPE:-auto}
V100=${VLLM_V100:-0}
PID_FILE=${VLLM_PID_FILE:-.qroute/vllm.pid}
LOG_FILE=${VLLM_LOG_FILE:-.qroute/vllm.log}
HEALTH_TIMEOUT=${VLLM_HEALTH_TIMEOUT:-900}
HEALTH_INTERVAL=${VLLM_HEALTH_INTERVAL:-2}
MODE=background
GPU_CHECK=1
DRY_RUN=0
EXTRA=()

need_value() { [[ $# -ge 2 && -n $2 ]] || die 2 "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --model) need_value "$@"; MODEL=$2; shift 2 ;;
        --model-path) need_value "$@"; MODEL_PATH=$2; shift 2 ;;
        --served-model-name) need_value "$@"; SERVED_NAME=$2; shift 2 ;;
        --host) need_value "$@"; HOST=$2; shift 2 ;;
        --port) need_value "$@"; PORT=$2; shift 2 ;;
        --gpu-memory-utilization) need_value "$@"; GPU_UTIL=$2; shift 2 ;;
        --max-model-len) need_value "$@"; MAX_LEN=$2; shift 2 ;;
        --tensor-parallel-size) need_value "$@"; TP=$2; shift 2 ;;
        --gpus) need_value "$@"; GPUS=$2; shift 2 ;;
        --dtype) need_value "$@"; DTYPE=$2; shift 2 ;;
        --v100) V100=1; shift ;;
        --hf-endpoint) need_value "$@"; export HF_ENDPOINT=$2; shift 2 ;;
        --pid-file) need_value "$@"; PID_FILE=$2; shift 2 ;;
        --log-file) need_value "$@"; LOG_FILE=$2; shift 2 ;;
        --health-timeout) need_value "$@"; HEALTH_TIMEOUT=$2; shift 2 ;;
        --foreground) MODE="foreground"; shift ;;
        --check-only) MODE="check"; shift ;;
        --wait-healthy) MODE="wait"; shift ;;
        --no-gpu-check) GPU_CHECK=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die 2 "unknown option: $1 (see --help; vllm serve arguments go after --)" ;;
    esac
done

# --- validate ---------------------------------------------------------------------------------
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
uint_in() { is_uint "$1" && (($1 >= $2 && $1 <= $3)); }  # uint_in VALUE MIN MAX
uint_in "$PORT" 1 65535 || die 2 "--port: not a port number: $PORT"
uint_in "$MAX_LEN" 1 100000000 || die 2 "--max-model-len: not a positive integer: $MAX_LEN"
uint_in "$TP" 1 1024 || die 2 "--tensor-parallel-size: not a positive integer: $TP"
is_uint "$HEALTH_TIMEOUT" || die 2 "--health-timeout: not a number of seconds: $HEALTH_TIMEOUT"
[[ $HEALTH_INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || die 2 "VLLM_HEALTH_INTERVAL: not a number of seconds: $HEALTH_INTERVAL"
[[ $GPU_UTIL =~ ^(0?\.[0-9]+|1(\.0+)?)$ ]] || die 2 "--gpu-memory-utilization: a fraction in (0, 1], got $GPU_UTIL"
UTIL_PERMILLE=$(awk -v u="$GPU_UTIL" 'BEGIN { printf "%d", u * 1000 + 0.5 }')  # 0.90 -> 900
((UTIL_PERMILLE > 0)) || die 2 "--gpu-memory-utilization: a fraction in (0, 1], got $GPU_UTIL"
if [[ $V100 == 1 || $V100 == true || $V100 == yes ]]; then V100=1; else V100=0; fi
case $DTYPE in auto | half | float16 | bfloat16 | float | float32) ;; *) die 2 "--dtype: unknown dtype $DTYPE" ;; esac
if ((V100)); then
    [[ $DTYPE == auto || $DTYPE == half || $DTYPE == float16 ]] \
        || die 2 "--v100 with --dtype $DTYPE: a V100 (compute capability 7.0) has no bfloat16; use half"
    DTYPE=half
    export VLLM_ATTENTION_BACKEND=${VLLM_ATTENTION_BACKEND:-TORCH_SDPA}
fi
if [[ -n $MODEL_PATH ]]; then
    [[ -f $MODEL_PATH/config.json ]] || die 2 "--model-path $MODEL_PATH: no config.json there (a Hugging Face model folder?)"
    MODEL=$MODEL_PATH
fi

# Which GPUs (nvidia-smi indices) vLLM will use: --gpus, else CUDA_VISIBLE_DEVICES when it lists
# indices, else the first TP ones. CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA number them as nvidia-smi
# does. A CUDA_VISIBLE_DEVICES of UUIDs (GPU-..., MIG-...) is left alone, and then --gpus must say
# which indices to check (or --no-gpu-check).
KEEP_VISIBLE=0
if [[ -z $GPUS && -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    if [[ $CUDA_VISIBLE_DEVICES =~ ^[0-9]+(,[0-9]+)*$ ]]; then
        GPUS=$CUDA_VISIBLE_DEVICES
    elif ((GPU_CHECK)) && [[ $MODE != wait ]]; then
        die 2 "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES does not give nvidia-smi indices: say which with --gpus (or --no-gpu-check)"
    else
        KEEP_VISIBLE=1
    fi
fi
GPU_LIST=()
if ((!KEEP_VISIBLE)); then
    if [[ -z $GPUS ]]; then
        GPUS=$(seq -s, 0 $((TP - 1)))
    fi
    [[ $GPUS =~ ^[0-9]+(,[0-9]+)*$ ]] || die 2 "--gpus: comma-separated nvidia-smi indices, got $GPUS"
    IFS=, read -r -a GPU_LIST <<<"$GPUS"
    ((${#GPU_LIST[@]} >= TP)) || die 2 "--tensor-parallel-size $TP needs $TP GPUs, --gpus lists ${#GPU_LIST[@]} ($GPUS)"
    GPU_LIST=("${GPU_LIST[@]:0:TP}")
    GPUS=$(IFS=,; echo "${GPU_LIST[*]}")
    export CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER:-PCI_BUS_ID}
    export CUDA_VISIBLE_DEVICES=$GPUS
fi

# --- the GPU memory check ---------------------------------------------------------------------
holders() {
    local apps
    if ! apps=$(nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits 2>/dev/null); then
        echo "  (nvidia-smi could not list the compute processes)"
        return
    fi
    if [[ -z ${apps//[[:space:]]/} ]]; then
        echo "  (none listed: the memory may be held from another container or PID namespace, or by a"
        echo "   graphics process; look on the host with nvidia-smi)"
        return
    fi
    local pid name used
    while IFS=, read -r pid name used; do
        pid=${pid//[[:space:]]/}
        used=${used//[[:space:]]/}
        name=${name#"${name%%[![:space:]]*}"}
        [[ -n $pid ]] && printf '  pid %s  %s  %s MiB\n' "$pid" "$name" "$used"
    done <<<"$apps"
}

check_gpus() {
    command -v nvidia-smi >/dev/null 2>&1 \
        || die 4 "nvidia-smi not found: no NVIDIA driver here? (--no-gpu-check skips this check)"
    local table
    table=$(nvidia-smi --query-gpu=memory.free,memory.total --format=csv,noheader,nounits 2>&1) \
        || die 4 "nvidia-smi failed: $table"
    local -a rows=()
    mapfile -t rows <<<"$table"
    local short=() gpu free total need line
    for gpu in "${GPU_LIST[@]}"; do
        ((gpu < ${#rows[@]})) || die 4 "GPU $gpu: nvidia-smi lists ${#rows[@]} GPU(s) (indices 0..$((${#rows[@]} - 1)))"
        line=${rows[gpu]//[[:space:]]/}
        [[ $line =~ ^([0-9]+),([0-9]+)$ ]] || die 4 "GPU $gpu: cannot read nvidia-smi's line: ${rows[gpu]}"
        free=${BASH_REMATCH[1]}
        total=${BASH_REMATCH[2]}
        need=$(((total * UTIL_PERMILLE + 999) / 1000))  # rounded up
        if ((free < need)); then
            short+=("GPU $gpu: $free MiB free of $total MiB; --gpu-memory-utilization $GPU_UTIL asks for $need MiB")
        else
            say "GPU $gpu: $free MiB free of $total MiB, $need MiB asked: ok"
        fi
    done
    ((${#short[@]} == 0)) && return 0
    local msg
    msg=$(printf '%s\n' "${short[@]}")
    msg+=$'\n'"processes holding GPU memory:"$'\n'"$(holders)"
    msg+=$'\n'"nothing was started and nothing was killed. Stop those processes, pick free GPUs with --gpus,"
    msg+=$'\n'"or lower --gpu-memory-utilization (vLLM must still fit the weights, ~16 GB for Qwen3-8B in"
    msg+=$'\n'"bf16, plus KV cache for --max-model-len: see docs/deploy.md)."
    while IFS= read -r line; do say "$line"; done <<<"$msg"
    exit 3
}

# --- the command ------------------------------------------------------------------------------
read -r -a VLLM <<<"${VLLM_CMD:-vllm}"
CMD=("${VLLM[@]}" serve "$MODEL"
    --served-model-name "$SERVED_NAME"
    --host "$HOST" --port "$PORT"
    --gpu-memory-utilization "$GPU_UTIL"
    --max-model-len "$MAX_LEN"
    --reasoning-parser qwen3)
((TP > 1)) && CMD+=(--tensor-parallel-size "$TP")
[[ $DTYPE != auto ]] && CMD+=(--dtype "$DTYPE")
CMD+=("${EXTRA[@]}")

if ((DRY_RUN)); then
    printf 'CUDA_VISIBLE_DEVICES=%s\n' "$CUDA_VISIBLE_DEVICES"
    [[ -n ${VLLM_ATTENTION_BACKEND:-} ]] && printf 'VLLM_ATTENTION_BACKEND=%s\n' "$VLLM_ATTENTION_BACKEND"
    [[ -n ${HF_ENDPOINT:-} ]] && printf 'HF_ENDPOINT=%s\n' "$HF_ENDPOINT"
    printf '%q ' "${CMD[@]}"
    echo
    exit 0
fi

# GET /health; a wildcard bind is probed on loopback.
PROBE_HOST=$HOST
[[ $PROBE_HOST == 0.0.0.0 || $PROBE_HOST == "::" || -z $PROBE_HOST ]] && PROBE_HOST=127.0.0.1
[[ $PROBE_HOST == *:* && $PROBE_HOST != \[* ]] && PROBE_HOST="[$PROBE_HOST]"
HEALTH_URL="http://$PROBE_HOST:$PORT/health"
healthy() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 2 "$HEALTH_URL" 2>/dev/null
    else
        python3 - "$HEALTH_URL" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
    fi
}
if [[ $MODE == wait ]]; then  # --wait-healthy: no check, no start; vLLM is someone else's
    deadline=$((SECONDS + HEALTH_TIMEOUT))
    until healthy; do
        ((SECONDS < deadline)) || die 1 "$HEALTH_URL did not answer within ${HEALTH_TIMEOUT}s"
        sleep "$HEALTH_INTERVAL"
    done
    say "$HEALTH_URL answers"
    exit 0
fi

# Background mode: refuse a second instance on the same PID file before touching the GPU check.
if [[ $MODE == background && -f $PID_FILE ]]; then
    old=$(<"$PID_FILE")
    if [[ $old =~ ^[0-9]+$ ]] && kill -0 "$old" 2>/dev/null; then
        die 5 "already running: pid $old (from $PID_FILE); stop it first"
    fi
    rm -f "$PID_FILE"  # stale: the process is gone
fi

((GPU_CHECK)) && check_gpus
[[ $MODE == check ]] && exit 0

command -v "${VLLM[0]}" >/dev/null 2>&1 || die 2 "${VLLM[0]} not found (install vllm, or set VLLM_CMD)"
[[ -n ${HF_ENDPOINT:-} ]] && say "model downloads from HF_ENDPOINT=$HF_ENDPOINT"

if [[ $MODE == foreground ]]; then
    say "exec: ${CMD[*]}"
    exec "${CMD[@]}"
fi

mkdir -p "$(dirname "$PID_FILE")" "$(dirname "$LOG_FILE")"
say "starting: ${CMD[*]}"
say "log: $LOG_FILE"
nohup "${CMD[@]}" >>"$LOG_FILE" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$PID_FILE"

fail() {
    say "$1"
    say "last lines of $LOG_FILE:"
    tail -n 40 "$LOG_FILE" >&2 || true
    exit 1
}

deadline=$((SECONDS + HEALTH_TIMEOUT))
while :; do
    if ! kill -0 "$PID" 2>/dev/null; then
        wait "$PID" 2>/dev/null && status=0 || status=$?
        rm -f "$PID_FILE"
        fail "vLLM (pid $PID) exited with status $status before $HEALTH_URL answered"
    fi
    if healthy; then
        say "vLLM is up: pid $PID, $HEALTH_URL answers, model $SERVED_NAME (pid file $PID_FILE)"
        exit 0
    fi
    if ((SECONDS >= deadline)); then
        # Only the process this script started is stopped, so that a failed start leaves nothing behind.
        kill -TERM "$PID" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$PID" 2>/dev/null || break; sleep 1; done
        kill -KILL "$PID" 2>/dev/null || true
        rm -f "$PID_FILE"
        fail "$HEALTH_URL did not answer within ${HEALTH_TIMEOUT}s; stopped vLLM (pid $PID, started by this script)"
    fi
    sleep "$HEALTH_INTERVAL"
done
