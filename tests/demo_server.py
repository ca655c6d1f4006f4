"""The demo server on loopback for the Python tests (standard library only): generate the demo bank
into a temporary folder, start `kpilens demo` on a free port, wait until it serves."""

import os
import re
import shutil
import subprocess
import tempfile
import threading

BIN = os.environ.get("KPILENS_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/kpilens-target")), "debug", "kpilens"
)


def start_demo(prefix, *args, project="."):
    """(the server process, its port, the temporary folder: demo/ holds the data, audit.log the audit).
    With `project=None` the repository's definitions are copied to project/ in that folder, for a
    test that writes into them."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    if project is None:
        project = os.path.join(tmp, "project")
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        for part in ("metrics", "sql", "dashboards"):
            shutil.copytree(os.path.join(here, part), os.path.join(project, part))
    subprocess.run([BIN, "generate", "--out", f"{tmp}/demo"], check=True, stdout=subprocess.DEVNULL)
    server = subprocess.Popen(
        [BIN, "demo", "--addr", "127.0.0.1:0", "--project", project, "--data", f"{tmp}/demo",
         "--audit-log", f"{tmp}/audit.log", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    port = None
    for line in server.stdout:
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if m and "serving" in line:
            port = int(m.group(1))
            break
    if port is None:
        server.kill()
        raise AssertionError("the server did not start")
    # Keep reading its output, so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    return server, port, tmp
