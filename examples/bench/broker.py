# The broker section's script, run by `flux python` inside a real broker: loads the
# module against the simulated API server, takes it through the section's phases and
# writes what it measured to $BENCH_DIR/results.json. Before and after each phase it
# writes a mark file ($BENCH_DIR/<phase>-start, -end) holding the wall clock in
# nanoseconds, so that the bench can count the API requests of that phase in the
# simulator's log.
#
# Environment: BENCH_DIR, BENCH_RANKS, BENCH_IDLE_SECS, BENCH_CYCLES ("HIGH:LOW:COUNT" or
# empty), BENCH_LOAD (the `flux module load` arguments after the module path), SO.

import json
import os
import subprocess
import time

import flux

DIR = os.environ["BENCH_DIR"]
RANKS = int(os.environ["BENCH_RANKS"])
IDLE_SECS = float(os.environ["BENCH_IDLE_SECS"])
CYCLES = os.environ.get("BENCH_CYCLES", "")
MODULE = "libfluxk8s"

handle = flux.Flux()
broker_pid = int(handle.attr_get("broker.pid"))
results = {"phases": {}, "rss_kib": {}, "status": {}, "cycles": []}


def rss_kib():
    with open(f"/proc/{broker_pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


def mark(name):
    with open(os.path.join(DIR, name), "w") as out:
        out.write(str(time.time_ns()))


def status_text(payload=None):
    return handle.rpc(f"{MODULE}.status", payload).get_str()


def status(payload=None):
    return json.loads(status_text(payload))


def until(condition, what, timeout=600.0, interval=0.02):
    """Polls the status until `condition(status)` holds; the status that satisfied it."""
    deadline = time.monotonic() + timeout
    while True:
        s = status()
        if condition(s):
            return s
        if time.monotonic() > deadline:
            raise RuntimeError(f"status never showed {what}: {json.dumps(s)[:4000]}")
        time.sleep(interval)


def pods(s, phase=None):
    groups = (s["kubernetes"]["view"] or {}).get("pods", [])
    return sum(g["count"] for g in groups if phase is None or g["phase"] == phase)


def ranks_in_phase(s, phase):
    """How many ranks the plan puts in `phase`."""
    return sum(idset_len(g["ranks"]) for g in s["plan"]["ranks"] if g["phase"] == phase)


def idset_len(text):
    total = 0
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def done(s):
    """Nothing pending in the plan and no command at the driver: a phase that ends here has
    sent every request of its own (an Event follows its size patch)."""
    return not s["plan"]["pending"] and s["in_flight"] == 0


def phase(name, body):
    """Runs one phase between its marks; keeps its wall time and the module's callbacks
    before and after, for per-phase means."""
    before = status()["callbacks"]
    mark(f"{name}-start")
    started = time.monotonic()
    extra = body()
    wall = time.monotonic() - started
    mark(f"{name}-end")
    results["phases"][name] = {
        "wall_s": wall,
        "callbacks_before": before,
        "callbacks_after": status()["callbacks"],
        **(extra or {}),
    }


def load():
    started = time.monotonic()
    args = os.environ["BENCH_LOAD"].split()
    subprocess.run(["flux", "module", "load", os.environ["SO"], *args], check=True)
    until(
        lambda s: s["kubernetes"]["synced"] and s["flux"]["synced"],
        "both views synced",
        interval=0.005,
    )
    results["startup_s"] = time.monotonic() - started


def idle():
    """The idle window, with the broker's RSS read each minute (the module is not asked)."""
    start = handle.rpc(f"{MODULE}.stats-get").get()
    each_minute = []
    deadline = time.monotonic() + IDLE_SECS
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(60.0, left))
        each_minute.append(rss_kib())
    end = handle.rpc(f"{MODULE}.stats-get").get()
    return {
        "rss_kib_each_minute": each_minute,
        "wakeups": end["counters"]["wakeups"] - start["counters"]["wakeups"],
        "journal_replies": end["flux"]["journal"]["replies"]
        - start["flux"]["journal"]["replies"],
        "overlay_replies": end["flux"]["overlay"]["replies"]
        - start["flux"]["overlay"]["replies"],
    }


def resize(size):
    handle.rpc(f"{MODULE}.resize", {"size": size}).get()


def grow():
    resize(RANKS)
    until(lambda s: pods(s, "Running") == RANKS and done(s), f"{RANKS} pods running")


def plain_statuses():
    """Twenty plain status requests: their size and round trip as the client sees it."""
    sizes, trips = [], []
    for _ in range(20):
        started = time.perf_counter()
        text = status_text()
        trips.append(time.perf_counter() - started)
        sizes.append(len(text))
    trips.sort()
    return {"bytes": max(sizes), "round_trip_p50_s": trips[len(trips) // 2]}


def storm_ranks():
    """The middle half of the ranks, at least one: 2500-7499 of 10,000."""
    low = max(1, RANKS // 4)
    high = max(low, low + RANKS // 2 - 1)
    return low, min(high, RANKS - 2)


def storm():
    """Drains the middle ranks in one request; how long until the plan has settled them
    (their brokers never started, so no shutdown is due: the module only plans)."""
    low, high = storm_ranks()
    actions_before = status()["engine"]["actions"]
    started = time.monotonic()
    handle.rpc(
        "resource.drain",
        {"targets": f"{low}-{high}", "reason": "bench storm", "mode": "update"},
    ).get()
    s = until(
        lambda s: idset_len(s["flux"]["drained"]) >= high - low + 1
        and not s["plan"]["pending"]
        and ranks_in_phase(s, "retiring") == 0,
        "the storm's ranks settled",
        interval=0.005,
    )
    return {
        "ranks": f"{low}-{high}",
        "settled_s": time.monotonic() - started,
        "actions": s["engine"]["actions"] - actions_before,
    }


def startup_timeout():
    until(
        lambda s: idset_len(s["flux"]["drained"]) >= RANKS - 1
        and ranks_in_phase(s, "starting") == 0
        and done(s),
        "every rank that never started drained",
    )


def shrink():
    resize(1)
    until(
        lambda s: pods(s) == 1 and done(s),
        "one pod left and nothing pending",
    )


def detail():
    """Every rank's detail, page after page as `flux k8s status all` asks for it."""
    pages, largest, asked = 0, 0, f"0-{RANKS - 1}"
    seen = 0
    while asked:
        text = status_text({"ranks": asked})
        page = json.loads(text)
        pages += 1
        largest = max(largest, len(text))
        seen += len(page.get("detail", []))
        asked = page.get("detail_rest", "")
    if seen != RANKS:
        raise RuntimeError(f"the detail pages named {seen} ranks of {RANKS}")
    return {"pages": pages, "largest_page_bytes": largest}


def cycles():
    high, low, count = (int(n) for n in CYCLES.split(":"))
    for cycle in range(count):
        resize(high)
        until(lambda s: pods(s, "Running") == high, f"{high} pods running")
        resize(low)
        until(
            lambda s: pods(s) == low and done(s),
            f"{low} pods and nothing pending",
        )
        results["cycles"].append(rss_kib())


time.sleep(1)
results["rss_kib"]["before"] = rss_kib()
load()
try:
    time.sleep(1)
    results["rss_kib"]["loaded"] = rss_kib()
    if IDLE_SECS > 0:
        phase("idle", idle)
        results["rss_kib"]["after_idle"] = rss_kib()
    if CYCLES:
        phase("cycles", cycles)
    else:
        phase("grow", grow)
        phase("status", plain_statuses)
        phase("storm", storm)
        phase("timeout", startup_timeout)
        phase("shrink", shrink)
        phase("detail", detail)
    results["rss_kib"]["end"] = rss_kib()
    last = status()
    results["callbacks"] = last["callbacks"]
    results["requests"] = last["requests"]
    with open(os.path.join(DIR, "results.json"), "w") as out:
        json.dump(results, out)
finally:
    # A module still loaded when the broker exits is cancelled in place.
    subprocess.run(["flux", "module", "remove", MODULE], check=True)
