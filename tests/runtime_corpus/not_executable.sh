#!/bin/sh
# runtime corpus: deliberately NOT executable (mode 0644); see command_not_executable.yaml
exit 0
