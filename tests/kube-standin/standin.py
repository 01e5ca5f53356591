"""A stand-in Kubernetes API server for Stepwatch's tests: NOT a real kube-apiserver.

It serves only what the Kubernetes engine calls (batch/v1 Jobs: create, get, delete; v1
Pods: list by label, get, delete, log), with the real objects' shapes (Status answers
with reason NotFound / AlreadyExists / Invalid, metadata uid / resourceVersion /
creationTimestamp, Job status counts and Complete / Failed conditions, pod phases and
container states), and plays the Job controller and the kubelet: each Job gets one pod
whose container command RUNS as a local process (the image is ignored) with the
container's env and workingDir, its output kept as the pod's log. It records every
request (GET /_standin/requests) and every pod it ran (GET /_standin/pods).

What it does like the real thing: 409 AlreadyExists for a second Job of one name;
422 Invalid for a Job without a container image, a name that is not a DNS-1123 label,
command / args that are not lists of strings, a restartPolicy other than Never /
OnFailure; deleting a Job orphans its pods unless propagationPolicy is Background or
Foreground (batch/v1's default), and the garbage collector gives pods their own
terminationGracePeriodSeconds (default 30): SIGTERM, then SIGKILL; a pod deleted with
gracePeriodSeconds 0 is killed at once; activeDeadlineSeconds ends a Job with
DeadlineExceeded; backoffLimit retries; an image under `standin.invalid/` stays Pending
with ErrImagePull / ImagePullBackOff; a pod asking for more nvidia.com/gpu than --gpus
stays Pending, Unschedulable; a missing executable ends with exit code 128, StartError.

What it does NOT do: authentication beyond one bearer token (no RBAC, no admission, no
quotas), watches, PATCH / PUT (so a suspended Job is never admitted), field selectors,
set-based label selectors, namespaces as objects, schema validation of fields it does not
use, Indexed / parallel Jobs, pod restarts (restartPolicy OnFailure), images, volumes,
resource limits (nothing is enforced), multiple containers (only the first one runs).
"""

import argparse
import http.server
import json
import os
import re
import signal
import ssl
import sys
import threading
import urllib.parse
from typing import Any

from cluster import (
    CONFIG,
    HISTORY,
    JOBS,
    LOCK,
    PODS,
    create_job,
    delete_job,
    delete_options,
    pod_log,
    public,
    select,
)
from shapes import RV, status

REQUESTS: list[dict[str, Any]] = []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        if os.environ.get("STANDIN_VERBOSE"):
            sys.stderr.write("standin: " + fmt % args + "\n")

    def send(self, code: int, body: Any) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header(
            "Content-Type", "text/plain" if isinstance(body, str) else "application/json"
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self.send(*status(400, "BadRequest", "the body is not JSON"))
            return
        path = url.path
        if not path.startswith("/_standin/"):
            with LOCK:
                REQUESTS.append({"method": method, "path": path, "query": query, "body": body})
            if CONFIG["token"] and self.headers.get("Authorization") != f"Bearer {CONFIG['token']}":
                self.send(*status(401, "Unauthorized", "Unauthorized"))
                return
        with LOCK:
            code, answer = route(method, path, query, body)
        self.send(code, answer)
        if path == "/_standin/shutdown":
            threading.Thread(target=shutdown, daemon=True).start()

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def do_DELETE(self) -> None:
        self.handle_any("DELETE")


def route(method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
    if path == "/_standin/requests":
        return 200, REQUESTS
    if path == "/_standin/pods":
        return 200, [p.record() for p in HISTORY]
    if path == "/_standin/shutdown":
        return 200, {"ok": True}
    m = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?", path)
    if m:
        ns, name = m.group(1), m.group(2)
        if name is None and method == "POST":
            return create_job(ns, body)
        if name is None and method == "GET":
            items = [
                public(j)
                for (n, _), j in JOBS.items()
                if n == ns
                and select(j["metadata"].get("labels") or {}, query.get("labelSelector", ""))
            ]
            return 200, {
                "kind": "JobList",
                "apiVersion": "batch/v1",
                "metadata": {"resourceVersion": str(RV[0])},
                "items": items,
            }
        if name is not None and method == "GET":
            job = JOBS.get((ns, name))
            if job is None:
                return status(
                    404,
                    "NotFound",
                    f'jobs.batch "{name}" not found',
                    {"name": name, "group": "batch", "kind": "jobs"},
                )
            return 200, public(job)
        if name is not None and method == "DELETE":
            return delete_job(ns, name, delete_options(query, body))
        return status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?", path)
    if m:
        ns, name, log = m.group(1), m.group(2), m.group(3)
        if name is None and method == "GET":
            items = [
                p.obj
                for (n, _), p in PODS.items()
                if n == ns and select(p.obj["metadata"]["labels"], query.get("labelSelector", ""))
            ]
            return 200, {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(RV[0])},
                "items": items,
            }
        pod = PODS.get((ns, name or ""))
        if pod is None:
            return status(
                404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"}
            )
        if log and method == "GET":
            return pod_log(pod, query)
        if method == "GET":
            return 200, pod.obj
        if method == "DELETE":
            opts = delete_options(query, body)
            pod.delete(opts.get("gracePeriodSeconds"))
            return 200, pod.obj
    return status(404, "NotFound", "the server could not find the requested resource")


def shutdown() -> None:
    with LOCK:
        for p in HISTORY:
            p.signal(signal.SIGKILL)
    os._exit(0)


def exit_with_parent(parent: int) -> None:
    """A test killed outright leaves no stand-in (nor pod processes) behind."""
    while os.getppid() == parent:
        threading.Event().wait(0.5)
    shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default=None, help="the bearer token every API call must carry")
    ap.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu the one node has")
    ap.add_argument("--tls-cert", help="serve https with this certificate (PEM)")
    ap.add_argument("--tls-key", help="and this key (PEM)")
    args = ap.parse_args()
    CONFIG["token"], CONFIG["gpus"] = args.token, args.gpus
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: shutdown())
    # Plain http for the tests' own calls (/_standin/…) whatever the API speaks.
    control = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    ports = {"port": server.server_address[1], "control_port": control.server_address[1]}
    print(json.dumps(ports), flush=True)
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
