"""vbdecl status NAME: the environment's resources with their live state."""

from __future__ import annotations

import argparse
import time
from typing import Any

HELP = "show an environment's resources and their live state"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")


def run(args: argparse.Namespace) -> int:
    from vbdecl.cli.cmd_ls import signal_name
    from vbdecl.cli.progress import emit_json
    from vbdecl.engine import journal, lock, paths, store
    from vbdecl.engine.executor import Engine
    from vbdecl.plan.diff import ENDS_ON_ITS_OWN
    from vbdecl.runtime.live import killed_by, process_tree, read_exit

    state_dir = str(paths.state_root(args.state_dir))
    name = args.name
    state = store.load(name, state_dir)
    if state is None:
        raise store.not_committed(name, state_dir)
    open_txn = journal.open_transaction(journal.read(paths.journal_file(name, state_dir)))
    holder = lock.holder(paths.lock_file(name, state_dir))
    s = Engine(state_dir).reader(name)
    live = s.live()
    resources: list[dict[str, Any]] = []
    all_res = state.get("resources") or {}
    order = [a["id"] for a in (state.get("plan") or {}).get("actions", []) if a["id"] in all_res]
    order += [i for i in all_res if i not in order]
    for rid in order:
        res = all_res[rid]
        if rid not in live:
            status = "unknown (probe failed)"
        elif live[rid] is None:
            status = "exited" if res.get("kind") in ENDS_ON_ITS_OWN else "gone"
        elif live[rid] != res.get("record"):
            status = "changed"
        else:
            status = "ok"
        entry: dict[str, Any] = {"id": rid, "kind": res.get("kind"), "status": status,
                                 "record": res.get("record")}
        if status == "exited" and res.get("kind") == "proc.main":
            ended = read_exit(res.get("record"))
            if ended is not None:
                entry["exit_code"] = ended.get("exit_code")
                entry["signal"] = killed_by(ended)
                entry["exited_at"] = ended.get("time")        # unix time, as in history
                if isinstance(ended.get("oom_kills"), int):   # (while it ran; older records: none)
                    entry["oom_kills"] = ended["oom_kills"]
            # what it started and left running (a daemon): a restart or a destroy ends it
            entry["left_running"] = len(process_tree(res.get("record") or {}))
        if res.get("kind") == "cgroup.group" and res.get("record"):
            try:
                from vbdecl.ops import cgroup

                entry["usage"] = cgroup.usage(res["record"], all_res)
            except Exception as exc:
                entry["usage_error"] = str(exc)
        if res.get("kind") == "proc.main" and status in ("ok", "exited") and "exit_code" not in entry \
                and _supervisor_gone(res.get("record") or {}):
            # killed before it wrote the exit record (by the process itself, root inside,
            # or from the host): how the process ended, or will end, goes unrecorded
            entry["supervisor_gone"] = True
        resources.append(entry)
    labels = state["plan"].get("labels") or {}
    out = {"name": name, "instance": state["instance"], "revision": state.get("revision"),
           "serial": state.get("serial"), "lineage": state.get("lineage"), "labels": labels,
           "open_transaction": bool(open_txn), "locked_by": holder, "resources": resources}
    if args.json:
        emit_json(out)
        return 0
    print(f"{name}  instance {state['instance']}  revision {state.get('revision')}  "
          f"serial {state.get('serial')}")
    if labels:      # (a review never saw them anywhere)
        print("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    if open_txn and holder is None:
        print(f"  an interrupted command left an open transaction: run vbdecl recover {name}")
    elif open_txn:      # (its transaction is open because it runs)
        print("  a command is changing it now")
    if holder is not None:      # (its command, when the holder's record or /proc names one)
        pid, command = holder.get("pid"), holder.get("command")
        print(f"  locked by {f'pid {pid}' if pid else 'another process'}" + (f" ({command})" if command else ""))
    width = max((len(r["id"]) for r in resources), default=2)
    oom_kills = next((((r["usage"].get("memory") or {}).get("oom_kills") or 0) for r in resources
                      if isinstance(r.get("usage"), dict)), 0)
    for r in resources:
        status = str(r["status"])
        sig = r.get("signal") if "exit_code" in r else None
        if isinstance(sig, int) and status == "exited":
            status = f"killed by {signal_name(sig)}"    # (as `vbdecl ls` says it)
        if r.get("supervisor_gone"):
            status += (", with a code no one recorded (its supervisor was killed first)" if status == "exited"
                       else "; its supervisor was killed: no one will record how it ends")
        line = f"  {r['id'].ljust(width)}  {str(r['kind']).ljust(16)}  {status}"
        if "exit_code" in r:
            code = r["exit_code"]
            line += f" (code {code})" if isinstance(sig, int) else f" with code {code}"
            # the kills while it ran, where its supervisor counted them; else the group's
            kills = r.get("oom_kills", oom_kills)
            if code == 137 and kills:
                line += (f", likely out of memory ({kills} OOM kill{'s' if kills > 1 else ''} in its memory "
                         f"cgroup{' while it ran' if 'oom_kills' in r else ''})")
            if isinstance(r.get("exited_at"), (int, float)):
                line += " at " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["exited_at"]))
        if r.get("left_running"):
            n = r["left_running"]
            line += (f"; {n} process{'es' if n > 1 else ''} it started still run"
                     f"{'s' if n == 1 else ''} (a restart or a destroy ends {'them' if n > 1 else 'it'})")
        if "usage" in r:
            line += "  " + usage_text(r["usage"])
        line += address_text(r, resources)
        print(line)
    return 0


def _supervisor_gone(record: dict[str, Any]) -> bool:
    """Whether the process's supervisor, which writes its exit record, is gone."""
    from vbdecl.sys.proc import alive

    sup = record.get("supervisor")
    return isinstance(sup, dict) and isinstance(sup.get("pid"), int) and \
        not alive(sup["pid"], sup.get("start_time"))


def address_text(r: dict[str, Any], resources: list[dict[str, Any]]) -> str:
    """``  10.88.0.2/24 on bridge vbdecl0`` for a net.address resource (address or
    address6): what --json gives in its record, which the text showed nowhere."""
    rec = r.get("record")
    if r.get("kind") != "net.address" or not isinstance(rec, dict) or not rec.get("address"):
        return ""
    text = f"  {rec['address']}" + (f"/{rec['prefixlen']}" if rec.get("prefixlen") is not None else "")
    bridge = next((x["record"].get("bridge") for x in resources
                   if x.get("kind") == "net.veth" and isinstance(x.get("record"), dict)), None)
    return text + (f" on bridge {bridge}" if bridge else "")


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-" if n is None else str(n)
    value = float(n)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(value) < 1024 or unit == "Ti":
            return str(n) if unit == "" else f"{value:.1f}{unit}".replace(".0" + unit, unit)
        value /= 1024
    return str(n)


def usage_text(usage: dict[str, Any]) -> str:
    """``memory 284Ki/64Mi (peak 5.5Mi)  cpu 14.8ms  pids 2/32`` from cgroup usage."""
    parts = []
    for key, val in usage.items():
        if val is None:
            continue        # no such controller for this environment
        if not isinstance(val, dict):
            parts.append(f"{key} {val}")
        elif key == "memory":
            text = f"memory {_size(val.get('current'))}/{_size(val.get('limit')) if val.get('limit') else 'max'}"
            if val.get("peak"):
                text += f" (peak {_size(val['peak'])})"
            if val.get("oom_kills"):
                text += f" oom_kills={val['oom_kills']}"
            parts.append(text)
        elif key == "cpu":
            usec = val.get("usage_usec")
            parts.append("cpu " + (f"{usec / 1000:.1f}ms" if isinstance(usec, int) else "-")
                         + (f" (limit {val['limit']} cores)" if val.get("limit") else "")
                         + (f" (weight {val['weight']})" if val.get("weight") not in (None, 100) else ""))
        elif key == "pids":
            parts.append(f"pids {val.get('current')}/{val.get('limit') or 'max'}")
        else:
            parts.append(f"{key} " + " ".join(f"{k}={v}" for k, v in val.items()))
    return "  ".join(parts)
