"""Thin command-line interfaces: parse, build, call the library, render, map errors to exit codes."""
