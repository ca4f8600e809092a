"""`python -m zflow.runtime.replica`: run one replica (ZFLOW_SPEC and ZFLOW_CONTROL set)."""

import sys

from zflow.runtime.replica.main import main

if __name__ == "__main__":
    sys.exit(main())
