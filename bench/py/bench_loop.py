"""Python counterpart of bench/bench-loop.c: prefork_rps with multiprocessing.

The parent accepts each connection and hands the socket to a Pool worker
(multiprocessing pickles sockets by duplicating the fd through its resource
sharer), which answers with its pid -- the same design as examples/s16.
"""
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import threading

from benchlib import quick, report


def serve(conn):
    with conn:
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = conn.recv(4096)
            if not chunk:
                return
            req += chunk
        body = f"served by pid {os.getpid()}\n".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(body), body))


def accept_loop(lsock, pool, stop):
    lsock.settimeout(0.1)
    while not stop.is_set():
        try:
            conn, _ = lsock.accept()
        except socket.timeout:
            continue
        # The socket is pickled later, on the pool's task thread: close the
        # parent's copy only once the worker is done with it.
        done = lambda _r, c=conn: c.close()
        pool.apply_async(serve, (conn,), callback=done, error_callback=done)


def wrk(port, secs, conns=32):
    out = subprocess.run(["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{secs}", "--timeout", "10s",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    return float(m.group(1)) if m else 0.0


def main():
    if shutil.which("wrk") is None:
        print("# prefork_rps (python): wrk not installed: skipped")
        return
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    port = lsock.getsockname()[1]
    with mp.Pool() as pool:
        stop = threading.Event()
        t = threading.Thread(target=accept_loop, args=(lsock, pool, stop))
        t.start()
        reps, secs = (1, "1s") if quick() else (5, "2s")
        values = [wrk(port, secs) for _ in range(reps)]
        # The prefork_conns curve, as bench-loop.c: one 1 s run per point.
        for conns in [1] if quick() else [1, 4, 16, 64, 256, 512]:
            print(f"CURVE prefork_conns python {conns} {wrk(port, '1s', conns):.6g}", flush=True)
        stop.set()
        t.join()
    lsock.close()
    report("prefork_rps", values, "req/s")


if __name__ == "__main__":
    main()
