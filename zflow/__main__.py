from zflow.cli import entry

entry()
