"""The stand-in's Job controller, scheduler, kubelet and garbage collector: Jobs and pods
in memory, each pod's container a local process (the image ignored), its output its log."""

from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import threading
import uuid
from typing import Any

from shapes import Invalid, check_job, next_rv, now, now_s, status

LOCK = threading.RLock()
JOBS: dict[tuple[str, str], dict[str, Any]] = {}
PODS: dict[tuple[str, str], Pod] = {}
HISTORY: list[Pod] = []
CONFIG: dict[str, Any] = {"token": None, "gpus": 0}


class Pod:
    """A Job's pod: its object, and the local process standing in for its container."""

    def __init__(self, ns: str, job: dict[str, Any]) -> None:
        jname = job["metadata"]["name"]
        uid = job["metadata"]["uid"]
        suffix = "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(5))
        self.ns, self.name = ns, f"{jname}-{suffix}"
        self.job_key = (ns, jname)
        tmpl = job["spec"]["template"]
        labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
        self.spec = json.loads(json.dumps(tmpl["spec"]))
        self.container = self.spec["containers"][0]
        self.obj: dict[str, Any] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": self.name,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "resourceVersion": next_rv(),
                "creationTimestamp": now_s(),
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": jname,
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": self.spec,
            "status": {
                "phase": "Pending",
                "conditions": [],
                "containerStatuses": [
                    {
                        "name": self.container["name"],
                        "image": self.container["image"],
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                ],
            },
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[tuple[str, str]] = []
        self.argv: list[str] = list(self.container.get("command") or []) + list(
            self.container.get("args") or []
        )
        self.exit: int | None = None
        self.deleting = False

    def grace(self) -> int:
        g = self.spec.get("terminationGracePeriodSeconds")
        return g if isinstance(g, int) else 30

    def cstatus(self) -> dict[str, Any]:
        first: dict[str, Any] = self.obj["status"]["containerStatuses"][0]
        return first

    def schedule(self) -> None:
        """The scheduler and the kubelet: place the pod, pull the image, start the process."""
        want = str(
            ((self.container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", "0")
        )
        if int(want or 0) > CONFIG["gpus"]:
            self.obj["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "lastTransitionTime": now_s(),
                    "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. "
                    "preemption: 0/1 nodes are available: 1 No preemption victims found "
                    "for incoming pod.",
                }
            ]
            del self.obj["status"]["containerStatuses"]
            return
        self.obj["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_s()}
        ]
        self.obj["spec"]["nodeName"] = "standin-node"
        if self.container["image"].startswith("standin.invalid/"):
            img = self.container["image"]
            self.cstatus()["state"] = {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{img}"',
                }
            }
            return
        if not self.argv:
            self.cstatus()["state"] = {
                "waiting": {
                    "reason": "CreateContainerError",
                    "message": "the stand-in runs no image entrypoint: give a command",
                }
            }
            return
        env = {
            k: os.environ[k]
            for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
            if k in os.environ
        }
        env["HOSTNAME"] = self.name
        for e in self.container.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
        cwd = self.container.get("workingDir") or None
        if cwd:
            os.makedirs(cwd, exist_ok=True)
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            self.terminated(128, "StartError", f"exec: {self.argv[0]!r}: {err.strerror}")
            return
        self.obj["status"]["phase"] = "Running"
        self.obj["status"]["startTime"] = now_s()
        self.obj["status"]["podIP"] = "10.0.0.2"
        self.cstatus().update(
            {"ready": True, "started": True, "state": {"running": {"startedAt": now_s()}}}
        )
        threading.Thread(target=self.follow, daemon=True).start()

    def follow(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            with LOCK:
                self.log.append((now(), raw.decode("utf-8", "replace").rstrip("\n")))
        code = self.proc.wait()
        with LOCK:
            if code < 0:
                self.terminated(128 - code, "Error", "")
            else:
                self.terminated(code, "Completed" if code == 0 else "Error", "")

    def terminated(self, code: int, reason: str, message: str) -> None:
        self.exit = code
        started = self.cstatus().get("state", {}).get("running", {}).get("startedAt", now_s())
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now_s()}
        if message:
            term["message"] = message
        self.cstatus().update({"ready": False, "started": False, "state": {"terminated": term}})
        self.obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        self.obj["metadata"]["resourceVersion"] = next_rv()
        job_pod_ended(self)
        if self.deleting:
            PODS.pop((self.ns, self.name), None)

    def alive(self) -> bool:
        """Whether a process of the pod's process group still runs (zombies do not)."""
        return self.proc is not None and group_alive(self.proc.pid)

    def delete(self, grace: int | None) -> None:
        g = self.grace() if grace is None else grace
        if not self.deleting:
            self.obj["metadata"]["deletionTimestamp"] = now_s()
        self.deleting = True
        self.obj["metadata"]["deletionGracePeriodSeconds"] = g
        if self.proc is None or self.exit is not None:
            PODS.pop((self.ns, self.name), None)
            return
        self.signal(signal.SIGKILL if g == 0 else signal.SIGTERM)
        if g > 0:
            t = threading.Timer(g, self.signal, (signal.SIGKILL,))
            t.daemon = True
            t.start()

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def record(self) -> dict[str, Any]:
        return {
            "namespace": self.ns,
            "name": self.name,
            "job": self.job_key[1],
            "pid": self.proc.pid if self.proc else None,
            "argv": self.argv,
            "exit": self.exit,
            "alive": self.alive(),
            "deleted": self.deleting,
            "in_api": (self.ns, self.name) in PODS,
        }


def group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command's name: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def job_pod_ended(pod: Pod) -> None:
    """The Job controller's part: count the ended pod, retry or write the final condition."""
    job = JOBS.get(pod.job_key)
    if job is None or job["metadata"]["uid"] != pod.obj["metadata"]["ownerReferences"][0]["uid"]:
        return
    st = job["status"]
    if any(c["type"] in ("Complete", "Failed") for c in st.get("conditions", [])):
        return
    st["active"] = max(0, st.get("active", 0) - 1)
    st["ready"] = 0
    job["metadata"]["resourceVersion"] = next_rv()
    if pod.exit == 0:
        st["succeeded"] = st.get("succeeded", 0) + 1
        st["completionTime"] = now_s()
        st["conditions"] = st.get("conditions", []) + [
            {
                "type": "Complete",
                "status": "True",
                "lastProbeTime": now_s(),
                "lastTransitionTime": now_s(),
            }
        ]
        return
    st["failed"] = st.get("failed", 0) + 1
    if st["failed"] <= job["spec"].get("backoffLimit", 6):
        start_pod(pod.ns, job)
        return
    st["conditions"] = st.get("conditions", []) + [
        {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
            "lastProbeTime": now_s(),
            "lastTransitionTime": now_s(),
        }
    ]


def start_pod(ns: str, job: dict[str, Any]) -> None:
    pod = Pod(ns, job)
    PODS[(ns, pod.name)] = pod
    HISTORY.append(pod)
    st = job["status"]
    st["active"] = st.get("active", 0) + 1
    st.setdefault("startTime", now_s())
    pod.schedule()
    if pod.proc is not None:
        st["ready"] = 1
    deadline = job["spec"].get("activeDeadlineSeconds")
    if isinstance(deadline, int) and not st.get("_timer"):
        st["_timer"] = True
        t = threading.Timer(
            deadline, deadline_passed, (ns, job["metadata"]["name"], job["metadata"]["uid"])
        )
        t.daemon = True
        t.start()


def deadline_passed(ns: str, name: str, uid: str) -> None:
    with LOCK:
        job = JOBS.get((ns, name))
        if job is None or job["metadata"]["uid"] != uid:
            return
        st = job["status"]
        if any(c["type"] in ("Complete", "Failed") for c in st.get("conditions", [])):
            return
        st["_deadline"] = True
        st["conditions"] = st.get("conditions", []) + [
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
                "lastProbeTime": now_s(),
                "lastTransitionTime": now_s(),
            }
        ]
        for pod in owned(ns, name, uid):
            pod.delete(None)
        st["active"] = 0


def owned(ns: str, name: str, uid: str) -> list[Pod]:
    return [
        p
        for p in PODS.values()
        if p.ns == ns
        and p.obj["metadata"].get("ownerReferences")
        and p.obj["metadata"]["ownerReferences"][0]["uid"] == uid
    ]


def public(job: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(job))
    for k in [k for k in out["status"] if k.startswith("_")]:
        del out["status"][k]
    return out


def create_job(ns: str, body: Any) -> tuple[int, dict[str, Any]]:
    if (
        not isinstance(body, dict)
        or body.get("apiVersion") != "batch/v1"
        or body.get("kind") != "Job"
    ):
        return status(400, "BadRequest", "the body must be a batch/v1 Job")
    if (body.get("metadata") or {}).get("namespace") not in (None, ns):
        return status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    try:
        check_job(body, ns)
    except Invalid as e:
        name = (body.get("metadata") or {}).get("name", "")
        return status(
            422,
            "Invalid",
            f'Job.batch "{name}" is invalid: {e.field}: {e.message}',
            {
                "name": name,
                "group": "batch",
                "kind": "Job",
                "causes": [{"reason": e.reason, "message": e.message, "field": e.field}],
            },
        )
    name = body["metadata"]["name"]
    if (ns, name) in JOBS:
        return status(
            409,
            "AlreadyExists",
            f'jobs.batch "{name}" already exists',
            {"name": name, "group": "batch", "kind": "jobs"},
        )
    job = json.loads(json.dumps(body))
    uid = str(uuid.uuid4())
    job["metadata"].update(
        {
            "namespace": ns,
            "uid": uid,
            "resourceVersion": next_rv(),
            "generation": 1,
            "creationTimestamp": now_s(),
        }
    )
    spec = job["spec"]
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completions", 1)
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    tl = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
    tl.update(
        {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
    )
    job["status"] = {}
    JOBS[(ns, name)] = job
    if not spec["suspend"]:
        start_pod(ns, job)
    return 201, public(job)


def delete_options(query: dict[str, str], body: Any) -> dict[str, Any]:
    opts = dict(body) if isinstance(body, dict) else {}
    for k in ("propagationPolicy", "gracePeriodSeconds"):
        if k in query:
            opts[k] = int(query[k]) if k == "gracePeriodSeconds" else query[k]
    return opts


def delete_job(ns: str, name: str, opts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    job = JOBS.get((ns, name))
    if job is None:
        return status(
            404,
            "NotFound",
            f'jobs.batch "{name}" not found',
            {"name": name, "group": "batch", "kind": "jobs"},
        )
    uid = job["metadata"]["uid"]
    # batch/v1's default garbage-collection policy for a Job is to orphan its pods.
    policy = opts.get("propagationPolicy", "Orphan")
    pods = owned(ns, name, uid)
    if policy == "Orphan":
        for p in pods:
            p.obj["metadata"]["ownerReferences"] = []
        del JOBS[(ns, name)]
    elif policy == "Background":
        del JOBS[(ns, name)]
        for p in pods:
            p.delete(None)
    elif policy == "Foreground":
        job["metadata"]["deletionTimestamp"] = now_s()
        job["metadata"]["finalizers"] = ["foregroundDeletion"]
        for p in pods:
            p.delete(None)
        threading.Thread(target=finish_foreground, args=(ns, name, uid), daemon=True).start()
        return 200, public(job)
    else:
        return status(400, "BadRequest", f"propagationPolicy: Unsupported value: {policy!r}")
    return 200, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": "batch", "kind": "jobs", "uid": uid},
    }


def finish_foreground(ns: str, name: str, uid: str) -> None:
    while True:
        with LOCK:
            if not owned(ns, name, uid):
                if (ns, name) in JOBS and JOBS[(ns, name)]["metadata"]["uid"] == uid:
                    del JOBS[(ns, name)]
                return
        threading.Event().wait(0.1)


def select(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
            continue
        k, _, v = term.replace("==", "=").partition("=")
        if labels.get(k.strip()) != v.strip():
            return False
    return True


def pod_log(pod: Pod, query: dict[str, str]) -> tuple[int, Any]:
    if pod.proc is None and pod.exit is None:
        reason = (
            pod.cstatus().get("state", {}).get("waiting", {}).get("reason", "ContainerCreating")
            if "containerStatuses" in pod.obj["status"]
            else "PodInitializing"
        )
        return status(
            400,
            "BadRequest",
            f'container "{pod.container["name"]}" in pod "{pod.name}" '
            f"is waiting to start: {reason}",
        )
    since = query.get("sinceTime")
    lines = [(t, s) for t, s in pod.log if since is None or t[:19] >= since[:19]]
    stamps = query.get("timestamps") in ("true", "1")
    text = "".join(f"{t} {s}\n" if stamps else f"{s}\n" for t, s in lines)
    limit = int(query.get("limitBytes", "0") or 0)
    if limit > 0:
        text = text.encode()[:limit].decode("utf-8", "ignore")
    return 200, text
