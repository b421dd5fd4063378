"""Agents: plain functions and classes that do one stage's work (split, generate, validate, curate).

They never import LangGraph; `doctune.graph` wires them into the state machine.
"""
