#!/bin/sh
# Runs INSIDE the vivid VM (see tests/daemon_v4l2.rs): `irdistill probe` and
# `irdistill run` against /dev/video0, the second run with a vivid
# `disconnect` mid-stream. Prints @@-marked sections for the host to check.
# Usage: vivid_daemon.sh IRDISTILL MODEL.onnx
set -u
BIN=$1
MODEL=$2

echo "@@PROBE-BEGIN"
"$BIN" probe --json
echo "@@PROBE-RC $?"

echo "@@RUN-BEGIN"
"$BIN" run --source v4l2:/dev/video0 --model "$MODEL" --format NV12 --frames 8 \
	--threads 1 --jsonl - 2>/tmp/run.err
echo "@@RUN-RC $?"
echo "@@RUN-STDERR"
cat /tmp/run.err

# Recovery: disconnect once a few frames are through; the daemon must keep
# running, reopen the camera when vivid is back and finish its frames.
"$BIN" run --source v4l2:/dev/video0 --model "$MODEL" --frames 30 --threads 1 \
	--jsonl /tmp/rec.jsonl --summary /tmp/rec.json 2>/tmp/rec.err &
pid=$!
n=0 # a deadline (60 s), not a timing condition
while [ "$(cat /tmp/rec.jsonl 2>/dev/null | wc -l)" -lt 5 ] && [ $n -lt 600 ]; do
	sleep 0.1
	n=$((n + 1))
done
echo "@@REC-LINES-BEFORE-DISCONNECT $(cat /tmp/rec.jsonl 2>/dev/null | wc -l)"
/usr/bin/v4l2-ctl -d /dev/video0 -c disconnect=1
echo "@@REC-CTL-RC $?"
wait $pid
echo "@@REC-RC $?"
# frame lines (object events, the lines with a "type", left out)
echo "@@REC-LINES $(grep -c -v '"type":' /tmp/rec.jsonl)"
# one line: the summary is pretty-printed JSON
echo "@@REC-SUMMARY $(tr -d '\n' </tmp/rec.json)"
echo "@@REC-STDERR"
cat /tmp/rec.err
echo "@@END"
