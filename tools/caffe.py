#!/usr/bin/env python3
"""Thin entry point: `python tools/caffe.py ...` from a checkout, same as the installed `pipeline` command
(every command and tool: `python tools/caffe.py convert_imageset ...` works too)."""

import sys

from pipeline.commands import cli

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
