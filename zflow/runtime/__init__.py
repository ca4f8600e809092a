"""Running a plan: the supervisor, the node process, codecs and the control protocol."""
