#!/usr/bin/env bash
# End-to-end benchmark: seeds N reservations (default 10000; realistic patron reuse, see
# seed_demo.py) into the local stack, runs the release build once against it exactly as
# production would (ENVIRONMENT=local), at bcrypt cost 4 and 7, and prints and writes:
# reservations/s, wall and CPU time, peak RSS, pseudonyms computed, cores used, the
# single-core bcrypt rate measured in the same run, and the bcrypt-bound efficiency
#   (pseudonyms computed / (cores x single-core hashes/s)) / wall time.
#
#   scripts/bench.sh [N]
#   PCR_BENCH_COSTS="7" scripts/bench.sh 100000      only cost 7
#   PCR_BENCH_BIN=/path/to/pc-reserve-poller ...     benchmark another build (no cargo build)
#   PCR_BENCH_TAG=before ...                         suffix of the output files
#   PCR_BENCH_VERIFY=1 ...                           also check every record with the oracle
#   PCR_BENCH_KERNEL=crate ...                      PSEUDONYM_KERNEL for the run and the rate
#   PCR_BENCH_HASH_BIN=...                           the build that measures the single-core rate
#   PCR_BENCH_REPEAT=5 ...                           end-to-end runs per cost (default 3; the median
#                                                    run by efficiency is reported, with the range)
#   PCR_BENCH_RECORDS_PER_SECOND=2000 ...            Kinesis pacing (default 0, off: at cost 4 the
#                                                    kernel outruns a 2-shard stream's 2000 records/s)
#
# Figures go to out/bench-<cost>-<N>.json (the median run, with every run's efficiency) and
# out/bench-<cost>-<N>.run<k>.json (each run), and are printed. The machine's own noise (a
# VM's single-core rate varies by several percent from one minute to the next) is why
# each cost runs several times. The machine's
# load (uptime) is recorded with them: other work on the machine lowers the efficiency.
# Uses the shared demo databases and stream: nothing else may use them meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10000}
COSTS=${PCR_BENCH_COSTS:-"4 7"}
RPS=${PCR_BENCH_RECORDS_PER_SECOND:-0}
REPEAT=${PCR_BENCH_REPEAT:-3}
OUT=out
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*" >&2; }

step "local stack"
scripts/local-stack.sh up >/dev/null
# shellcheck disable=SC1091
. .local/env

if [ -n "${PCR_BENCH_BIN:-}" ]; then
  BIN=$PCR_BENCH_BIN
else
  step "building (release)"
  cargo build --release --locked --bin pc-reserve-poller
  BIN="${CARGO_TARGET_DIR:-target}/release/pc-reserve-poller"
fi
BENCH_BIN=${PCR_BENCH_HASH_BIN:-$BIN}
KERNEL_ARGS=()
if [ -n "${PCR_BENCH_KERNEL:-}" ]; then
  export PSEUDONYM_KERNEL=$PCR_BENCH_KERNEL
  KERNEL_ARGS=(--kernel "$PCR_BENCH_KERNEL")
fi
[ -x /usr/bin/time ] || { echo "bench.sh: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }

for cost in $COSTS; do
  cost2=$(printf %02d "$cost")
  # A fixed benchmark salt of this cost, given in the environment: it overrides the
  # (encrypted) one in config/local.yaml and is what seed_demo.py hashes Redshift with.
  export BCRYPT_SALT="\$2b\$${cost2}\$abcdefghijklmnopqrstuu"
  base="$OUT/bench-$cost-$N${PCR_BENCH_TAG:+-$PCR_BENCH_TAG}"
  for run in $(seq 1 "$REPEAT"); do
  tag="$base.run$run"

  step "cost $cost, run $run/$REPEAT: resetting the stream and cursor, seeding $N reservations"
  scripts/local-stack.sh reset >/dev/null
  .venv/bin/python scripts/demo/seed_demo.py --reservations "$N" 2>"$tag.seed.log"

  step "cost $cost: single-core bcrypt rate (before)"
  "$BENCH_BIN" bench-hash --cost "$cost" --seconds 3 "${KERNEL_ARGS[@]}" | tee "$tag.rate-before.json"
  "$BENCH_BIN" bench-hash --cost "$cost" --seconds 3 --kernel crate | tee "$tag.rate-crate.json"

  step "cost $cost: ENVIRONMENT=local pc-reserve-poller"
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  python3 scripts/bench/cpu_snapshot.py take "$tag.cpu-before.json"
  ENVIRONMENT=local KINESIS_MAX_RECORDS_PER_SECOND=$RPS \
    /usr/bin/time -v -o "$tag.time" "$BIN" >"$tag.log" 2>&1 || {
    tail -5 "$tag.log" >&2
    echo "bench.sh: the run failed (log: $tag.log)" >&2
    exit 1
  }
  python3 scripts/bench/cpu_snapshot.py take "$tag.cpu-after.json"
  python3 scripts/bench/cpu_snapshot.py diff "$tag.cpu-before.json" "$tag.cpu-after.json" >"$tag.cpu.json"
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)
  grep "run finished" "$tag.log" >&2

  step "cost $cost: single-core bcrypt rate (after)"
  "$BENCH_BIN" bench-hash --cost "$cost" --seconds 3 "${KERNEL_ARGS[@]}" | tee "$tag.rate-after.json"

  if [ "${PCR_BENCH_VERIFY:-0}" = 1 ]; then
    step "cost $cost: checking every record against the independent oracle"
    .venv/bin/python scripts/demo/verify_demo.py
  fi

  python3 - "$tag" "$cost" "$N" "$(nproc)" "$load_before" "$load_after" "$RPS" <<'EOF'
import json, re, sys, platform
tag, cost, n, cores, load_before, load_after, rps = sys.argv[1:]
cores = int(cores)
time_v = open(f"{tag}.time").read()

def field(name):
    m = re.search(rf"^\s*{re.escape(name)}: (.*)$", time_v, re.M)
    return m.group(1).strip()

def clock(text):
    secs = 0.0
    for part in text.split(":"):
        secs = secs * 60 + float(part)
    return secs

wall = clock(field("Elapsed (wall clock) time (h:mm:ss or m:ss)"))
user, system = float(field("User time (seconds)")), float(field("System time (seconds)"))
rss_kb = int(field("Maximum resident set size (kbytes)"))
log = open(f"{tag}.log").read()
summary = re.search(r"run finished.*", log).group(0)
num = lambda k: int(re.search(rf"\b{k}=(\d+)", summary).group(1))
run_seconds = float(re.search(r"duration=([\d.]+)s", summary).group(1))
busy_line = re.search(r"busy=(.*)", log)
busy = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)s", busy_line.group(1))} if busy_line else {}
rate = lambda f: json.load(open(f))
before, after, crate = rate(f"{tag}.rate-before.json"), rate(f"{tag}.rate-after.json"), rate(f"{tag}.rate-crate.json")
single = (before["hashes_per_second"] + after["hashes_per_second"]) / 2
pseudonyms = num("pseudonyms_computed")
reservations = num("reservations")
cpu = json.load(open(f"{tag}.cpu.json"))
services = {k.removesuffix("_cpu_seconds"): v for k, v in cpu.items() if k.endswith("_cpu_seconds")}
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
out = {
    "reservations": reservations,
    "cost": int(cost),
    "reservations_per_second": round(reservations / wall, 1),
    "wall_seconds": round(wall, 3),
    "run_loop_seconds": run_seconds,
    "cpu_seconds": round(user + system, 3),
    "user_seconds": user,
    "system_seconds": system,
    "peak_rss_mb": round(rss_kb / 1024, 1),
    "pseudonyms_computed": pseudonyms,
    "memo_hits": num("memo_hits"),
    "cores": cores,
    "cores_used": round((user + system) / wall, 2),
    "kernel": before["kernel"],
    "single_core_hashes_per_second": round(single, 1),
    "single_core_hashes_per_second_bcrypt_crate": crate["hashes_per_second"],
    "kernel_speedup_vs_crate": round(single / crate["hashes_per_second"], 3),
    "bcrypt_bound_efficiency": round(pseudonyms / (cores * single) / wall, 3),
    "bcrypt_bound_efficiency_run_loop": round(pseudonyms / (cores * single) / run_seconds, 3),
    "stage_busy_seconds": busy,
    "bcrypt_stage_busy_fraction": round(busy["bcrypt"] / run_seconds, 3) if busy else None,
    "local_services_cpu_seconds": services,
    "machine_idle_core_seconds": cpu["machine_idle_core_seconds"],
    "kinesis_records_per_second_limit": int(rps),
    "load_average_before": load_before,
    "load_average_after": load_after,
    "cpu_model": model,
    "nproc": cores,
    "summary": summary,
}
json.dump(out, open(f"{tag}.json", "w"), indent=1)
print(f"\nbench N={n} cost={cost}: {out['reservations_per_second']} reservations/s; wall {wall:.2f} s "
      f"(run loop {run_seconds:.2f} s); CPU {user + system:.2f} s; peak RSS {out['peak_rss_mb']} MB; "
      f"{pseudonyms} pseudonyms computed ({out['memo_hits']} memo hits); cores {cores}, used {out['cores_used']}; "
      f"single-core {single:.0f} hashes/s ({before['kernel']}; bcrypt crate {crate['hashes_per_second']:.0f}); "
      f"bcrypt-bound efficiency {100 * out['bcrypt_bound_efficiency']:.1f}% "
      f"(run loop {100 * out['bcrypt_bound_efficiency_run_loop']:.1f}%); "
      f"bcrypt stage busy {out['bcrypt_stage_busy_fraction']} of the run loop; "
      f"local services' CPU during the run {sum(services.values()):.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in services.items())}), "
      f"machine idle {cpu['machine_idle_core_seconds']:.2f} core-s; "
      f"load {load_before} -> {load_after}; written to {tag}.json")
EOF
  done

  python3 - "$base" "$REPEAT" <<'EOF'
import json, sys
base, repeat = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{base}.run{k}.json")) for k in range(1, repeat + 1)]
effs = [r["bcrypt_bound_efficiency"] for r in runs]
median = sorted(runs, key=lambda r: r["bcrypt_bound_efficiency"])[(len(runs) - 1) // 2]
out = dict(median, runs=len(runs), efficiency_each_run=effs,
           efficiency_median=median["bcrypt_bound_efficiency"],
           efficiency_min=min(effs), efficiency_max=max(effs),
           reservations_per_second_each_run=[r["reservations_per_second"] for r in runs],
           peak_rss_mb_max=max(r["peak_rss_mb"] for r in runs))
json.dump(out, open(f"{base}.json", "w"), indent=1)
print(f"\n== {base}.json: median of {len(runs)} runs: bcrypt-bound efficiency "
      f"{100 * out['efficiency_median']:.1f}% (each run: {', '.join(f'{100 * e:.1f}%' for e in effs)}); "
      f"{out['reservations_per_second']} reservations/s; wall {out['wall_seconds']} s; "
      f"peak RSS {out['peak_rss_mb']} MB (max {out['peak_rss_mb_max']} MB)")
EOF
done
