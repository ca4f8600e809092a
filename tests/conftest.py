"""Suite-wide settings."""

from __future__ import annotations

import os
import tempfile

# zflow caches clean YAML parses (zflow.spec.yamlpos); the suite, and every zflow process it
# starts, keeps its own cache instead of the user's ~/.cache/zflow
os.environ.setdefault("ZFLOW_CACHE_DIR", tempfile.mkdtemp(prefix="zflow-test-cache-"))
