#!/usr/bin/env python3
"""Where the machine's CPU went while a benchmark ran.

    cpu_snapshot.py take FILE            record the counters now
    cpu_snapshot.py diff BEFORE AFTER    print JSON: seconds per group between the two

Counters: /proc/stat (the whole machine: busy and idle core-seconds) and, per process,
utime+stime+cutime+cstime grouped by what the process is (moto, the schema server,
MariaDB, PostgreSQL). Children's time counts once reaped, so PostgreSQL backends that
ended during the run are included in the postmaster's figure.
"""
import json
import os
import sys

TICK = os.sysconf("SC_CLK_TCK")


def group_of(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return None
    if "moto_server" in cmd:
        return "moto"
    if "schema_server.py" in cmd:
        return "schema_server"
    if comm in ("mariadbd", "mysqld"):
        return "mariadb"
    if comm.startswith("postgres") or "postgres" in cmd.split(" ", 1)[0]:
        return "postgresql"
    return None


def take() -> dict:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    machine = {"busy": sum(fields[:8]) - idle, "idle": idle}
    groups: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        group = group_of(pid)
        if group is None:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces) start at state.
        rest = stat[stat.rindex(")") + 2 :].split()
        ticks = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
        groups[group] = groups.get(group, 0) + ticks
    return {"machine": machine, "groups": groups}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "take":
        with open(sys.argv[2], "w") as f:
            json.dump(take(), f)
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        before, after = (json.load(open(p)) for p in sys.argv[2:])
        out = {
            "machine_busy_core_seconds": (after["machine"]["busy"] - before["machine"]["busy"]) / TICK,
            "machine_idle_core_seconds": (after["machine"]["idle"] - before["machine"]["idle"]) / TICK,
        }
        for group in sorted(set(before["groups"]) | set(after["groups"])):
            delta = after["groups"].get(group, 0) - before["groups"].get(group, 0)
            out[f"{group}_cpu_seconds"] = max(delta, 0) / TICK
        print(json.dumps(out))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
