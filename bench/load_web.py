"""Load test of `lenet5 serve`: concurrent clients against a server on 127.0.0.1, bounded in count and time.

The server runs as its own process (`python -m lenet5 serve`), so the memory figures are its own.
Each client posts MNIST test digits made into people's pictures (dark ink on white paper, larger,
off-centre, JPEG), so every request goes through the whole preprocessing. Reported: requests,
errors (anything but a 200 with a digit; must be 0), latency p50/p99, throughput, how many answers
match the true label, and the server's resident memory before the load, after it, and at its peak.

    python bench/load_web.py [CHECKPOINT] [--clients 16] [--requests 40] [--time-limit 120] [--hostile]

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


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (Linux /proc), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss": round(fields["VmRSS"], 1), "peak": round(fields["VmHWM"], 1)}


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used, user and system, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


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
    garbage = [b"GARBAGE\r\n\r\n", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
               b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"]
    trickles = [b"", b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 200,
                b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 20000]
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


def main() -> int:
    import httpx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or run folder (default: newest run)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--requests", type=int, default=40, help="requests per client (default: 40)")
    p.add_argument("--time-limit", type=float, default=120, help="stop the load after this many "
                   "seconds, finished or not (default: 120)")
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
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "lenet5", "serve", str(ckpt), "--host", "127.0.0.1",
                             "--port", str(port), "--device", "cpu"],
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

        def client(k: int) -> None:
            nonlocal correct
            with httpx.Client(timeout=30) as c:
                for j in range(args.requests):
                    if time.monotonic() > deadline:
                        return
                    data, label = bodies[(k * args.requests + j) % len(bodies)]
                    start = time.perf_counter()
                    try:
                        r = c.post(f"{url}/api/predict", files={"file": ("digit.jpg", data, "image/jpeg")})
                        ok = r.status_code == 200 and 0 <= r.json().get("digit", -1) <= 9
                        problem = None if ok else f"HTTP {r.status_code}: {r.text[:100]}"
                    except (httpx.HTTPError, ValueError) as e:
                        r, problem = None, f"{type(e).__name__}: {e}"
                    elapsed = time.perf_counter() - start
                    with lock:
                        latencies.append(elapsed)
                        if problem:
                            errors.append(problem)
                        elif r.json()["digit"] == label:
                            correct += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        hostile_result = {}
        if args.hostile:
            threads.append(threading.Thread(target=lambda: hostile_result.update(
                hostile(url, port, deadline, args.worst, args.slow))))
        t0, server_cpu0, clients_cpu0 = time.perf_counter(), cpu_seconds(proc.pid), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server_cpu, clients_cpu = cpu_seconds(proc.pid) - server_cpu0, time.process_time() - clients_cpu0
        after = memory_mib(proc.pid)
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
        "clients_cpu_ms_per_request": round(1000 * clients_cpu / max(len(latencies), 1), 2),
        "server_alone_requests_per_s": round(os.cpu_count() * len(latencies) / max(server_cpu, 1e-9), 1),
        "memory_mib": {"before": before["rss"], "after": after["rss"], "peak": after["peak"]},
        "cpus": os.cpu_count(), "python": sys.version.split()[0], **hostile_result,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['clients']} clients, {result['requests']}/{result['planned']} requests in "
          f"{result['wall_s']} s ({result['requests_per_s']}/s): {result['errors']} errors, "
          f"{correct} read right; latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
          f"max {result['max_ms']} ms; server memory {before['rss']} MiB before, {after['rss']} MiB "
          f"after (peak {after['peak']} MiB)")
    print(f"CPU per request: server {result['server_cpu_ms_per_request']} ms, clients "
          f"{result['clients_cpu_ms_per_request']} ms; the server alone on the {os.cpu_count()} CPUs: "
          f"{result['server_alone_requests_per_s']} requests/s")
    if args.hostile:
        print(f"hostile: {result['hostile_requests']} requests, {result['hostile_5xx']} 5xx "
              f"{result['hostile_statuses']}; /api/health p99 {result['health_p99_ms']} ms, max "
              f"{result['health_max_ms']} ms over {result['health_polls']} polls; {args.slow} slow "
              f"sockets closed within {result['slow_closed_max_s']} s; problems: {result['hostile_problems']}")
    print(f"wrote {out}")
    failed = errors or len(latencies) < result["planned"]
    return 1 if failed or result.get("hostile_5xx") or result.get("hostile_problems") else 0


if __name__ == "__main__":
    sys.exit(main())
