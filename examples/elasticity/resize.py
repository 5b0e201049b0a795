#!/usr/bin/env python3
"""Change the size of a Flux instance on Kubernetes by asking Flux, not Kubernetes.

This program talks only to the Flux instance it runs in: fluxk8s (loaded on rank 0)
receives the request over a Flux RPC, chooses which ranks go or come, and drives
Kubernetes itself. The program needs no Kubernetes credentials and no Kubernetes client.

Run it inside the instance, as the instance owner for anything but `status`:

    flux python resize.py status            # sizes, each rank and why, problems
    flux python resize.py resize 6          # ask for 6 live ranks
    flux python resize.py retire 2,5        # retire these ranks for good
    flux python resize.py tour 3 6 4        # resize to each size in turn, waiting each time

Use --service libfluxk8s if the module was loaded without --name=fluxk8s.
"""

import argparse
import errno
import sys
import time

import flux


def call(handle, service, method, payload=None):
    """One request to rank 0's fluxk8s; a refusal ends the program with its reason."""
    try:
        return handle.rpc(f"{service}.{method}", payload, nodeid=0).get()
    except OSError as err:
        name = errno.errorcode.get(err.errno, str(err.errno))
        sys.exit(f"{service}.{method}: {name}: {err.strerror}")


def shown(value):
    """A size that may be unknown (null in the status)."""
    return "-" if value is None else value


def show_status(status):
    plan = status["plan"]
    print(
        f"live ranks {status['real_size']}, asked for {shown(status['desired_size'])}, "
        f"Kubernetes size {shown(plan['kube_size'])}, most {status['max_size']}"
    )
    print(f"online {status['flux']['online'] or '-'}, drained {status['flux']['drained'] or '-'}")
    for group in plan["ranks"]:
        print(f"  ranks {group['ranks']:<9} {group['phase']:<9} {group['why']}")
    for line in plan["waiting"]:
        print(f"waiting: {line}")
    for limit in plan["limits"]:
        print(f"limit: {limit}")
    if plan["frozen"]:
        print(f"frozen: {plan['frozen']}")
    for problem in status["kubernetes"]["problems"]:
        print(f"kubernetes {problem['area']}: {problem['what']}")
    for problem in status["problems"]:
        print(f"problem: {problem['what']}")


def show_answer(answer):
    print(
        f"requested {answer['requested']}, target {answer['target']}, "
        f"reachable {answer['reachable']}" + ("" if answer["changed"] else " (unchanged)")
    )
    for limit in answer["limited_by"]:
        print(f"limited by: {limit}")


def wait_for(handle, service, size, timeout):
    """Polls the status until `size` ranks are live; False if the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        status = call(handle, service, "status")
        live = status["real_size"]
        print(f"  {live} live ({status['flux']['online']} online)")
        if live == size:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", default="fluxk8s", help="module name (default fluxk8s)")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds tour waits for each size"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    sub.add_parser("resize").add_argument("size", type=int)
    sub.add_parser("retire").add_argument("ranks", help="an idset, e.g. 2 or 3-5,7")
    sub.add_parser("tour").add_argument("sizes", type=int, nargs="+")
    args = parser.parse_args()

    handle = flux.Flux()
    if args.command == "status":
        show_status(call(handle, args.service, "status"))
    elif args.command == "resize":
        show_answer(call(handle, args.service, "resize", {"size": args.size}))
    elif args.command == "retire":
        answer = call(handle, args.service, "retire", {"ranks": args.ranks})
        print(
            f"retiring {answer['accepted'] or '-'}, already going {answer['already'] or '-'}, "
            f"asked-for size now {answer['desired_size']}"
        )
    else:
        for size in args.sizes:
            answer = call(handle, args.service, "resize", {"size": size})
            show_answer(answer)
            # Holes that cannot come back may keep the target out of reach.
            goal = min(answer["target"], answer["reachable"])
            if not wait_for(handle, args.service, goal, args.timeout):
                show_status(call(handle, args.service, "status"))
                sys.exit(f"{goal} live ranks not reached in {args.timeout:.0f}s")


if __name__ == "__main__":
    main()
