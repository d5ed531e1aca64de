"""deploy/vllm/start.sh without a GPU: a fake `nvidia-smi` prints canned CSV and a fake `vllm`
serves /health on the port it was given, both first on PATH in a temp folder. The script must refuse
(naming the processes that hold the memory, starting nothing) when a GPU is short of what
--gpu-memory-utilization asks, check every GPU of a tensor-parallel run, and otherwise start vLLM in
the background, wait for /health and write its PID and log files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.harness import free_port

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "deploy" / "vllm" / "start.sh"

FAKE_NVIDIA_SMI = """\
import os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("nvidia-smi " + " ".join(sys.argv[1:]) + "\\n")
args = " ".join(sys.argv[1:])
if "--query-gpu=memory.free,memory.total" in args:
    for gpu in filter(None, os.environ["FAKE_GPUS"].split(";")):
        print(gpu.replace(",", ", "))          # nvidia-smi writes "20000, 81920"
elif "--query-compute-apps=pid,process_name,used_memory" in args:
    for app in filter(None, os.environ.get("FAKE_APPS", "").split(";")):
        print(app.replace(",", ", "))
else:
    sys.exit("fake nvidia-smi: unexpected arguments: " + args)
"""

# argv: serve MODEL --flag value ... ; records argv and the environment it was given, then serves
# GET /health unless FAKE_VLLM_MODE says to exit at once or never to answer.
FAKE_VLLM = """\
import http.server, json, os, sys, time
argv = sys.argv[1:]
env = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "VLLM_ATTENTION_BACKEND", "CUDA_VISIBLE_DEVICES",
                                      "CUDA_DEVICE_ORDER")}
with open(os.environ["FAKE_VLLM_RECORD"], "w") as f:
    json.dump({"argv": argv, "env": env, "pid": os.getpid()}, f)
print("fake vllm: starting", " ".join(argv), flush=True)
mode = os.environ.get("FAKE_VLLM_MODE", "serve")
if mode == "exit":
    print("fake vllm: CUDA out of memory (simulated)", flush=True)
    sys.exit(7)
if mode == "exit0":
    sys.exit(0)
if mode == "hang":
    while True:
        time.sleep(1)
host, port = argv[argv.index("--host") + 1], int(argv[argv.index("--port") + 1])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

http.server.HTTPServer((host, port), Health).serve_forever()
"""

ENOUGH = "81000,81920"  # MiB free, total: 0.90 x 81920 = 73728 asked
SHORT = "20000,81920"
HOLDERS = "4242,python3,30000;4343,ollama serve,31000"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, source in (("nvidia-smi", FAKE_NVIDIA_SMI), ("vllm", FAKE_VLLM)):
            path = self.bin / name
            path.write_text(f"#!{sys.executable}\n{source}")
            path.chmod(0o755)
        self.record = tmp / "vllm-record.json"
        self.pid_file = tmp / "run" / "vllm.pid"
        self.log_file = tmp / "logs" / "vllm.log"
        self.calls = tmp / "calls.log"
        self.calls.touch()
        self.started: list[int] = []

    def run(self, *args: str, gpus: str = ENOUGH, apps: str = "", timeout: float = 60,
            **extra_env: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("VLLM_", "CUDA_", "HF_ENDPOINT"))}
        env.update(PATH=f"{self.bin}{os.pathsep}{env['PATH']}", FAKE_LOG=str(self.calls), FAKE_GPUS=gpus,
                   FAKE_APPS=apps, FAKE_VLLM_RECORD=str(self.record), VLLM_HEALTH_INTERVAL="0.1",
                   VLLM_PID_FILE=str(self.pid_file), VLLM_LOG_FILE=str(self.log_file))
        env.update(extra_env)
        proc = subprocess.run(["bash", str(START), *args], cwd=self.tmp, env=env, capture_output=True,
                              text=True, timeout=timeout)
        if self.pid_file.exists():
            self.started.append(int(self.pid_file.read_text()))
        return proc

    def recorded(self) -> dict:
        return json.loads(self.record.read_text())

    def stop_all(self) -> None:
        for pid in self.started:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.stop_all()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_refuses_when_gpu_memory_is_short_and_names_the_holders(env: Env) -> None:
    proc = env.run("--port", str(free_port()), gpus=SHORT, apps=HOLDERS)
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr
    assert "GPU 0: 20000 MiB free of 81920 MiB" in err
    assert "--gpu-memory-utilization 0.90 asks for 73728 MiB" in err
    assert "pid 4242  python3  30000 MiB" in err
    assert "pid 4343  ollama serve  31000 MiB" in err
    assert "nothing was killed" in err
    # nothing started, nothing written
    assert not env.record.exists()
    assert not env.pid_file.exists() and not env.log_file.exists()
    calls = env.calls.read_text()
    assert "--query-gpu=memory.free,memory.total --format=csv,noheader,nounits" in calls
    assert "--query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits" in calls


def test_refusal_says_when_no_holder_is_visible(env: Env) -> None:
    proc = env.run(gpus=SHORT, apps="")
    assert proc.returncode == 3
    assert "none listed" in proc.stderr


def test_lower_utilisation_passes_the_same_gpu(env: Env) -> None:
    # 20000 free of 81920: 0.24 asks for 19661 MiB, which fits
    proc = env.run("--check-only", "--gpu-memory-utilization", "0.24", gpus=SHORT, apps=HOLDERS)
    assert proc.returncode == 0, proc.stderr
    assert "19661 MiB asked: ok" in proc.stderr
    assert not env.record.exists()


def test_starts_in_background_waits_for_health_and_writes_pid_and_log(env: Env) -> None:
    port = free_port()
    proc = env.run("--port", str(port))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "vLLM is up" in proc.stderr
    pid = int(env.pid_file.read_text())
    assert alive(pid)
    assert env.recorded()["pid"] == pid  # the PID file names vLLM itself, not a wrapper
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        assert r.status == 200
    assert "fake vllm: starting" in env.log_file.read_text()
    argv = env.recorded()["argv"]
    assert argv[:2] == ["serve", "Qwen/Qwen3-8B"]
    joined = " ".join(argv)
    for flag in ("--served-model-name Qwen/Qwen3-8B", "--gpu-memory-utilization 0.90",
                 "--max-model-len 32768", "--reasoning-parser qwen3", "--host 127.0.0.1", f"--port {port}"):
        assert flag in joined
    assert "--dtype" not in argv and "--tensor-parallel-size" not in argv
    assert env.recorded()["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    # a second start on the same PID file is refused while the first runs
    again = env.run("--port", str(free_port()))
    assert again.returncode == 5 and f"already running: pid {pid}" in again.stderr


def test_tensor_parallel_checks_both_gpus(env: Env) -> None:
    short_second = env.run("--tensor-parallel-size", "2", gpus=f"{ENOUGH};{SHORT}", apps=HOLDERS)
    assert short_second.returncode == 3
    assert "GPU 0: 81000 MiB free of 81920 MiB, 73728 MiB asked: ok" in short_second.stderr
    assert "GPU 1: 20000 MiB free of 81920 MiB" in short_second.stderr
    assert not env.record.exists()

    one_gpu = env.run("--tensor-parallel-size", "2", gpus=ENOUGH)
    assert one_gpu.returncode == 4 and "GPU 1: nvidia-smi lists 1 GPU(s)" in one_gpu.stderr

    # two 24 GB cards: 0.90 x 24576 = 22119 MiB asked of each
    port = free_port()
    ok = env.run("--tensor-parallel-size", "2", "--port", str(port), gpus="24000,24576;23900,24576")
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.count("22119 MiB asked: ok") == 2
    rec = env.recorded()
    assert rec["argv"][rec["argv"].index("--tensor-parallel-size") + 1] == "2"
    assert rec["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert rec["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_gpus_option_picks_which_gpus_are_checked(env: Env) -> None:
    # GPU 0 is taken, GPUs 2 and 3 are free: --gpus 2,3 checks (and uses) only those
    gpus = f"{SHORT};{SHORT};{ENOUGH};{ENOUGH}"
    proc = env.run("--tensor-parallel-size", "2", "--gpus", "2,3", "--port", str(free_port()), gpus=gpus)
    assert proc.returncode == 0, proc.stderr
    assert "GPU 0" not in proc.stderr
    assert env.recorded()["env"]["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_v100_mode_sets_the_attention_backend_and_half_precision(env: Env) -> None:
    proc = env.run("--v100", "--port", str(free_port()), gpus="32000,32768")
    assert proc.returncode == 0, proc.stderr
    rec = env.recorded()
    assert rec["env"]["VLLM_ATTENTION_BACKEND"] == "TORCH_SDPA"
    assert rec["argv"][rec["argv"].index("--dtype") + 1] == "half"
    env.stop_all()
    # bfloat16 on a V100 is refused before anything runs
    bad = env.run("--v100", "--dtype", "bfloat16")
    assert bad.returncode == 2 and "no bfloat16" in bad.stderr


def test_hf_endpoint_is_passed_through(env: Env) -> None:
    port = free_port()
    proc = env.run("--port", str(port), HF_ENDPOINT="https://hf-mirror.com")
    assert proc.returncode == 0, proc.stderr
    assert env.recorded()["env"]["HF_ENDPOINT"] == "https://hf-mirror.com"
    env.stop_all()
    env.pid_file.unlink()
    flag = env.run("--port", str(free_port()), "--hf-endpoint", "https://mirror.example")
    assert flag.returncode == 0, flag.stderr
    assert env.recorded()["env"]["HF_ENDPOINT"] == "https://mirror.example"


def test_local_model_path(env: Env, tmp_path: Path) -> None:
    model = tmp_path / "Qwen3-8B"
    model.mkdir()
    missing = env.run("--model-path", str(model))
    assert missing.returncode == 2 and "no config.json" in missing.stderr
    (model / "config.json").write_text("{}")
    proc = env.run("--model-path", str(model), "--port", str(free_port()), "--", "--max-num-seqs", "64")
    assert proc.returncode == 0, proc.stderr
    argv = env.recorded()["argv"]
    assert argv[:2] == ["serve", str(model)]
    assert argv[argv.index("--served-model-name") + 1] == "Qwen/Qwen3-8B"
    assert argv[-2:] == ["--max-num-seqs", "64"]


def test_vllm_that_dies_is_reported_with_its_log_tail(env: Env) -> None:
    proc = env.run("--port", str(free_port()), FAKE_VLLM_MODE="exit")
    assert proc.returncode == 1
    assert "exited with status 7" in proc.stderr
    assert "CUDA out of memory (simulated)" in proc.stderr  # the log tail
    assert not env.pid_file.exists()


def test_health_timeout_stops_only_the_process_it_started(env: Env) -> None:
    proc = env.run("--port", str(free_port()), "--health-timeout", "1", FAKE_VLLM_MODE="hang")
    assert proc.returncode == 1
    assert "did not answer within 1s" in proc.stderr
    assert "fake vllm: starting" in proc.stderr
    pid = env.recorded()["pid"]
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    assert not env.pid_file.exists()


def test_foreground_execs_vllm_after_the_check(env: Env) -> None:
    proc = env.run("--foreground", FAKE_VLLM_MODE="exit0")
    assert proc.returncode == 0, proc.stderr
    assert env.record.exists() and not env.pid_file.exists()
    refused = env.run("--foreground", gpus=SHORT, apps=HOLDERS)
    assert refused.returncode == 3


def test_missing_nvidia_smi_is_an_error_not_a_guess(env: Env) -> None:
    (env.bin / "nvidia-smi").unlink()
    # PATH without the folders that might hold a real nvidia-smi
    proc = env.run(PATH=f"{env.bin}{os.pathsep}/usr/bin{os.pathsep}/bin")
    if shutil.which("nvidia-smi", path=f"{env.bin}{os.pathsep}/usr/bin{os.pathsep}/bin"):
        pytest.skip("this machine has a real nvidia-smi")
    assert proc.returncode == 4 and "nvidia-smi not found" in proc.stderr
    skipped = env.run("--no-gpu-check", "--port", str(free_port()),
                      PATH=f"{env.bin}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert skipped.returncode == 0, skipped.stderr


@pytest.mark.parametrize("args", [["--gpu-memory-utilization", "1.5"], ["--port", "x"], ["--bogus"],
                                  ["--tensor-parallel-size", "2", "--gpus", "0"], ["--model"]])
def test_bad_usage_exits_2(env: Env, args: list[str]) -> None:
    proc = env.run(*args)
    assert proc.returncode == 2, proc.stderr
    assert not env.record.exists()


def test_help_documents_every_option() -> None:
    out = subprocess.run(["bash", str(START), "--help"], capture_output=True, text=True, check=True).stdout
    options = {line.split()[0] for line in START.read_text().splitlines()
               if line.strip().startswith("--") and ")" in line and "case" not in line}
    parsed = {o.rstrip(")") for o in options if o.rstrip(")").startswith("--")}
    assert parsed >= {"--model", "--gpus", "--v100", "--hf-endpoint", "--foreground", "--check-only"}
    for option in parsed - {"--"}:
        assert option in out, option
    for var in ("HF_ENDPOINT", "VLLM_CMD", "VLLM_PID_FILE", "VLLM_LOG_FILE", "VLLM_ATTENTION_BACKEND"):
        assert var in out


def test_shellcheck_clean() -> None:
    found = shutil.which("shellcheck")
    if not found:
        message = "shellcheck not found: run `bash tests/tools.sh` (Debian package shellcheck)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: a missing tool is a failure)", pytrace=False)
        pytest.skip(message)
    proc = subprocess.run([found, "--severity=style", str(START)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wait_healthy_waits_for_a_server_it_did_not_start(env: Env) -> None:
    port = free_port()
    nothing = env.run("--wait-healthy", "--port", str(port), "--health-timeout", "1")
    assert nothing.returncode == 1 and "did not answer within 1s" in nothing.stderr
    assert not env.record.exists()  # starts nothing, checks no GPU
    assert "nvidia-smi" not in env.calls.read_text()
    started = env.run("--port", str(port))
    assert started.returncode == 0, started.stderr
    ok = env.run("--wait-healthy", "--host", "0.0.0.0", "--port", str(port), "--health-timeout", "5")
    assert ok.returncode == 0 and "answers" in ok.stderr


def test_cuda_visible_devices_by_uuid_is_not_guessed(env: Env) -> None:
    uuid = "GPU-8f1c2a3b-0000-1111-2222-333344445555"
    refused = env.run(CUDA_VISIBLE_DEVICES=uuid)
    assert refused.returncode == 2 and "--gpus" in refused.stderr
    assert not env.record.exists()
    kept = env.run("--no-gpu-check", "--port", str(free_port()), CUDA_VISIBLE_DEVICES=uuid)
    assert kept.returncode == 0, kept.stderr
    assert env.recorded()["env"]["CUDA_VISIBLE_DEVICES"] == uuid  # left as the operator set it
    env.stop_all()
    env.pid_file.unlink()
    # numeric CUDA_VISIBLE_DEVICES: those GPUs are the ones checked
    proc = env.run("--port", str(free_port()), gpus=f"{SHORT};{ENOUGH}", CUDA_VISIBLE_DEVICES="1")
    assert proc.returncode == 0, proc.stderr
    assert "GPU 1: 81000 MiB free" in proc.stderr and "GPU 0" not in proc.stderr
