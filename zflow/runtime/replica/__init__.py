"""The process of one replica: what runs inside every Python replica zflow starts.

The supervisor side (supervisor.py and friends) starts replicas and talks to them over the control
plane (protocol.py); this package is the other end. Nothing is imported here, so that the
import-check child (target.py) stays light.

  main          bootstrap: the start-up barrier, running, reporting failures, exit code
  core          Node: the state of one running replica
  control       the control-plane client: dispatch of supervisor messages, probes, telemetry
  sockets       building sockets from the spec; Inbox
  runners       the shapes: source, stream (transform/sink), service, custom
  exactly_once  ids, acks, a sink's memory of what it processed, the exactly-once source
  on_error      fail / skip / dead-letter for records that cannot be processed
  socketio      the custom-node API behind NodeContext.send/recv/request/proxy
  target        resolving the `run:` target, checking its params; the import check's child
  errors        Stop, DecodeError, NodeFailure
"""
