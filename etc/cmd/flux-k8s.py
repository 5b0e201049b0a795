##############################################################
# flux k8s: show and steer the fluxk8s broker module.
#
# Install this file, executable, as flux-k8s.py in a directory on FLUX_EXEC_PATH (or
# FLUX_EXEC_PATH_PREPEND): `flux k8s ...` then runs it under flux-core's own Python
# with the flux bindings on the path, as it does for its built-in Python commands.
##############################################################

import argparse
import errno
import json
import os
import sys
import time

import flux

PROG = "flux-k8s"

# Exit codes of `--wait` beyond 0 (reached), 1 (refused, or the module went away) and
# argparse's 2 (usage).
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4


class ModuleError(Exception):
    """The module (or the broker on its behalf) answered a request with an error."""

    def __init__(self, topic, err):
        code = err.errno or errno.EIO
        text = err.strerror or os.strerror(code)
        if code == errno.ENOSYS:
            module = topic.split(".")[0]
            text = f"module {module} is not loaded (no service {topic})"
        name = errno.errorcode.get(code, str(code))
        super().__init__(f"{topic}: {text} ({name})")


class Unreachable(Exception):
    """The size waited for cannot be reached; the text says why."""


class TimedOut(Exception):
    """`--timeout` passed before what was waited for happened."""


def call(handle, topic, payload=None):
    """One request to rank 0, where the module runs; returns the decoded answer."""
    try:
        answer = handle.rpc(topic, payload, nodeid=0).get_str()
    except OSError as err:
        raise ModuleError(topic, err) from None
    return json.loads(answer) if answer else {}


def words(value):
    """An idset, number or list as one short word; '-' when empty or unset."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def describe_action(action):
    """`{"Flux": {"Drain": {"ranks": "2", ...}}}` as `flux drain ranks=2 ...`."""
    if not isinstance(action, dict) or len(action) != 1:
        return json.dumps(action)
    (side, inner), = action.items()
    if isinstance(inner, dict) and len(inner) == 1:
        (verb, fields), = inner.items()
    else:
        verb, fields = str(inner), {}
    args = " ".join(f"{k}={v}" for k, v in (fields or {}).items())
    return f"{side.lower()} {verb.lower()} {args}".strip()


def table(rows, header):
    """Left-aligned columns, the last one free-form."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(r[i]) for r in rows + [header]) for i in range(len(header) - 1)
    ]
    lines = []
    for row in [header] + rows:
        cells = [c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return lines


def rank_rows(status):
    """One row per rank of the status's detail: Flux state, planner phase, pods, why."""
    fl = status.get("flux", {})
    sets = {}
    for key in ("online", "lost", "torpid", "drained", "never_started", "busy"):
        sets[key] = idset_members(fl.get(key, ""))
    rows = []
    for entry in status.get("detail", []):
        rank = entry["rank"]
        state = []
        if rank in sets["online"]:
            state.append("online")
        elif rank in sets["lost"]:
            state.append("lost")
        elif rank in sets["never_started"]:
            state.append("never-up")
        else:
            state.append("offline")
        for key in ("drained", "torpid", "busy"):
            if rank in sets[key]:
                state.append(key)
        pod = ",".join(
            f"{p['name']}:{p['phase']}{'(terminating)' if p.get('terminating') else ''}"
            for p in entry.get("pods", [])
        )
        rows.append(
            [rank, "+".join(state), entry["phase"] or "-", pod or "-", entry["why"]]
        )
    return rows


def group_rows(status):
    """One row per group of ranks in the same phase for the same reason."""
    return [
        [g["ranks"], g["phase"], g["why"]]
        for g in status.get("plan", {}).get("ranks", [])
    ]


def pod_summary(view):
    """`Running 0-3 (4), Pending 4` from the status's pod groups."""
    parts = []
    for g in view.get("pods", []):
        state = g["phase"] + (" terminating" if g.get("terminating") else "")
        count = f" ({g['count']})" if g["count"] > 1 else ""
        parts.append(f"{state} {g['indexes']}{count}")
    return ", ".join(parts) or "none"


def idset_members(text):
    """The members of an RFC 22 idset such as "0-2,5"."""
    members = set()
    for part in filter(None, str(text).split(",")):
        lo, _, hi = part.partition("-")
        members.update(range(int(lo), int(hi or lo) + 1))
    return members


def render_status(status):
    plan = status.get("plan", {})
    kube = status.get("kubernetes", {})
    view = kube.get("view") or {}
    job = view.get("job") or {}
    mc = view.get("minicluster") or {}
    fl = status.get("flux", {})
    out = [
        f"{status.get('name')} {status.get('version')}"
        f"  (up {status.get('uptime', 0):.0f}s)",
        "",
        "size:   real {}  desired {}  expected {}  max {}".format(
            words(status.get("real_size")),
            words(status.get("desired_size")),
            words(plan.get("expected_size")),
            words(status.get("max_size")),
        ),
        "flux:   {}  online {}  lost {}  drained {}  torpid {}".format(
            "synced" if fl.get("synced") else "NOT SYNCED",
            words(fl.get("online")),
            words(fl.get("lost")),
            words(fl.get("drained")),
            words(fl.get("torpid")),
        ),
    ]
    if not kube.get("connected"):
        out.append("kubernetes: not connected")
    else:
        sizes = "job {} parallelism {} completions {}".format(
            job.get("name", "?"),
            words(job.get("parallelism")),
            words(job.get("completions")),
        )
        if mc:
            sizes += "  minicluster {} size {} maxSize {}".format(
                mc.get("name"), mc.get("size"), mc.get("max_size")
            )
        out.append(
            "kubernetes: {} namespace {}  {}".format(
                "synced" if kube.get("synced") else "NOT SYNCED",
                kube.get("namespace"),
                sizes if job else "(no view yet)",
            )
        )
        if job:
            out.append(
                "            completed {}  failed {}  pods {}".format(
                    words(job.get("completed_indexes")),
                    words(job.get("failed_indexes")),
                    pod_summary(view),
                )
            )
    if plan.get("frozen"):
        out.append(f"frozen: {plan['frozen']}")
    for why in plan.get("waiting", []):
        out.append(f"waiting: {why}")
    out.append("")
    if "detail" in status:
        out += table(rank_rows(status), ["RANK", "FLUX", "PHASE", "POD", "WHY"])
    else:
        out += table(group_rows(status), ["RANKS", "PHASE", "WHY"])
    pending = plan.get("pending", [])
    out.append("")
    out.append(f"pending actions: {len(pending) or 'none'}")
    for p in pending:
        out.append(
            "  {}  (issued at {:.1f}, {})".format(
                describe_action(p.get("action")),
                p.get("issued_at", 0),
                p.get("outcome") or "in progress",
            )
        )
    problems = [p["what"] for p in status.get("problems", [])]
    problems += [
        f"kubernetes {p['area']}: {p['what']}" for p in kube.get("problems", [])
    ]
    out.append(f"problems: {len(problems) or 'none'}")
    out += [f"  {p}" for p in problems]
    return "\n".join(out)


def render_resize(answer):
    line = "size {requested} requested: target {target}, reachable {reachable}".format(
        **answer
    )
    if not answer.get("changed", True):
        line += " (already the target)"
    for limit in answer.get("limited_by", []):
        fields = ", ".join(f"{k} {v}" for k, v in limit.items() if k != "limit")
        line += f"\n  limited by {limit.get('limit')}: {fields}"
    return line


def render_retire(answer):
    line = "retiring ranks {}".format(words(answer.get("accepted")))
    if answer.get("already"):
        line += f"; already retiring or retired: {answer['already']}"
    if answer.get("desired_size") is not None:
        line += f"; desired size now {answer['desired_size']}"
    return line


def updates(handle, name, deadline=None):
    """Each progress `<name>.watch` sends: one now, then one per change."""
    return responses(handle, f"{name}.watch", None, deadline)


def responses(handle, topic, payload, deadline=None):
    """Each response to a streaming request to rank 0. Ends when the module ends the
    stream with ENODATA; raises TimedOut past `deadline` (monotonic)."""
    future = handle.rpc(
        topic, payload, nodeid=0, flags=flux.constants.FLUX_RPC_STREAMING
    )
    while True:
        if deadline is not None:
            try:
                future.wait_for(max(deadline - time.monotonic(), 0.0))
            except OSError as err:
                if err.errno == errno.ETIMEDOUT:
                    raise TimedOut() from None
                raise ModuleError(topic, err) from None
        try:
            text = future.get_str()
        except OSError as err:
            if err.errno == errno.ENODATA:
                return
            raise ModuleError(topic, err) from None
        future.reset()
        yield json.loads(text)


# Rank phases a progress line names: those on the move or out of line. Up and retired
# ranks are the steady state (at 10,000 ranks, most of them).
MOVING = ("starting", "retiring", "lost", "drained")


def progress_line(progress):
    """One line: the sizes, the ranks on the move and why, what the plan waits on."""
    plan = progress.get("plan", {})
    size = f"size {progress.get('real_size')}"
    if progress.get("desired_size") is not None:
        size += f" of {progress['desired_size']}"
    parts = [f"{size} (expected {words(plan.get('expected_size'))})"]
    parts += [
        f"{g['phase']} {g['ranks']}: {g['why']}"
        for g in plan.get("ranks", [])
        if g["phase"] in MOVING
    ]
    if plan.get("frozen"):
        parts.append(f"frozen: {plan['frozen']}")
    parts += [f"waiting: {why}" for why in plan.get("waiting", [])]
    if progress.get("in_flight"):
        parts.append(f"{progress['in_flight']} action(s) in flight")
    return "; ".join(parts)


class Printer:
    """Prints each progress as a time-stamped line (or JSON), skipping a line that says
    what the last one said: the watch payload holds more than the line shows."""

    def __init__(self, as_json):
        self.as_json = as_json
        self.shown = None

    def show(self, progress):
        line = json.dumps(progress) if self.as_json else progress_line(progress)
        if line != self.shown:
            stamp = "" if self.as_json else time.strftime("%H:%M:%S  ")
            print(stamp + line, flush=True)
            self.shown = line


def settled(progress):
    """Nothing issued and unanswered, nothing in flight."""
    return progress.get("in_flight") == 0 and not progress["plan"].get("pending")


def follow(handle, args, goal, desired, reached, done):
    """Prints each change until `reached(progress)`, then `done`; raises
    Unreachable when a rank fails to start or someone else changes the desired size,
    TimedOut past --timeout."""
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None
    printer = Printer(args.json)
    failures = None
    stream = updates(handle, args.name, deadline)
    while True:
        try:
            progress = next(stream)
        except StopIteration:
            raise ModuleError(
                f"{args.name}.watch",
                OSError(errno.ENODATA, "the module ended the watch"),
            ) from None
        except TimedOut:
            raise TimedOut(
                f"timed out after {args.timeout:g}s waiting for {goal}"
            ) from None
        printer.show(progress)
        if reached(progress):
            print(done, flush=True)
            return
        plan = progress["plan"]
        if failures is not None and plan.get("startup_failures", 0) > failures:
            why = [
                f"ranks {g['ranks']}: {g['why']}"
                for g in plan.get("ranks", [])
                if "never came online" in g["why"]
            ]
            raise Unreachable(
                f"{goal}: a rank failed to start" + (f" ({'; '.join(why)})" if why else "")
            )
        failures = plan.get("startup_failures", 0)
        if progress.get("desired_size") != desired:
            raise Unreachable(
                f"{goal}: the desired size is now {words(progress.get('desired_size'))}"
                " (another request)"
            )


def wait_resize(handle, args, answer):
    if answer.get("limited_by"):
        raise Unreachable(
            f"size {answer['requested']} cannot be reached"
            f" (target {answer['target']}, reachable {answer['reachable']})"
        )
    target = answer["target"]
    follow(
        handle,
        args,
        f"size {target}",
        target,
        lambda p: p.get("real_size") == target and settled(p),
        f"size {target} reached",
    )


def wait_retire(handle, args, answer):
    ranks = idset_members(answer.get("accepted", "")) | idset_members(
        answer.get("already", "")
    )
    desired = answer.get("desired_size")

    def reached(progress):
        retired = set()
        for g in progress["plan"].get("ranks", []):
            if g["phase"] == "retired":
                retired |= idset_members(g["ranks"])
        return (
            ranks <= retired
            and settled(progress)
            and desired in (None, progress.get("real_size"))
        )

    follow(
        handle, args, f"retire {args.ranks}", desired, reached, f"ranks {args.ranks} retired"
    )


def watch(handle, args):
    printer = Printer(args.json)
    for progress in updates(handle, args.name):
        printer.show(progress)


def history_line(entry):
    """One record of the module's history: when, and what changed or was done."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
    kind = entry["kind"]
    if kind == "flux":
        what = f"ranks {entry['ranks']}: {entry['state']}"
    elif kind == "pod":
        what = f"pods {entry['ranks']}: {entry['state']}"
    elif kind == "size":
        what = f"size {entry['size']}"
    elif kind == "request":
        what = f"request: {entry['text']}"
    else:
        what = f"fluxk8s: {entry['text']}"
    return f"{stamp}  {what}"


def history(handle, args):
    """The module's history: as lines, as JSON, as a picture, or followed."""
    topic = f"{args.name}.history"
    payload = {"ranks": args.ranks} if args.ranks is not None else {}
    if args.svg:
        answer = call(handle, topic, dict(payload, svg=True))
        with open(args.svg, "w", encoding="utf-8") as out:
            out.write(answer["svg"])
        print(f"history drawn in {args.svg}")
        return
    if not args.follow:
        answers = [call(handle, topic, payload)]
    else:
        # The records so far, then each batch of new ones as the module sends them.
        answers = responses(handle, topic, payload)
    for answer in answers:
        if args.json:
            print(json.dumps(answer), flush=True)
            continue
        if answer.get("dropped"):
            print(f"({answer['dropped']} older records no longer kept)")
        for entry in answer["entries"]:
            print(history_line(entry), flush=True)


def main():
    parser = argparse.ArgumentParser(
        prog="flux k8s", description="Show and steer the fluxk8s module."
    )
    parser.add_argument(
        "--name",
        default="fluxk8s",
        help="the module's name, i.e. its service prefix (default: fluxk8s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the module's answer as JSON"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="sizes, rank states, pods, pending actions")
    status.add_argument(
        "ranks",
        nargs="?",
        metavar="IDSET|all",
        help="show these ranks one by one, with their pods",
    )
    resize = sub.add_parser("resize", help="ask for N live ranks")
    resize.add_argument("size", type=int, metavar="N")
    retire = sub.add_parser("retire", help="retire these ranks for good")
    retire.add_argument("ranks", metavar="IDSET")
    for command in (resize, retire):
        command.add_argument(
            "--wait",
            action="store_true",
            help="print progress until done; exit 3 if it cannot be, 4 on timeout",
        )
        command.add_argument(
            "--timeout",
            type=float,
            metavar="T",
            help="with --wait: give up after T seconds",
        )
    sub.add_parser("watch", help="one line per change, as it happens")
    hist = sub.add_parser(
        "history", help="what the module saw and did: ranks, pods, requests, actions"
    )
    hist.add_argument(
        "ranks", nargs="?", metavar="IDSET", help="only what concerns these ranks"
    )
    hist.add_argument(
        "--svg", metavar="FILE", help="draw it as a timeline picture in FILE"
    )
    hist.add_argument(
        "-f", "--follow", action="store_true", help="then print new records as they come"
    )
    args = parser.parse_args()
    if args.command == "history" and args.svg and args.follow:
        parser.error("--svg draws the history once: not with --follow")
    if args.command in ("resize", "retire") and args.timeout is not None:
        if not args.wait:
            parser.error("--timeout goes with --wait")
        if args.timeout <= 0:
            parser.error("--timeout must be positive")

    handle = flux.Flux()
    if args.command == "watch":
        watch(handle, args)
        return
    if args.command == "history":
        history(handle, args)
        return
    if args.command == "status":
        topic = f"{args.name}.status"
        ranks = args.ranks
        if ranks == "all":
            size = call(handle, topic).get("max_size") or 0
            ranks = f"0-{size - 1}" if size else ""
        payload = {"ranks": ranks} if ranks is not None else None
        answer, render = call(handle, topic, payload), render_status
    elif args.command == "resize":
        answer = call(handle, f"{args.name}.resize", {"size": args.size})
        render = render_resize
    else:
        answer = call(handle, f"{args.name}.retire", {"ranks": args.ranks})
        render = render_retire
    print(json.dumps(answer, indent=2) if args.json else render(answer), flush=True)
    if getattr(args, "wait", False):
        wait = wait_resize if args.command == "resize" else wait_retire
        wait(handle, args, answer)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        # The reader went away (`flux k8s status | head`): nothing left to say.
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
    except Unreachable as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        sys.exit(EXIT_UNREACHABLE)
    except TimedOut as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        sys.exit(EXIT_TIMEOUT)
    except ModuleError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        print(f"{PROG}: {err.strerror or err}", file=sys.stderr)
        sys.exit(1)
