#!/usr/bin/env bash
# The peers' virtual environments for benchmarks/http_bench.py, under /tmp/bench/venvs ({base,mlserver,
# bentoml,ray}; about 5 minutes), and wrk. Each peer runs from its own venv so that its dependencies never
# meet augury's. The versions are those the peers were measured with (BENCHMARKS.md); --latest drops the
# == pins but keeps the < caps (the two workarounds below). --skip-apt: wrk is already installed.
# Usage: bash benchmarks/peers/setup_envs.sh [--latest] [--skip-apt]
set -euo pipefail
B=/tmp/bench
LATEST=0; APT=1
for a in "$@"; do
  case "$a" in --latest) LATEST=1 ;; --skip-apt) APT=0 ;; *) echo "unknown argument $a" >&2; exit 2 ;; esac
done
pin() { if [ "$LATEST" = 1 ]; then echo "$1" | sed -E 's/==.*$//'; else echo "$1"; fi; }

if [ "$APT" = 1 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
mkdir -p $B/venvs $B/results

mk() {
  local name=$1; shift
  local pkgs=()
  for p in "$@"; do pkgs+=("$(pin "$p")"); done
  [ -x "$B/venvs/$name/bin/python" ] || python3 -m venv "$B/venvs/$name"
  "$B/venvs/$name/bin/pip" install -q -U pip
  "$B/venvs/$name/bin/pip" install -q "${pkgs[@]}"
  "$B/venvs/$name/bin/pip" freeze > "$B/results/freeze_$name.txt"
  echo "venv $name ready ($(wc -l < $B/results/freeze_$name.txt) packages)"
}

# base: the naive Starlette peers (scikit-learn and onnxruntime per request) and make_peer_models.py.
# protobuf<7: skl2onnx 1.20.0's HistGradientBoosting converter fails under protobuf 7.x
#   ("Field onnx.AttributeProto.ints: Expected an int, got a boolean").
mk base numpy==2.4.6 scikit-learn==1.9.1 joblib==1.6.0 skl2onnx==1.20.0 onnx==1.23.2 protobuf==6.33.6 'protobuf<7' \
   onnxruntime==1.32.0 starlette==1.10.0 "uvicorn[standard]==0.54.0" uvloop==0.23.0 httptools==0.9.0 \
   orjson==3.13.0 psutil==7.2.2
# mlserver: uvloop<0.22 because MLServer 1.7.1's parallel worker calls asyncio.get_event_loop() in a
#   fresh process, which uvloop 0.23.0 rejects ("There is no current event loop").
mk mlserver mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn==1.9.1 numpy==2.4.6 joblib==1.6.0 uvloop==0.21.0 'uvloop<0.22'
mk bentoml bentoml==1.4.40 scikit-learn==1.9.1 numpy==2.4.6 joblib==1.6.0
mk ray "ray[serve]==2.60.0" scikit-learn==1.9.1 numpy==2.4.6 joblib==1.6.0 psutil==7.2.2
