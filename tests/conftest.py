"""Suite-wide settings."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# zflow caches clean YAML parses (zflow.spec.yamlpos); the suite, and every zflow process it
# starts, keeps its own cache instead of the user's ~/.cache/zflow, removed when pytest exits
if "ZFLOW_CACHE_DIR" not in os.environ:
    os.environ["ZFLOW_CACHE_DIR"] = _cache = tempfile.mkdtemp(prefix="pytest-zflow-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
