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

import flux

PROG = "flux-k8s"


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
    args = parser.parse_args()

    handle = flux.Flux()
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
    print(json.dumps(answer, indent=2) if args.json else render(answer))


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        # The reader went away (`flux k8s status | head`): nothing left to say.
        sys.exit(0)
    except ModuleError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        print(f"{PROG}: {err.strerror or err}", file=sys.stderr)
        sys.exit(1)
