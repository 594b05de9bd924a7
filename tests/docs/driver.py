"""Runs one Markdown file's blocks in order, as a reader would: ``python driver.py BLOCKS.json``.

Standard library only, run as a script by tests/docs/test_blocks.py in a fresh process whose
working directory is a temporary one. Python blocks share one namespace (a file is read top
to bottom); shell blocks each run in a new ``bash -e -o pipefail``, with the environment
the test set (``TENSORINIT_URL``, a ``CURL_HOME`` whose .curlrc makes curl fail on an HTTP
error). Stops at the first failing block, naming it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from pathlib import Path


def main(path: str) -> int:
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in json.loads(Path(path).read_text(encoding="utf-8")):
        file, line, lang, code = block["file"], block["line"], block["lang"], block["code"]
        where = f"{file}:{line}"
        print(f"--- {where} ({lang})", flush=True)
        start = time.perf_counter()
        if lang == "python":
            try:
                exec(compile("\n" * line + code, file, "exec"), namespace)  # tracebacks give the file's own lines
            except BaseException:
                traceback.print_exc()
                print(f"FAILED: the python block at {where}", flush=True)
                return 1
            sys.stdout.flush()
        else:
            status = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], check=False).returncode
            if status:
                print(f"FAILED: the {lang} block at {where} exited {status}", flush=True)
                return 1
        print(f"--- {where}: {time.perf_counter() - start:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
