"""Load test of `lenet5 serve`: concurrent clients against a server on 127.0.0.1, bounded in count and time.

The server runs as its own process (`python -m lenet5 serve`), with its picture reader processes,
so the memory and CPU figures are theirs (all of them together, from Linux /proc). Each client
posts MNIST test digits made into people's pictures (dark ink on white paper, larger, off-centre,
JPEG), so every request goes through the whole preprocessing. Reported: requests, errors (anything
but a 200 with a digit; must be 0), latency p50/p99, throughput, how many answers match the true
label, the CPU the server and the clients each spent per request (they share the cores), and the
server's resident memory before the load, after it, and at its peak (sampled).

    python bench/load_web.py [CHECKPOINT] [--clients 16] [--requests 40] [--time-limit 120] [--hostile]
                             [--client socket|httpx] [--readers N] [--src OTHER/src]

--src serves another revision's package (a `git worktree`'s src/), so two servers are measured
with the same clients, in turn.

--hostile adds, alongside the normal clients: slow sockets (silent, trickled headers, trickled
bodies), concurrent worst-case uploads (16-bit PNGs at the pixel limit and over it, decompression-
bomb headers, truncated and garbage bodies, wrong content types), garbage requests, and a monitor
polling /api/health. It reports the 5xx count, p99 of the normal requests and of /api/health, how
long the server took to close the slow sockets, and the server's peak memory.

CHECKPOINT is a file or run folder (default: the newest run under runs/). Prints the figures and
writes them as JSON (default: bench/results/load_web.json).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lenet5.checkpoint import resolve  # noqa: E402
from lenet5.data import load_mnist  # noqa: E402


def pictures(data_dir: str, count: int) -> list[tuple[bytes, int]]:
    """(JPEG bytes, label) for the first `count` test digits, drawn as on paper."""
    from PIL import Image

    mnist = load_mnist(data_dir)
    out = []
    for i in range(count):
        digit = Image.fromarray(255 - mnist.test_images[i].numpy()).resize((168, 168), Image.BILINEAR)
        paper = Image.new("L", (260, 210), 255)
        paper.paste(digit, (20 + 7 * (i % 10), 10 + 3 * (i % 7)))
        buf = io.BytesIO()
        paper.save(buf, "JPEG", quality=90)
        out.append((buf.getvalue(), int(mnist.test_labels[i])))
    return out


def processes(pid: int) -> list[int]:
    """The server and its child processes (its picture readers), from Linux /proc."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *children]


class MemoryWatch(threading.Thread):
    """Samples the resident memory of the server and its readers together every `every` seconds
    until stopped; `peak` is the most seen, in MiB. (Each process's own peak, VmHWM, comes at its
    own moment: their sum is only a bound of the whole's peak.) A sample reads one short file a
    process, so the watch takes little of the cores it shares with the server."""

    def __init__(self, pid: int, every: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.done = pid, every, 0.0, threading.Event()
        self.page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20

    def run(self) -> None:
        pids, samples = processes(self.pid), 0
        while not self.done.wait(self.every):
            samples += 1
            if samples % 50 == 0:  # readers replaced now and then: look for them again each second
                pids = processes(self.pid)
            try:
                pages = sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) for p in pids)
            except (FileNotFoundError, ProcessLookupError):  # a reader replaced as it was read
                pids = processes(self.pid)
                continue
            self.peak = max(self.peak, pages * self.page_mib)

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory of the server and its readers now, and the sum of each one's peak (a bound
    of the peak of the whole), in MiB (Linux /proc)."""
    total, pids = {"VmRSS": 0.0, "VmHWM": 0.0}, processes(pid)
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in total:
                total[key] += int(value.split()[0]) / 1024
    return {"rss": round(total["VmRSS"], 1), "peak": round(total["VmHWM"], 1), "processes": len(pids)}


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time the server and each of its readers have used, user and system, all threads, by
    process (Linux /proc)."""
    used = {}
    for p in processes(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        used[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return used


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png16(width: int, height: int) -> bytes:
    """A worst-case upload for its size: 16-bit grayscale (2 bytes a pixel decoded, more converted),
    a dark bar on light paper, compressing to a few KB so it passes any upload limit."""
    from PIL import Image

    a = np.full((height, width), 60000, np.uint16)
    a[height // 4: 3 * height // 4, width // 2 - width // 20: width // 2 + width // 20] = 2000
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds none: a bomb's header, a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def hostile(url: str, port: int, deadline: float, worst: int, slow: int) -> dict:
    """Run the hostile clients until done or `deadline`; their figures."""
    import httpx

    big = png16(4160, 3120)  # 13 megapixels: the most the server admits
    bodies = [dict(content=big), dict(files={"file": ("big.png", big, "image/png")}),
              dict(content=png16(4000, 4000)),  # 16 megapixels: over the limit
              dict(content=png_header(20_000, 20_000)), dict(content=big[: len(big) // 2]),
              dict(content=bytes(range(256)) * 64), dict(content=big, headers={"content-type": "text/plain"}),
              dict(content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"})]
    garbage = [b"GARBAGE\r\n\r\n", b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
               b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n"]
    trickles = [b"", b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 200,
                b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 20000]
    statuses, health, closed, problems = [], [], [], []
    lock, stop = threading.Lock(), threading.Event()

    def upload(k: int) -> None:
        with httpx.Client(timeout=60) as c:
            for j in range(3):
                if time.monotonic() > deadline:
                    return
                try:
                    r = c.post(f"{url}/api/predict", **bodies[(k + j) % len(bodies)])
                    with lock:
                        statuses.append(r.status_code)
                except httpx.HTTPError as e:
                    with lock:
                        problems.append(f"upload: {type(e).__name__}: {e}")

    def raw(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(data)
            answer = s.recv(1024)
        with lock:
            statuses.append(int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0)

    def trickle(k: int) -> None:
        """Send a request a few bytes at a time, and note when the server closes the socket."""
        data, start = trickles[k % len(trickles)], time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                for i in range(0, max(len(data), 1), 16):
                    if time.monotonic() > deadline:
                        return
                    s.sendall(data[i:i + 16])
                    if stop.wait(0.25):  # a slow client's pace, not a wait for the server
                        return
                s.settimeout(120)
                while s.recv(4096):
                    pass
            except (ConnectionError, socket.timeout):
                pass
        with lock:
            closed.append(time.monotonic() - start)

    def monitor() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set() and time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    ok = c.get(f"{url}/api/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    health.append(time.perf_counter() - start)
                    if not ok:
                        problems.append("health did not answer 200")
                stop.wait(0.05)  # the monitor's polling interval

    threads = ([threading.Thread(target=upload, args=(k,)) for k in range(worst)]
               + [threading.Thread(target=raw, args=(g,)) for g in garbage * 2]
               + [threading.Thread(target=trickle, args=(k,)) for k in range(slow)])
    watcher = threading.Thread(target=monitor)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    ms = np.array(health or [0]) * 1000
    return {"hostile_requests": len(statuses), "hostile_5xx": sum(s >= 500 for s in statuses),
            "hostile_statuses": {str(k): statuses.count(k) for k in sorted(set(statuses))},
            "hostile_problems": problems[:5], "health_polls": len(health),
            "health_p99_ms": round(float(np.percentile(ms, 99)), 1), "health_max_ms": round(float(ms.max()), 1),
            "slow_sockets": slow, "slow_closed_max_s": round(max(closed, default=0), 2)}


class Connection:
    """One keep-alive HTTP/1.1 connection that posts prepared requests: the least a client can do
    per request (one send, one buffered read of the answer), so the clients, which share the
    machine's cores with the server, take as little of them as they can."""

    def __init__(self, port: int, timeout: float = 30):
        self.port, self.timeout, self.sock = port, timeout, None

    def post(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of one request; a connection closed by the server is opened again."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.reader = self.sock.makefile("rb")
        self.sock.sendall(request)
        status = self.reader.readline()
        if not status.startswith(b"HTTP/1.1 "):
            self.close()
            raise ConnectionError(f"no HTTP answer: {status[:60]!r}")
        length, close = 0, False
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"connection" and value.strip().lower() == b"close":
                close = True
        body = self.reader.read(length)
        if close:
            self.close()
        return int(status.split(b" ", 2)[1]), body

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = None


def upload_request(port: int, data: bytes, filename: str = "digit.jpg", kind: str = "image/jpeg") -> bytes:
    """POST /api/predict with `data` as the multipart field `file`, whole, ready to send."""
    boundary = b"lenet5loadtestboundary"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
            + filename.encode() + b"\"\r\nContent-Type: " + kind.encode() + b"\r\n\r\n" + data
            + b"\r\n--" + boundary + b"--\r\n")
    head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def wait_healthy(client, url: str, proc: subprocess.Popen, limit_s: float) -> None:
    import httpx

    deadline = time.monotonic() + limit_s
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} while starting")
        try:
            if client.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not answer /api/health within {limit_s:.0f} s")
        time.sleep(0.2)  # it is importing torch and loading the model


def measure(args: argparse.Namespace, ckpt: Path, bodies: list[tuple[bytes, int]], src: str) -> dict:
    """One load run against a fresh server serving the package in `src`; its figures."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "lenet5", "serve", str(ckpt), "--host", "127.0.0.1",
                             "--port", str(port), "--device", "cpu",
                             *(["--readers", str(args.readers)] if args.readers is not None else [])],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client() as c:
            wait_healthy(c, url, proc, 60)
            before = memory_mib(proc.pid)
        latencies: list[float] = []
        errors: list[str] = []
        correct = 0
        lock = threading.Lock()
        deadline = time.monotonic() + args.time_limit

        prepared = [upload_request(port, data) for data, _ in bodies]

        def client(k: int) -> None:
            nonlocal correct
            connection = Connection(port)
            h = httpx.Client(timeout=30) if args.client == "httpx" else None
            for j in range(args.requests):
                if time.monotonic() > deadline:
                    break
                i = (k * args.requests + j) % len(bodies)
                start = time.perf_counter()
                try:
                    if args.client == "socket":
                        status, text = connection.post(prepared[i])
                    else:
                        r = h.post(f"{url}/api/predict", files={"file": ("digit.jpg", bodies[i][0], "image/jpeg")})
                        status, text = r.status_code, r.content
                    digit = json.loads(text).get("digit", -1) if status == 200 else -1
                    problem = None if 0 <= digit <= 9 else f"HTTP {status}: {text[:100]!r}"
                except (httpx.HTTPError, OSError, ValueError) as e:
                    digit, problem = -1, f"{type(e).__name__}: {e}"
                    connection.close()
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)
                    elif digit == bodies[i][1]:
                        correct += 1
            connection.close()
            if h is not None:
                h.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        hostile_result = {}
        if args.hostile:
            threads.append(threading.Thread(target=lambda: hostile_result.update(
                hostile(url, port, deadline, args.worst, args.slow))))
        watch = MemoryWatch(proc.pid)
        watch.start()
        t0, server_cpu0, clients_cpu0 = time.perf_counter(), cpu_seconds(proc.pid), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        used, clients_cpu = cpu_seconds(proc.pid), time.process_time() - clients_cpu0
        server_cpu = sum(used.values()) - sum(server_cpu0.values())
        main_cpu = used[proc.pid] - server_cpu0[proc.pid]
        after, peak = memory_mib(proc.pid), watch.stop()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    ms = np.array(latencies) * 1000
    result = {
        "checkpoint": str(ckpt), "clients": args.clients, "requests": len(latencies),
        "planned": args.clients * args.requests, "errors": len(errors), "error_examples": errors[:5],
        "correct": correct, "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1),
        "requests_per_s": round(len(latencies) / wall, 1), "wall_s": round(wall, 2),
        # The clients share the machine: what each side spent, and what the server alone would serve.
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(len(latencies), 1), 2),
        "of_which_readers_ms_per_request": round(1000 * (server_cpu - main_cpu) / max(len(latencies), 1), 2),
        "clients_cpu_ms_per_request": round(1000 * clients_cpu / max(len(latencies), 1), 2),
        "server_alone_requests_per_s": round(os.cpu_count() * len(latencies) / max(server_cpu, 1e-9), 1),
        "client": args.client, "src": src, "readers": args.readers, "server_processes": after["processes"],
        "memory_mib": {"before": before["rss"], "after": after["rss"], "peak": round(peak, 1),
                       "sum_of_each_process_peak": after["peak"]},
        "cpus": os.cpu_count(), "python": sys.version.split()[0], **hostile_result,
        "_before": before, "_after": after,
    }
    return result


def report(result: dict, args: argparse.Namespace) -> None:
    before, after, memory = result.pop("_before"), result.pop("_after"), result["memory_mib"]
    print(f"{result['clients']} clients, {result['requests']}/{result['planned']} requests in "
          f"{result['wall_s']} s ({result['requests_per_s']}/s): {result['errors']} errors, "
          f"{result['correct']} read right; latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
          f"max {result['max_ms']} ms; server memory ({after['processes']} processes) {before['rss']} MiB "
          f"before, {after['rss']} MiB after, peak {memory['peak']} MiB (each process's own peaks add up "
          f"to {after['peak']} MiB)")
    print(f"CPU per request: server {result['server_cpu_ms_per_request']} ms (its readers "
          f"{result['of_which_readers_ms_per_request']} ms of it), clients "
          f"{result['clients_cpu_ms_per_request']} ms; the server alone on the {os.cpu_count()} CPUs: "
          f"{result['server_alone_requests_per_s']} requests/s")
    if args.hostile:
        print(f"hostile: {result['hostile_requests']} requests, {result['hostile_5xx']} 5xx "
              f"{result['hostile_statuses']}; /api/health p99 {result['health_p99_ms']} ms, max "
              f"{result['health_max_ms']} ms over {result['health_polls']} polls; {args.slow} slow "
              f"sockets closed within {result['slow_closed_max_s']} s; problems: {result['hostile_problems']}")


def failed(result: dict) -> bool:
    return bool(result["errors"] or result["requests"] < result["planned"] or result.get("hostile_5xx")
                or result.get("hostile_problems"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or run folder (default: newest run)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--requests", type=int, default=40, help="requests per client (default: 40)")
    p.add_argument("--time-limit", type=float, default=120, help="stop the load after this many "
                   "seconds, finished or not (default: 120)")
    p.add_argument("--client", choices=("socket", "httpx"), default="socket", help="socket: "
                   "each client a raw keep-alive connection sending prepared requests, the least CPU "
                   "a client can take from the cores it shares with the server; httpx: each an "
                   "httpx.Client building its requests (default: socket)")
    p.add_argument("--readers", type=int, help="the server's --readers (default: its own default)")
    p.add_argument("--src", default=str(ROOT / "src"), help="the folder holding the lenet5 package "
                   "to serve, e.g. another revision's worktree, to measure two side by side "
                   "(default: this checkout's src)")
    p.add_argument("--against", metavar="OTHER_SRC", help="also serve another revision's package "
                   "(a `git worktree`'s src/) and take the two in turn, --rounds times each: prints "
                   "each run and the throughput ratio of each round (this checkout's over the other's)")
    p.add_argument("--rounds", type=int, default=3, help="rounds with --against (default: 3)")
    p.add_argument("--hostile", action="store_true", help="add slow, worst-case and garbage "
                   "clients alongside the normal ones")
    p.add_argument("--worst", type=int, default=16, help="hostile upload clients, 3 uploads each "
                   "(default: 16)")
    p.add_argument("--slow", type=int, default=40, help="hostile slow sockets (default: 40)")
    p.add_argument("--images", type=int, default=100, help="distinct test digits sent (default: 100)")
    p.add_argument("--data-dir", default=str(ROOT / "data"), help="MNIST root (default: data)")
    p.add_argument("--out-dir", default="runs", help="where to look for the newest run (default: runs)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "load_web.json"),
                   help="JSON file to write (default: bench/results/load_web.json)")
    args = p.parse_args()

    ckpt = resolve(args.checkpoint, args.out_dir, shipped=True)  # no run: the shipped weights
    bodies = pictures(args.data_dir, args.images)
    if not args.against:
        result = measure(args, ckpt, bodies, args.src)
        report(result, args)
        runs = [result]
    else:
        runs, ratios = [], []
        for k in range(args.rounds):
            pair = {}
            for label, src in (("other", args.against), ("this", args.src)):
                print(f"round {k + 1}, {label} ({src}):")
                pair[label] = measure(args, ckpt, bodies, src)
                report(pair[label], args)
            ratios.append(pair["this"]["requests_per_s"] / pair["other"]["requests_per_s"])
            runs += [pair["other"], pair["this"]]
        print(f"throughput, this over the other, each round: {', '.join(f'{r:.2f}x' for r in ratios)}; "
              f"median {float(np.median(ratios)):.2f}x")
        result = {"rounds": runs, "ratios": [round(r, 3) for r in ratios],
                  "median_ratio": round(float(np.median(ratios)), 3)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if any(failed(r) for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
