"""`codeyard/api/exec`: run a command in the workspace with live output (docs/exec.md).

`runs.ExecManager` starts, streams, stops and records runs; `output.RunOutput` decides what
of the output is streamed and kept; `handlers` is the HTTP face.
"""
