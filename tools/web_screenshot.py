#!/usr/bin/env python3
"""Screenshot of the browser page (target/web, served) once a run has finished: README's
assets/web.png. Headless Chromium takes --screenshot at load, before any training, so this
drives it over the DevTools protocol and waits for body[data-test-accuracy].

    pip install websocket-client
    python3 -m http.server -d target/web 8765 &
    python3 tools/web_screenshot.py "http://localhost:8765/index.html?model=mlp&epochs=1&autostart=1" assets/web.png
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


def main(url, out, width=1100, height=1640, limit=600):
    profile = tempfile.mkdtemp(prefix="wgpu-fmnist-shot-")
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu",
         "--hide-scrollbars", f"--window-size={width},{height}", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        for _ in range(100):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
        page = next(t for t in targets if t["type"] == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=limit)
        ids = iter(range(1, 1 << 30))

        def call(method, **params):
            i = next(ids)
            ws.send(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                m = json.loads(ws.recv())
                if m.get("id") == i:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m["result"]

        call("Page.navigate", url=url)
        start = time.time()
        while time.time() - start < limit:
            r = call("Runtime.evaluate", expression=
                     "[document.body.dataset.testAccuracy, document.body.dataset.error]",
                     returnByValue=True)
            done, error = (r["result"].get("value") or [None, None])
            if error:
                sys.exit(f"the page failed: {error}")
            if done:
                break
            time.sleep(0.5)
        else:
            sys.exit(f"no result after {limit} s")
        time.sleep(0.5)  # the last drawing
        shot = call("Page.captureScreenshot", format="png")
        import base64
        with open(out + ".tmp", "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        os.replace(out + ".tmp", out)
        print(f"{out}: test accuracy {done}")
    finally:
        os.killpg(browser.pid, 9)
        browser.wait()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
